"""A `/ws/pcm` caller (tests, benchmarks, scenarios): a microphone that never stops.

It streams 20 ms frames at real-time pace (silence unless it has something to
say), records every agent audio frame with its arrival time (``frames``), and
every JSON notice the gateway sends. Like the browser page, it plays what it
receives through a small playout buffer (``ear``, 40 ms: the page schedules
30 ms ahead, plus a frame), optionally stops on a ``pause`` notice (the
agent paused for the caller) as the page and ``parley talk`` do: it drops
what it had not played and tells the gateway (``paused``), which plays that
again on resume (``hold_on_pause``),
and drops what is buffered on an ``interrupted`` notice; ``heard`` is what the caller heard, and when. ``utterances`` holds,
for each ``say``, when its first voiced sample was spoken: the moment the
caller starts talking, from which ``ear.audible_stop`` measures how long the
agent went on being heard.
"""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import websockets

from .ear import Ear, Utterance, first_voiced

RATE = 16000
FRAME = 320  # samples of 16 kHz in 20 ms


class PcmCaller:
    def __init__(self, url: str, *, playout_delay: float = 0.04, clear_on_interrupt: bool = True, hold_on_pause: bool = False, connect_options: dict | None = None):
        self.url = url
        self.connect_options = connect_options or {}  # extra websockets.connect arguments (e.g. a prepared sock)
        self.ws = None
        self.frames: list[tuple[float, bytes]] = []  # (monotonic time, pcm)
        self.notices: list[tuple[float, dict]] = []
        self.ear = Ear(RATE, delay=playout_delay)
        self.heard = self.ear.heard  # (play time, PCM16 16 kHz) as the caller heard it
        self.clear_on_interrupt = clear_on_interrupt
        # Stop at "pause": drop what is buffered and answer how much ({"type": "paused", "run", "unplayed_ms"});
        # the gateway plays it again on resume (nothing lost), as the browser page and `parley talk` do.
        # Off by default: a client that plays its buffer out (older clients; the figures of earlier sessions).
        self.hold_on_pause = hold_on_pause
        self.dropped: list[tuple[float, int, int]] = []  # (time, run, samples dropped) at each pause
        self.utterances: list[Utterance] = []
        self.session: str | None = None
        self._say: asyncio.Queue = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []
        self.closed = asyncio.Event()

    async def __aenter__(self) -> "PcmCaller":
        self.ws = await websockets.connect(self.url, max_size=1 << 22, **self.connect_options)
        if self.hold_on_pause:
            await self.ws.send(json.dumps({"type": "hello", "answers_pause": True}))
        self._tasks = [asyncio.create_task(self._recv()), asyncio.create_task(self._mic())]
        await self.wait_for(lambda n: n["type"] == "session", timeout=15)
        self.session = next(n["session"] for _, n in self.notices if n["type"] == "session")
        return self

    async def __aexit__(self, *exc) -> None:
        for task in self._tasks:
            task.cancel()
        await self.ws.close()

    async def _recv(self) -> None:
        try:
            async for msg in self.ws:
                now = time.monotonic()
                if isinstance(msg, bytes):
                    self.frames.append((now, msg))
                    self.ear.receive(now, msg)
                else:
                    notice = json.loads(msg)
                    self.notices.append((now, notice))
                    kind = notice.get("type")
                    if kind == "interrupted" and self.clear_on_interrupt:
                        self.ear.clear(now)
                    elif kind == "pause" and self.hold_on_pause:
                        dropped = self.ear.drop(now)
                        self.dropped.append((now, notice.get("run"), dropped))
                        await self.ws.send(json.dumps({"type": "paused", "run": notice.get("run"), "unplayed_ms": round(dropped * 1000 / RATE)}))
        finally:
            self.closed.set()

    async def _mic(self) -> None:
        """The 20 ms clock: one microphone frame out, one frame of the ear played."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        pending: np.ndarray | None = None
        done: asyncio.Future | None = None
        first = onset = 0.0
        pos, voiced_at = 0, None
        while True:
            now = time.monotonic()
            if pending is None and not self._say.empty():
                pending, done = self._say.get_nowait()
                first, onset, pos = now, None, 0
                voiced = first_voiced(pending, RATE)
                voiced_at = None if voiced is None else int(voiced * RATE)
            if pending is not None:
                frame, pending = pending[:FRAME], pending[FRAME:]
                if voiced_at is not None and pos <= voiced_at < pos + FRAME:
                    onset = now - (FRAME - (voiced_at - pos)) / RATE  # captured in the 20 ms before it is sent
                pos += FRAME
                if len(frame) < FRAME:
                    frame = np.concatenate([frame, np.zeros(FRAME - len(frame), np.int16)])
                if len(pending) == 0:
                    pending = None
                    self.utterances.append(Utterance(first, now, onset))
                    done.set_result(time.monotonic() + 0.02)
            else:
                frame = np.zeros(FRAME, np.int16)
            await self.ws.send(frame.astype("<i2").tobytes())
            self.ear.play(now)
            next_at += 0.02
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    async def say(self, audio: np.ndarray) -> float:
        """Speak (int16, 16 kHz) at real-time pace; returns when the last
        sample was sent, as time.monotonic()."""
        done = asyncio.get_running_loop().create_future()
        await self._say.put((audio, done))
        return await done

    def say_later(self, audio: np.ndarray) -> asyncio.Future:
        done = asyncio.get_running_loop().create_future()
        self._say.put_nowait((audio, done))
        return done

    async def wait_for(self, predicate, timeout: float = 30, after: float = 0.0) -> dict:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for t, n in self.notices[seen:]:
                if t >= after and predicate(n):
                    return n
            seen = len(self.notices)
            await asyncio.sleep(0.02)
        raise TimeoutError(f"no matching notice in {timeout}s; last: {[n for _, n in self.notices[-8:]]}")

    async def wait_quiet(self, quiet: float = 1.5, timeout: float = 60, after: float = 0.0) -> None:
        """Until the agent has sent no audio for ``quiet`` seconds and is listening."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last_audio = self.frames[-1][0] if self.frames else 0.0
            states = [n["state"] for _, n in self.notices if n["type"] == "state"]
            now = time.monotonic()
            if now - max(last_audio, after) >= quiet and states and states[-1] == "Listening":
                return
            await asyncio.sleep(0.05)
        raise TimeoutError("the agent never went quiet")

    def audio_after(self, t: float, until: float = float("inf")) -> bytes:
        return b"".join(f for ts, f in self.frames if t <= ts < until)

    def notices_of(self, kind: str) -> list[dict]:
        return [n for _, n in self.notices if n["type"] == kind]
