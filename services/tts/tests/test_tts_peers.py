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


def test_a_killed_workers_requests_are_handed_back_by_its_peer_before_the_ack_wait(nats_url, monkeypatch):
    monkeypatch.setattr(bus, "TTS_ACK_WAIT_S", 120.0)  # the consumer is made with it, by the first worker below
    port = free_port()
    env = dict(
        os.environ, NATS_URL=nats_url, PARLEY_PROVIDERS="fixed", PARLEY_HTTP_PORT=str(port), PARLEY_TTS_WORKER_ID="tts-doomed",
        PARLEY_TTS_FIXED_MS_PER_CHAR="60",
    )  # fmt: skip

    async def main():
        async with Harness(nats_url) as h:
            nc = await h.client()
            # The survivor listens from the start but takes nothing yet, so the doomed worker takes both requests.
            survivor = Worker(await h.client(), Settings(nats_url=nats_url, worker_id="tts-survivor"), Canned.load(first_audio_ms=0, ms_per_char=2, min_ms=20))
            survivor.room.clear()
            await survivor.start()
            h.workers.append(survivor)
            proc = subprocess.Popen([sys.executable, "-m", "parley_tts"], env=env, stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                await alive(nc, "tts-doomed", proc)  # answers once it pulls
                seen = await Seen.watch(nc, "fx-peer")
                await synthesize(nc, "fx-peer", 1, 0, LONG)  # seconds of audio, paced
                await synthesize(nc, "fx-peer", 1, 1, SECOND)  # queued behind it
                await seen.wait_for(lambda s: len(s.audio("fx-peer", 1, 0)) >= 2)
                deadline = time.monotonic() + 10
                while len(survivor.peer_held.get("tts-doomed", ())) < 2:
                    assert time.monotonic() < deadline, "the survivor never heard what the doomed worker holds"
                    await asyncio.sleep(0.05)
                os.killpg(proc.pid, 9)
                proc.wait()
                killed = time.monotonic()
                survivor.room.set()  # now it pulls
                await seen.chunks_done("fx-peer", 1, 2, timeout=30)
                again = {c: [a for a in seen.audio("fx-peer", 1, c) if a.t > killed] for c in (0, 1)}
                return survivor, again
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, 9)

    survivor, again = asyncio.run(main())
    assert survivor.stats["peers_gone"] == 1
    assert survivor.stats["peer_requests_handed_back"] == 2
    assert survivor.stats["redelivered"] == 2, "both came back long before the 120 s ack wait"
    for c in (0, 1):
        check_chunk(again[c], RATE)  # said whole by the survivor
