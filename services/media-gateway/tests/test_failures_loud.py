"""Failures are loud: a transport that breaks is failed (closed with a reason,
logged, counted, its call ended), never dropped silently while its call goes
on; no background task runs without a reference and an error path."""

from __future__ import annotations

import asyncio

import pytest

from parley_gateway.call import Ticker
from parley_gateway.tasks import TaskSet
from parley_gateway.webrtc import CHANNEL_BACKLOG_BYTES, SILENCE, CallTrack, WebRtcTransport


class Sender:
    def __init__(self, broken: bool = False):
        self.broken = broken
        self.ticks = 0
        self.failures: list[tuple[str, str]] = []

    def tick(self) -> None:
        self.ticks += 1
        if self.broken:
            raise RuntimeError("bug in a tick")

    def fail(self, reason: str, kind: str) -> None:
        self.failures.append((reason, kind))


def test_a_tick_that_raises_fails_its_call_and_the_others_tick_on(caplog):
    async def scenario():
        stats: dict = {}
        ticker = Ticker(stats)
        good, bad = Sender(), Sender(broken=True)
        ticker.add(good)
        ticker.add(bad)
        await asyncio.sleep(0.15)
        ticker.remove(good)
        await asyncio.sleep(0.05)
        return good, bad, ticker

    good, bad, ticker = asyncio.run(scenario())
    assert bad.ticks == 1 and bad.failures == [("internal error: RuntimeError", "tick")]
    assert good.ticks >= 5 and good.failures == []
    assert "tick failed" in caplog.text and "bug in a tick" in caplog.text


def test_a_failed_task_is_logged_counted_and_handed_to_its_owner(caplog):
    async def scenario():
        stats: dict = {}
        failed: list[tuple[str, str]] = []
        tasks = TaskSet(stats, on_error=lambda name, exc: failed.append((name, str(exc))), context=lambda: {"session_id": "s1"})

        async def boom():
            raise ValueError("no")

        tasks.spawn(boom(), "boom")
        quiet = tasks.spawn(asyncio.sleep(10), "sleeper")
        await asyncio.sleep(0.05)
        held = len(tasks)
        tasks.cancel()
        await asyncio.sleep(0.01)
        return stats, failed, held, quiet, len(tasks)

    stats, failed, held, quiet, left = asyncio.run(scenario())
    assert failed == [("boom", "no")] and stats["task_errors"] == 1
    assert held == 1 and quiet.cancelled() and left == 0  # held until done; cancelling is not an error
    assert "background task boom failed" in caplog.text


def test_an_outbound_track_whose_call_breaks_sends_silence_and_reports_it():
    errors: list[BaseException] = []

    def broken():
        raise KeyError("playout")

    async def scenario():
        track = CallTrack(broken, on_error=errors.append)
        frame = await track.recv()
        return bytes(frame.planes[0])[: len(SILENCE)]

    pcm = asyncio.run(scenario())
    assert pcm == SILENCE and len(errors) == 1 and isinstance(errors[0], KeyError)


class Channel:
    readyState = "open"

    def __init__(self, buffered: int):
        self.bufferedAmount = buffered
        self.sent: list[str] = []

    def send(self, text: str) -> None:
        self.sent.append(text)


class PeerConnection:
    closed = False

    async def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("buffered, failed", [(1000, False), (CHANNEL_BACKLOG_BYTES + 1, True)])
def test_a_page_that_stops_reading_its_events_is_failed(buffered, failed):
    async def scenario():
        stats: dict = {}
        pc = PeerConnection()
        transport = WebRtcTransport(pc, {}, stats)
        transport.channel = Channel(buffered)
        await transport.send_notice({"type": "step"})
        await asyncio.sleep(0.05)
        return stats, pc, transport

    stats, pc, transport = asyncio.run(scenario())
    assert bool(stats.get("webrtc_error_backlog")) is failed
    assert pc.closed is failed and transport.closing is failed
    assert (transport.channel.sent == []) is failed


def test_an_inspector_that_falls_behind_is_told_why_and_closed(monkeypatch):
    from parley_gateway import inspect

    monkeypatch.setattr(inspect, "BACKLOG", 5)
    monkeypatch.setattr(inspect, "SEND_TIMEOUT", 0.5)

    class Sub:
        async def unsubscribe(self):
            pass

    class Nc:
        def __init__(self):
            self.callbacks = {}

        def jetstream(self):
            return self

        async def subscribe(self, subject, cb, **kw):
            self.callbacks[subject] = cb
            return Sub()

    class Msg:
        def __init__(self, data: bytes):
            self.data = data

    class Ws:
        def __init__(self):
            self.sent: list[str] = []
            self.closed: tuple | None = None
            self.stuck = asyncio.Event()

        async def send_text(self, text):
            self.sent.append(text)
            if len(self.sent) > 1 and "error" not in text:
                await self.stuck.wait()  # the watcher stops reading after the first notice

        async def close(self, code, reason=""):
            self.closed = (code, reason)

        async def receive(self):
            await asyncio.Event().wait()

    async def scenario():
        nc, ws, stats = Nc(), Ws(), {}
        watching = asyncio.create_task(inspect.watch(ws, nc, "s1", stats))
        await asyncio.sleep(0.05)
        notice = next(cb for subject, cb in nc.callbacks.items() if subject.startswith("parley.notice"))
        for i in range(20):
            await notice(Msg(b'{"type": "latency"}'))
            await asyncio.sleep(0)
        await asyncio.wait_for(watching, 5)  # never unblocked: the send times out
        return ws, stats

    ws, stats = asyncio.run(scenario())
    assert stats == {"inspect_error_backlog": 1}
    assert ws.closed is not None and ws.closed[0] == 1008 and "not reading" in ws.closed[1]
