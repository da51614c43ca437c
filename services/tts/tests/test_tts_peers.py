"""TTS workers hand a dead peer's requests back to the stream at once.

A worker says which stored requests it takes (``subjects.tts_held``: their ack
subjects); a peer that finds it gone (``tts_alive``: no responders) NAKs them,
so they are delivered again now instead of after the consumer's ack wait
(issue 10: the next turn within 2 s of a kill). Its own module, so its
nats-server's TTS consumer is made here, with an ack wait far longer than the
test: only the hand-back can bring the requests back in time.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

from tts_harness import Harness, Seen, alive, check_chunk, synthesize

from parley import bus, subjects
from parley.natsd import free_port
from parley_tts.adapters.canned import Canned
from parley_tts.settings import Settings
from parley_tts.worker import Worker

RATE = 22050
LONG = " ".join(["This sentence goes on for quite a while so that the canned voice talks for a long time."] * 3)
SECOND = "Your appointment is on Friday at ten."


def _kill_the_doomed(nats_url: str, survivors: list[str]):
    """A worker process ("tts-doomed") takes two requests while the
    ``survivors`` (in-process workers) listen and take nothing; it is killed
    with SIGKILL, then they pull. Returns them, and the audio of each chunk
    that came after the kill."""
    port = free_port()
    env = dict(
        os.environ, NATS_URL=nats_url, PARLEY_PROVIDERS="fixed", PARLEY_HTTP_PORT=str(port), PARLEY_TTS_WORKER_ID="tts-doomed",
        PARLEY_TTS_FIXED_MS_PER_CHAR="60",
    )  # fmt: skip

    async def main():
        async with Harness(nats_url) as h:
            nc = await h.client()
            # The survivors listen from the start but take nothing yet, so the doomed worker takes both requests.
            workers = []
            for name in survivors:
                w = Worker(await h.client(), Settings(nats_url=nats_url, worker_id=name), Canned.load(first_audio_ms=0, ms_per_char=2, min_ms=20))
                w.room.clear()
                await w.start()
                h.workers.append(w)
                workers.append(w)
            proc = subprocess.Popen([sys.executable, "-m", "parley_tts"], env=env, stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                await alive(nc, "tts-doomed", proc)  # answers once it pulls
                seen = await Seen.watch(nc, "fx-peer")
                await synthesize(nc, "fx-peer", 1, 0, LONG)  # seconds of audio, paced
                await synthesize(nc, "fx-peer", 1, 1, SECOND)  # queued behind it
                await seen.wait_for(lambda s: len(s.audio("fx-peer", 1, 0)) >= 2)
                deadline = time.monotonic() + 10
                while any(len(w.peer_held.get("tts-doomed", ())) < 2 for w in workers):
                    assert time.monotonic() < deadline, "a survivor never heard what the doomed worker holds"
                    await asyncio.sleep(0.05)
                os.killpg(proc.pid, 9)
                proc.wait()
                killed = time.monotonic()
                for w in workers:
                    w.room.set()  # now they pull
                await seen.chunks_done("fx-peer", 1, 2, timeout=30)
                await asyncio.sleep(0.5)  # a request handed back twice would be said again by now
                again = {c: [a for a in seen.audio("fx-peer", 1, c) if a.t > killed] for c in (0, 1)}
                return workers, again
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, 9)

    return asyncio.run(main())


def test_a_killed_workers_requests_are_handed_back_by_its_peer_before_the_ack_wait(nats_url, monkeypatch):
    monkeypatch.setattr(bus, "TTS_ACK_WAIT_S", 120.0)  # the consumer is made with it, by the first worker
    (survivor,), again = _kill_the_doomed(nats_url, ["tts-survivor"])
    assert survivor.stats["peers_gone"] == 1
    assert survivor.stats["peer_requests_handed_back"] == 2
    assert survivor.stats["redelivered"] == 2, "both came back long before the 120 s ack wait"
    for c in (0, 1):
        check_chunk(again[c], RATE)  # said whole by the survivor


def test_of_two_survivors_one_hands_the_requests_back_even_when_the_other_never_took_one(nats_url, monkeypatch):
    """Only the live worker with the lowest id hands a dead peer's requests
    back: a -NAK on a delivery already handed back redelivers the request
    again (nats-server 2.15), so two survivors both doing it had it said
    twice more. Neither survivor here ever took a request, so each knows the
    other only because workers say they are there (an empty tts_held)."""
    monkeypatch.setattr(bus, "TTS_ACK_WAIT_S", 120.0)
    survivors, again = _kill_the_doomed(nats_url, ["tts-b", "tts-a"])
    assert [w.stats["peers_gone"] for w in survivors] == [1, 1]
    assert [w.stats["peer_requests_handed_back"] for w in survivors] == [0, 2]  # tts-a, the lowest id, alone
    assert sum(w.stats["redelivered"] for w in survivors) == 2, "each request came back once"
    for c in (0, 1):
        check_chunk(again[c], RATE)
