"""/ws/pcm at the transport: flush stops a run within a frame, pause and
resume lose nothing, late audio of a flushed run is dropped and counted.

The gateway runs in-process on a real nats-server; the test plays the other
services on the bus (see test_webrtc_gateway.gateway).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import numpy as np
import websockets

from parley import contract

from test_webrtc_gateway import announce, command, gateway, pcm_url, publish_tts, tone, until

FRAME_BYTES = 640  # 20 ms of PCM16 at 16 kHz


class PcmClient:
    def __init__(self):
        self.frames: list[tuple[float, bytes]] = []
        self.notices: list[dict] = []

    async def run(self, url: str) -> None:
        async with websockets.connect(url) as ws:
            self.ws = ws
            async for msg in ws:
                if isinstance(msg, bytes):
                    self.frames.append((time.monotonic(), msg))
                else:
                    self.notices.append(json.loads(msg))

    @property
    def session(self) -> str | None:
        return next((n["session"] for n in self.notices if n["type"] == "session"), None)


@contextlib.asynccontextmanager
async def pcm_call(base: str):
    """A /ws/pcm caller on the gateway at ``base``, its session known; it
    hangs up when the block ends."""
    client = PcmClient()
    task = asyncio.create_task(client.run(await pcm_url(base)))
    try:
        await until(lambda: client.session, what="session")
        yield client
    finally:
        task.cancel()


def test_flush_stops_the_run_within_a_frame_and_late_audio_is_dropped(nats_server):
    async def scenario():
        async with gateway(nats_server.url) as (base, state, nc, seen), pcm_call(base) as client:
            s = client.session
            await publish_tts(nc, s, run=3, pcm=tone(440, 5.0, 22050), rate=22050)
            await until(lambda: len(client.frames) >= 25, what="half a second of the answer")
            await command(nc, s, contract.FlushPlayback(session=s, run=3))
            await until(lambda: state["stats"].get("frames_flushed", 0) > 0, what="the flush")
            flushed_at, n_at_flush = time.monotonic(), len(client.frames)
            await publish_tts(nc, s, run=3, pcm=tone(440, 1.0, 22050), rate=22050, chunk=1)
            await asyncio.sleep(0.6)
            after_flush = len(client.frames) - n_at_flush
            # A new run plays as usual.
            await publish_tts(nc, s, run=4, pcm=tone(660, 0.5, 22050), rate=22050)
            await asyncio.sleep(0.9)
            return state["stats"], after_flush, client, flushed_at

    stats, after_flush, client, flushed_at = asyncio.run(scenario())
    assert after_flush <= 1, f"{after_flush} frames of the flushed run left after the flush"
    assert stats["frames_flushed"] > 150  # most of the 5 s was still queued
    assert stats.get("frames_dropped_stale", 0) >= 1  # the late chunk
    new_run = [f for t, f in client.frames if t > flushed_at + 0.6]
    assert 20 <= len(new_run) <= 30 and all(len(f) == FRAME_BYTES for f in new_run)


def test_pause_holds_tells_the_client_and_resume_loses_nothing(nats_server):
    async def scenario():
        async with gateway(nats_server.url) as (base, state, nc, seen), pcm_call(base) as client:
            s = client.session
            await publish_tts(nc, s, run=5, pcm=tone(500, 1.0, 16000), rate=16000)
            await until(lambda: len(client.frames) >= 10, what="the answer")
            await command(nc, s, contract.PausePlayback(session=s, run=5))
            await asyncio.sleep(0.1)
            held = len(client.frames)
            await asyncio.sleep(0.5)
            during_pause = len(client.frames) - held
            await command(nc, s, contract.ResumePlayback(session=s, run=5))
            await asyncio.sleep(1.3)
            return client, during_pause

    client, during_pause = asyncio.run(scenario())
    assert during_pause == 0
    audio = np.frombuffer(b"".join(f for _, f in client.frames), dtype="<i2")
    voiced = np.count_nonzero(np.abs(audio) > 100)
    assert len(client.frames) == 50  # exactly 1 s of 20 ms frames: none lost, none doubled
    assert voiced > 0.9 * 16000
    # The client was told at once, to hold its own buffer, and to play on.
    assert [n for n in client.notices if n["type"] in ("pause", "resume")] == [{"type": "pause", "run": 5}, {"type": "resume", "run": 5}]


def ramp(n: int, start: int = 1) -> bytes:
    """PCM16 whose every sample says where it is in the answer (1, 2, 3, ... wrapping below 30000)."""
    return ((np.arange(start, start + n) - 1) % 29999 + 1).astype("<i2").tobytes()


def test_a_client_that_drops_its_buffer_at_a_pause_hears_the_answer_again_from_where_it_stopped(nats_server):
    """The client says it answers pauses; at the pause it drops the last 100 ms
    it had (unplayed) and says so: the gateway takes them back, the resume
    plays on from exactly there, and the two chunks' reports say the first
    one's end (in the dropped part) was not heard when it was first counted."""

    async def scenario():
        async with gateway(nats_server.url) as (base, state, nc, seen), pcm_call(base) as client:
            s = client.session
            await client.ws.send(json.dumps({"type": "hello", "answers_pause": True}))
            await announce(nc, s, 7, [0, 1])
            await publish_tts(nc, s, run=7, pcm=ramp(16000 * 6 // 10), rate=16000, chunk=0, announced=True)  # 0.6 s
            await publish_tts(nc, s, run=7, pcm=ramp(16000, start=9601), rate=16000, chunk=1, announced=True)  # 1 s
            await until(lambda: len(client.frames) >= 33, what="chunk 1 to begin")
            await command(nc, s, contract.PausePlayback(session=s, run=7))
            await until(lambda: any(n["type"] == "pause" for n in client.notices), what="the pause notice")
            at_pause = len(client.frames)
            sent_ms = at_pause * 20
            await client.ws.send(json.dumps({"type": "paused", "run": 7, "unplayed_ms": sent_ms - 560}))  # it played 560 ms
            await command(nc, s, contract.ResumePlayback(session=s, run=7))
            await until(lambda: sum(1 for e in seen["events"] if isinstance(e, contract.PlaybackProgress) and e.finished and e.chunk == 1), what="the end")
            await asyncio.sleep(0.1)
            progress = [(e.chunk, e.finished, e.played_ms) for e in seen["events"] if isinstance(e, contract.PlaybackProgress)]
            return client, at_pause, progress, dict(state["stats"])

    client, at_pause, progress, stats = asyncio.run(scenario())
    before = np.frombuffer(b"".join(f for _, f in client.frames[:at_pause]), dtype="<i2")
    after = np.frombuffer(b"".join(f for _, f in client.frames[at_pause:]), dtype="<i2")
    heard = np.concatenate([before[: 560 * 16], after])
    heard = heard[heard != 0]  # the padding after chunk 0's last frame
    assert np.array_equal(heard, np.frombuffer(ramp(16000 * 16 // 10), dtype="<i2")), "the resume did not go on from what the client played"
    assert stats["playback_rewinds"] == 1 and stats["playback_rewound_ms"] == at_pause * 20 - 560
    # Chunk 0 was reported finished as it left; the client had played only 560 of its 600 ms: taken back, then finished again.
    assert progress[:2] == [(0, False, 20), (0, True, 600)]
    assert (0, False, 560) in progress
    assert progress.index((0, False, 560)) < len(progress) - 1 - progress[::-1].index((0, True, 600))
    assert progress[-1] == (1, True, 1000)


def test_a_pause_that_comes_just_after_a_run_s_first_frame_left_loses_nothing_and_nothing_is_heard_twice(nats_server):
    """barge5 OPEN 4: the run's first audio and the reducer's pause reach the
    gateway at the same moment on two subscriptions, and a frame leaves before
    the pause is executed. The client had not played it (its 30-40 ms lead):
    it drops it and says so, and the resume plays the run from its first sample."""

    async def scenario():
        async with gateway(nats_server.url) as (base, state, nc, seen), pcm_call(base) as client:
            s = client.session
            await client.ws.send(json.dumps({"type": "hello", "answers_pause": True}))
            await publish_tts(nc, s, run=9, pcm=ramp(8000), rate=16000)
            await until(lambda: client.frames, what="the first frame")
            await command(nc, s, contract.PausePlayback(session=s, run=9))
            await until(lambda: any(n["type"] == "pause" for n in client.notices), what="the pause notice")
            at_pause = len(client.frames)
            await client.ws.send(json.dumps({"type": "paused", "run": 9, "unplayed_ms": at_pause * 20}))  # none of it played
            await asyncio.sleep(0.3)
            await command(nc, s, contract.ResumePlayback(session=s, run=9))
            await until(lambda: any(isinstance(e, contract.PlaybackProgress) and e.finished for e in seen["events"]), what="the end")
            return client, at_pause

    client, at_pause = asyncio.run(scenario())
    again = np.frombuffer(b"".join(f for _, f in client.frames[at_pause:]), dtype="<i2")
    assert np.array_equal(again[again != 0], np.frombuffer(ramp(8000), dtype="<i2"))  # all of it, from its first sample, once


def test_a_pause_answer_that_is_malformed_or_not_due_changes_nothing(nats_server):
    async def scenario():
        async with gateway(nats_server.url) as (base, state, nc, seen), pcm_call(base) as client:
            s = client.session
            await client.ws.send(json.dumps({"type": "paused", "run": 7, "unplayed_ms": "a lot"}))
            await client.ws.send(json.dumps({"type": "paused", "run": 7, "unplayed_ms": 100}))  # no pause was told
            await publish_tts(nc, s, run=8, pcm=ramp(8000), rate=16000)
            await until(lambda: len(client.frames) >= 25, what="the answer")
            return client, dict(state["stats"])

    client, stats = asyncio.run(scenario())
    assert [n["error"] for n in client.notices if n["type"] == "error"] == ["paused needs an integer 'run' and 'unplayed_ms' (0-60000)"]
    assert stats["pause_answers_ignored"] == 1 and "playback_rewinds" not in stats
    audio = np.frombuffer(b"".join(f for _, f in client.frames), dtype="<i2")
    assert np.array_equal(audio[audio != 0], np.frombuffer(ramp(8000), dtype="<i2"))


def test_a_run_paused_before_any_of_it_played_tells_the_client_nothing(nats_server):
    """A held answer (paused before its audio, released later) was never in the
    client's buffer: no pause, no resume for it."""

    async def scenario():
        async with gateway(nats_server.url) as (base, state, nc, seen), pcm_call(base) as client:
            s = client.session
            await command(nc, s, contract.PausePlayback(session=s, run=6))
            await nc.flush()
            await asyncio.sleep(0.3)  # the pause and the audio come on different subjects: the pause first, for sure
            await publish_tts(nc, s, run=6, pcm=tone(500, 0.4, 16000), rate=16000)
            await asyncio.sleep(0.3)
            await command(nc, s, contract.ResumePlayback(session=s, run=6))
            await until(lambda: len(client.frames) >= 20, what="the released answer")
            return client

    client = asyncio.run(scenario())
    assert not [n for n in client.notices if n["type"] in ("pause", "resume")]


def test_a_client_that_stops_reading_is_told_why_and_its_session_ends(nats_server, monkeypatch):
    """The client stops reading while the agent talks: the gateway's socket
    backs up, and instead of dropping the transport quietly while the call goes
    on, it sends an error and closes (1008), counts it, and ends the session."""
    import socket

    from parley_gateway import ws_pcm

    monkeypatch.setattr(ws_pcm, "BACKLOG_FRAMES", 25)

    async def scenario():
        async with gateway(nats_server.url) as (base, state, nc, seen):
            url = await pcm_url(base)
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", int(url.split(":")[2].split("/")[0])))
            sock.setblocking(False)
            ws = await websockets.connect(url, sock=sock, compression=None, max_queue=1)
            session = json.loads(await ws.recv())["session"]
            for proto in list(seen["server"].server_state.connections):  # loopback buffers megabytes otherwise
                if getattr(proto, "transport", None) is not None and proto.transport.get_extra_info("socket") is not None:
                    proto.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            await publish_tts(nc, session, run=1, pcm=tone(440, 30.0, 16000), rate=16000)
            # The client reads nothing from here on...
            await until(lambda: state["stats"].get("pcm_error_backlog", 0) >= 1, timeout=30, what="the backlog failure")
            # ...until it looks again: what was queued, then the reason, then the close.
            notices = []
            try:
                async for msg in ws:
                    if isinstance(msg, str):
                        notices.append(json.loads(msg))
            except websockets.ConnectionClosed:
                pass
            await until(lambda: any(isinstance(e, contract.SessionEnded) and e.session == session for e in seen["events"]), what="SessionEnded")
            ended = next(e for e in seen["events"] if isinstance(e, contract.SessionEnded) and e.session == session)
            return notices, ws.close_code, ended, state["stats"]

    notices, code, ended, stats = asyncio.run(scenario())
    assert stats["pcm_error_backlog"] == 1
    assert ended.reason.startswith("error: the client is not reading"), ended.reason
    errors = [n["error"] for n in notices if n["type"] == "error"]
    assert errors and "not reading" in errors[0], notices[-3:]
    assert code == 1008


def test_keys_cannot_be_pressed_on_a_browser_call_and_the_reducer_is_told(nats_server):
    async def scenario():
        async with gateway(nats_server.url) as (base, state, nc, seen), pcm_call(base) as client:
            s = client.session
            await command(nc, s, contract.SendDigits(session=s, digits="1", call_id="k1", run=2))
            await until(lambda: any(isinstance(e, contract.DigitsSent) for e in seen["events"]), what="DigitsSent")
            return [e for e in seen["events"] if isinstance(e, contract.DigitsSent)], state["stats"]

    sent, stats = asyncio.run(scenario())
    assert [(e.call_id, e.ok) for e in sent] == [("k1", False)] and "phone calls" in sent[0].error
    assert stats["digits_unsupported"] == 1


def test_a_resume_waits_for_the_client_s_answer_and_not_longer_than_its_patience(nats_server, monkeypatch):
    from parley_gateway import call as call_module

    monkeypatch.setattr(call_module, "ANSWER_WAIT_S", 0.5)

    async def scenario():
        async with gateway(nats_server.url) as (base, state, nc, seen), pcm_call(base) as client:
            s = client.session
            await client.ws.send(json.dumps({"type": "hello", "answers_pause": True}))
            await publish_tts(nc, s, run=11, pcm=ramp(16000 * 3), rate=16000)
            await until(lambda: len(client.frames) >= 10, what="the answer")
            # 1: the resume comes before the answer: it waits for it.
            await command(nc, s, contract.PausePlayback(session=s, run=11))
            await until(lambda: any(n["type"] == "pause" for n in client.notices), what="the pause")
            await command(nc, s, contract.ResumePlayback(session=s, run=11))
            await asyncio.sleep(0.2)
            waited = not any(n["type"] == "resume" for n in client.notices)
            await client.ws.send(json.dumps({"type": "paused", "run": 11, "unplayed_ms": 40}))
            await until(lambda: any(n["type"] == "resume" for n in client.notices), what="the resume after the answer")
            await asyncio.sleep(0.3)
            # 2: no answer comes: resumed once the patience is over, counted.
            await command(nc, s, contract.PausePlayback(session=s, run=11))
            await until(lambda: sum(n["type"] == "pause" for n in client.notices) == 2, what="the second pause")
            await command(nc, s, contract.ResumePlayback(session=s, run=11))
            await until(lambda: sum(n["type"] == "resume" for n in client.notices) == 2, timeout=3, what="the second resume")
            return waited, dict(state["stats"])

    waited, stats = asyncio.run(scenario())
    assert waited and stats["playback_rewinds"] == 1 and stats["pause_answers_missing"] == 1
