"""Test harness for the TTS service: workers on a real nats-server, and what they publish."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

from parley import bus, contract, subjects
from parley_tts.adapters import Voice
from parley_tts.settings import Settings
from parley_tts.worker import Worker


@dataclass(frozen=True)
class Audio:
    session: str
    run: int
    chunk: int
    seq: int
    rate: int
    last: bool
    data: bytes
    t: float  # time.monotonic() at receipt


class Seen:
    """Every TTS audio message and event for some sessions, in arrival order."""

    def __init__(self) -> None:
        self.items: list[Audio | contract.Event] = []
        self.times: list[float] = []
        self._changed = asyncio.Event()

    @classmethod
    async def watch(cls, nc, *sessions: str) -> "Seen":
        seen = cls()
        for s in sessions:
            await nc.subscribe(subjects.tts_audio_all(s), cb=seen._on_audio)
            await nc.subscribe(subjects.events(s), cb=seen._on_event)
        await nc.flush()
        return seen

    async def _on_audio(self, msg) -> None:
        meta = bus.AudioMeta(msg.headers)
        session = subjects.session_of(msg.subject)
        run = int(msg.subject.rsplit(".", 1)[1])
        self._add(Audio(session, run, meta.chunk, meta.seq, meta.rate, meta.last, msg.data, time.monotonic()))

    async def _on_event(self, msg) -> None:
        self._add(contract.decode_event(msg.data))

    def _add(self, item) -> None:
        self.items.append(item)
        self.times.append(time.monotonic())
        self._changed.set()

    def audio(self, session: str, run: int | None = None, chunk: int | None = None) -> list[Audio]:
        return [
            a
            for a in self.items
            if isinstance(a, Audio) and a.session == session and run in (None, a.run) and chunk in (None, a.chunk)
        ]

    def events(self, session: str, kind: type | None = None) -> list:
        return [e for e in self.items if isinstance(e, contract.Event) and e.session == session and (kind is None or isinstance(e, kind))]

    def ends(self, session: str, run: int) -> list[contract.Event]:
        return [e for e in self.events(session, (contract.TTSChunkDone, contract.TTSError)) if e.run == run]

    async def wait_for(self, predicate, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; seen so far: {[self.describe(i) for i in self.items]}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def chunks_done(self, session: str, run: int, n: int, timeout: float = 30.0) -> None:
        await self.wait_for(lambda s: len(s.ends(session, run)) >= n, timeout)

    @staticmethod
    def describe(item) -> str:
        if isinstance(item, Audio):
            return f"audio {item.session}/{item.run}/{item.chunk}#{item.seq}{' last' if item.last else ''} {len(item.data)}B"
        return f"{contract.type_name(item)} {item.session}/{getattr(item, 'run', '')}/{getattr(item, 'chunk', '')}"


class Harness:
    """Workers plus a client connection, all on the module's nats-server."""

    def __init__(self, url: str):
        self.url = url
        self.workers: list[Worker] = []
        self.conns = []

    async def worker(self, voice: Voice, **settings) -> Worker:
        nc = await bus.connect(self.url)
        self.conns.append(nc)
        w = Worker(nc, Settings(nats_url=self.url, **settings), voice)
        await w.start()
        self.workers.append(w)
        return w

    async def client(self):
        nc = await bus.connect(self.url)
        self.conns.append(nc)
        return nc

    async def close(self) -> None:
        for w in self.workers:
            await w.stop()
        for nc in self.conns:
            await nc.close()

    async def __aenter__(self) -> "Harness":
        return self

    async def __aexit__(self, *_) -> None:
        await self.close()


async def synthesize(nc, session: str, run: int, chunk: int, text: str) -> float:
    """Publish a Synthesize; returns time.monotonic() just before publishing."""
    t = time.monotonic()
    await nc.publish(subjects.TTS_REQUEST, contract.encode(contract.Synthesize(session=session, run=run, chunk=chunk, text=text)))
    await nc.flush()
    return t


async def cancel(nc, session: str, run: int) -> None:
    await nc.publish(subjects.TTS_CANCEL, contract.encode(contract.CancelTTS(session=session, run=run)))
    await nc.flush()


async def end(nc, session: str) -> None:
    await nc.publish(subjects.control(session), contract.encode(contract.SessionControl(session=session, reason="hangup")))
    await nc.flush()


async def settled(worker: Worker, client) -> None:
    """Everything the worker published so far has reached ``client``'s callbacks."""
    await worker.nc.flush()  # the server has all of the worker's messages...
    await client.flush()  # ...and has sent them to the client before this PONG
    await asyncio.sleep(0.05)  # and the client's subscription tasks ran


async def until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.01)


def check_chunk(audio: list[Audio], rate: int) -> None:
    """One chunk's messages: seq 0, 1, 2..., the last (and only the last) flagged."""
    assert audio, "no audio"
    assert [a.seq for a in audio] == list(range(len(audio)))
    assert [a.last for a in audio] == [False] * (len(audio) - 1) + [True]
    assert all(a.rate == rate for a in audio)
    assert all(len(a.data) % 2 == 0 for a in audio)


def check_events(events: list, chunks: list[int]) -> None:
    """Per chunk: exactly one TTSChunkStarted, then exactly one TTSChunkDone."""
    for c in chunks:
        of_chunk = [type(e).__name__ for e in events if getattr(e, "chunk", None) == c]
        assert of_chunk == ["TTSChunkStarted", "TTSChunkDone"], (c, of_chunk)


_SAME = {"ten": "10", "three": "3", "thirty": "30", "dr": "doctor"}


def words(text: str) -> list[str]:
    """Lower case, no punctuation; "10am"/"10 a.m."/"ten am" all as ["10", "am"], "Dr." as "doctor"."""
    t = text.lower().replace("p.m.", " pm ").replace("a.m.", " am ")
    t = re.sub(r"(\d)(am|pm)\b", r"\1 \2", t)
    t = re.sub(r"[^a-z0-9' ]+", " ", t)
    return [_SAME.get(w, w) for w in t.split()]


async def alive(nc, worker: str, proc, timeout: float = 30.0) -> None:
    """Wait until the worker process ``proc`` answers on its liveness subject
    (it does once it pulls requests)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await nc.request(subjects.tts_alive(worker), b"", timeout=1)
            return
        except Exception:  # noqa: BLE001
            assert time.monotonic() < deadline and proc.poll() is None, "the worker did not start"
            await asyncio.sleep(0.1)
