"""The caller's audio never overtakes the news of what they heard.

Events of different producers are stored in the order they reach the event
stream. While the stream has no leader (its NATS node killed: seconds of
RAFT election), every producer retries on its own, so after the election the
ASR's "the caller speaks" could be stored before the gateway's "the caller
heard the answer", although the caller spoke because they heard it: the
reducer would then take back an answer that was heard. The gateway holds the
caller's audio back until its playback reports are stored. Real nats-server;
the test answers the ASR claim as a worker would (contract.AsrClaimed) and
listens on the session's audio subject as the worker does.
"""

from __future__ import annotations

import asyncio
import functools

from parley import bus, contract, subjects, telemetry
from parley_gateway import call as call_module
from parley_gateway.call import Call, Switchboard


class Transport:
    kind = "twilio"
    rate = 8000
    reports_playback = True
    native = "mulaw/8000"  # a worker (Deepgram's) may want the carrier's audio as it came

    async def send_notice(self, notice: dict) -> None:
        pass

    def on_pause(self, run: int) -> None:
        pass

    def on_resume(self, run: int) -> None:
        pass

    async def on_flush(self, run: int) -> None:
        pass

    async def close(self, reason: str) -> None:
        pass

    def fail(self, reason: str, kind: str) -> None:
        pass


def frame(i: int) -> bytes:
    return bytes([i % 256]) * 640


def test_audio_waits_for_the_playback_report_before_it_and_then_goes_in_order(nats_server, monkeypatch):
    real = bus.publish_event
    stream_back = asyncio.Event()
    stored: list[str] = []

    async def leaderless(nc, event, *args, **kw):
        if isinstance(event, contract.PlaybackProgress):
            await stream_back.wait()
        await real(nc, event, *args, **kw)
        stored.append(type(event).__name__)

    monkeypatch.setattr(bus, "publish_event", leaderless)

    async def scenario():
        nc = await bus.connect(nats_server.url)
        heard: list[tuple[int, bytes]] = []  # (seq, pcm) as the ASR worker gets it
        native: list[tuple[int, bytes]] = []  # and the carrier's copy

        async def claim(msg):
            c = contract.decode(msg.data, contract.AsrClaim)
            await msg.respond(contract.encode(contract.AsrClaimed(session=c.session, worker="w1", native=c.native)))

        async def alive(msg):
            await msg.respond(contract.encode(contract.AsrProgress(session=msg.data.decode(), next_utterance=0, unfinished=-1)))

        await nc.subscribe(subjects.ASR_CLAIM, cb=claim)
        await nc.subscribe(subjects.asr_alive("w1"), cb=alive)
        call = Call(Switchboard(nc, {}, telemetry.current()), Transport(), session="twilio-causal")
        await nc.subscribe(subjects.audio_in(call.session), cb=functools.partial(_got, heard))
        await nc.subscribe(subjects.audio_native(call.session), cb=functools.partial(_got, native))

        async def feed(i: int) -> None:
            await call.feed_native(frame(i)[:160])
            await call.feed(frame(i))
        await call.start()
        try:
            for i in range(3):
                await feed(i)  # nothing to wait for: sent at once
            await nc.flush()
            await asyncio.sleep(0.1)
            before = len(heard)
            call.heard(run=1, chunk=0, finished=True, played_ms=900)  # the caller heard the answer...
            for i in range(3, 10):
                await feed(i)  # ...and talks: held until the report is stored
            await nc.flush()
            await asyncio.sleep(0.3)
            while_leaderless = len(heard), len(native)
            stream_back.set()
            for _ in range(100):
                if len(heard) >= 10:
                    break
                await asyncio.sleep(0.02)
            await feed(10)  # nothing held any more: at once
            await nc.flush()
            await asyncio.sleep(0.1)
            return before, while_leaderless, list(heard), list(native), list(call.recent_audio)
        finally:
            await call.end()
            await nc.close()

    before, while_leaderless, heard, native, recent = asyncio.run(scenario())
    assert before == 3 and while_leaderless == (3, 3)
    assert native == [(i, frame(i)[:160]) for i in range(11)]
    assert [seq for seq, _ in heard] == list(range(11))
    assert [pcm for _, pcm in heard] == [frame(i) for i in range(11)]
    assert [pcm for _, pcm in recent] == [frame(i) for i in range(11)]  # a replay to a new worker has them all, once
    assert stored[1:2] == ["PlaybackProgress"]  # after SessionStarted


def test_held_audio_is_bounded_and_the_excess_is_counted(nats_server, monkeypatch):
    monkeypatch.setattr(call_module, "HOLD_MAX_BYTES", 640 * 5)

    async def scenario():
        nc = await bus.connect(nats_server.url)
        call = Call(Switchboard(nc, {}, telemetry.current()), Transport(), session="twilio-bounded")
        call.unstored_reports = 1  # a report that is not stored yet
        for i in range(8):
            await call.feed(frame(i))
        held = list(call.held_audio)
        await nc.close()
        return held, call.stats

    held, stats = asyncio.run(scenario())
    assert held == [(False, frame(i)) for i in range(3, 8)]
    assert stats["caller_audio_dropped"] == 3


async def _got(heard: list, msg) -> None:
    heard.append((bus.AudioMeta(msg.headers).seq, msg.data))


def test_a_worker_that_hears_whole_windows_gets_each_as_soon_as_it_is_complete_in_fewer_messages(nats_server):
    """AsrClaimed.window: 20 ms pieces (640 bytes) to a worker whose VAD hears
    32 ms windows (1024 bytes) go out when a window is whole: the worker has
    every window as soon as the piece completing it came, no sooner and no
    later, in 5 messages for 8 pieces; the end of the call sends the rest."""

    async def scenario():
        nc = await bus.connect(nats_server.url)
        heard: list[tuple[int, bytes]] = []

        async def claim(msg):
            c = contract.decode(msg.data, contract.AsrClaim)
            await msg.respond(contract.encode(contract.AsrClaimed(session=c.session, worker="w1", window=1024)))

        await nc.subscribe(subjects.ASR_CLAIM, cb=claim)
        call = Call(Switchboard(nc, {}, telemetry.current()), Transport(), session="twilio-windows")
        await nc.subscribe(subjects.audio_in(call.session), cb=functools.partial(_got, heard))
        await call.start()
        windows_after: list[int] = []
        try:
            for i in range(9):
                await call.feed(frame(i))
                await nc.flush()
                want = (i + 1) * 640 // 1024
                for _ in range(200):
                    if sum(len(p) for _, p in heard) // 1024 >= want:
                        break
                    await asyncio.sleep(0.01)
                windows_after.append(sum(len(p) for _, p in heard) // 1024)
            sent_before_end = len(heard)
        finally:
            await call.end()
        await nc.flush()
        await asyncio.sleep(0.1)
        await nc.close()
        return windows_after, sent_before_end, list(heard)

    windows_after, sent_before_end, heard = asyncio.run(scenario())
    assert windows_after == [(i + 1) * 640 // 1024 for i in range(9)]  # each window with the piece that completed it
    assert sent_before_end == 5  # with pieces 2, 4, 5, 7 and 8: the 9th completes no window (5760 bytes)
    assert len(heard) == 6  # the end of the call sent it
    assert [seq for seq, _ in heard] == list(range(len(heard)))
    assert b"".join(p for _, p in heard) == b"".join(frame(i) for i in range(9))  # all of it, in order, the rest at the end
