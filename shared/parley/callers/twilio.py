"""A Twilio caller: plays Twilio's side of a bidirectional Media Stream.

Written from Twilio's "Media Streams - WebSocket Messages" page, not from the
gateway's code. It behaves as Twilio does on a ``<Connect><Stream>`` call:

* it sends ``connected``, then ``start`` (streamSid, callSid, accountSid,
  tracks, customParameters, mediaFormat audio/x-mulaw 8000 Hz mono), then a
  ``media`` message every 20 ms at real-time pace: 160 bytes of base64 μ-law,
  with ``sequenceNumber``, ``media.chunk`` and ``media.timestamp`` as strings.
  The microphone sends silence unless it has something to say;
* it plays the agent's ``media`` in real time (``ear.Ear``): audio queues in
  Twilio's buffer and is consumed at 8000 samples/s, starting
  ``playout_delay`` seconds after audio arrives into an empty buffer (a
  jitter buffer). ``rec.played`` is what the caller heard, and when;
* it echoes each ``mark`` once all the audio queued before it has finished
  playing (at once if nothing is buffered);
* on ``clear`` it drops the buffered audio, stops the piece playing at that
  instant, and echoes every pending mark (``Echo.cleared``);
* it can send ``dtmf`` and ``stop``, and raw text for bad-input tests.

Everything is recorded with ``time.monotonic()`` stamps for assertions: media
received, what was played when, marks received and echoed (and whether a
clear echoed them), clears, stalls (the buffer ran dry and audio came again
within 0.5 s with no clear between: a gap the caller heard), and for each
utterance when its first voiced sample was spoken (``rec.utterances``): the
moment the caller starts talking, from which ``ear.audible_stop`` measures
how long the agent went on being heard.

One task per caller paces both directions, so many callers can share one
process (the load benchmark uses it).
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from dataclasses import dataclass, field

import numpy as np
import websockets

from parley.audio import pcm16_to_ulaw, ulaw_to_pcm16

from .ear import Ear, Utterance, first_voiced

RATE = 8000
FRAME = 160  # samples (and μ-law bytes) in 20 ms
SILENCE = bytes([0xFF]) * FRAME  # μ-law for 0


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@dataclass
class Echo:
    at: float
    name: str
    cleared: bool  # echoed because a clear dropped its audio, not played


@dataclass
class Recording:
    media: list[tuple[float, bytes]] = field(default_factory=list)  # (arrival, μ-law)
    played: list[tuple[float, bytes]] = field(default_factory=list)  # (play time, PCM16 8 kHz), audio only
    marks: list[tuple[float, str]] = field(default_factory=list)  # (arrival, name)
    echoes: list[Echo] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)
    stalls: list[float] = field(default_factory=list)  # the buffer ran dry and audio came again soon (no clear): a gap heard
    caller_stalls: list[float] = field(default_factory=list)  # this process fell over 1 s behind
    unexpected: list[tuple[float, str]] = field(default_factory=list)  # messages Twilio would reject
    spoken: list[tuple[float, float]] = field(default_factory=list)  # (first, last) send time of each say()
    utterances: list[Utterance] = field(default_factory=list)


class TwilioCaller:
    def __init__(
        self,
        url: str,
        custom_parameters: dict[str, str] | None = None,
        *,
        call_sid: str | None = None,
        stream_sid: str | None = None,
        account_sid: str | None = None,
        playout_delay: float = 0.06,
        headers: dict[str, str] | None = None,
        handshake: bool = True,
        connect_options: dict | None = None,
    ):
        self.url = url
        self.custom_parameters = dict(custom_parameters or {})
        self.call_sid = call_sid or _sid("CA")
        self.stream_sid = stream_sid or _sid("MZ")
        self.account_sid = account_sid or _sid("AC")
        self.playout_delay = playout_delay
        self.headers = headers or {}
        self.handshake = handshake
        self.connect_options = connect_options or {}  # extra websockets.connect arguments (e.g. a prepared sock)
        self.rec = Recording()
        self.ws = None
        self.seq = 0
        self.chunk = 0
        self.started_at = 0.0
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason: str = ""
        self.ear = Ear(RATE, delay=playout_delay)  # Twilio's buffer, played to the caller
        self.rec.played = self.ear.heard
        self._say: asyncio.Queue = asyncio.Queue()
        self._speech: np.ndarray | None = None
        self._speech_done: asyncio.Future | None = None
        self._speech_first = 0.0
        self._speech_onset: float | None = None
        self._speech_pos = 0  # samples of the utterance sent so far
        self._voiced_at: int | None = None  # sample index of its first voiced sample
        self._tasks: list[asyncio.Task] = []

    # ------------------------------------------------------------ life
    async def __aenter__(self) -> "TwilioCaller":
        await self.connect()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.hang_up()

    async def connect(self) -> None:
        # No permessage-deflate: Twilio offers none.
        self.ws = await websockets.connect(self.url, additional_headers=self.headers, max_size=1 << 22, compression=None, **self.connect_options)
        self.started_at = time.monotonic()
        if self.handshake:
            await self.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
            await self.send_start()
        self._tasks = [asyncio.create_task(self._recv()), asyncio.create_task(self._pace())]

    async def send_start(self) -> None:
        await self.send(
            {
                "event": "start",
                "sequenceNumber": self._next_seq(),
                "start": {
                    "accountSid": self.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": self.custom_parameters,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": RATE, "channels": 1},
                },
                "streamSid": self.stream_sid,
            }
        )

    async def hang_up(self) -> None:
        """Send ``stop`` (if the socket is open) and close, as Twilio does when the caller hangs up."""
        for task in self._tasks:
            task.cancel()
        if self.ws is not None and not self.closed.is_set():
            try:
                await self.stop()
                await self.ws.close()
            except websockets.ConnectionClosed:
                pass
        self.closed.set()

    def drop(self) -> None:
        """Lose the connection abruptly (no stop, no close handshake)."""
        for task in self._tasks:
            task.cancel()
        self.ws.transport.abort()
        self.closed.set()

    # ------------------------------------------------------------ sending
    def _next_seq(self) -> str:
        self.seq += 1
        return str(self.seq)

    async def send(self, message: dict) -> None:
        await self.ws.send(json.dumps(message))

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def dtmf(self, digit: str) -> None:
        await self.send({"event": "dtmf", "streamSid": self.stream_sid, "sequenceNumber": self._next_seq(), "dtmf": {"track": "inbound_track", "digit": digit}})

    async def stop(self) -> None:
        await self.send(
            {"event": "stop", "sequenceNumber": self._next_seq(), "stop": {"accountSid": self.account_sid, "callSid": self.call_sid}, "streamSid": self.stream_sid}
        )

    def say_later(self, pcm8k: np.ndarray) -> asyncio.Future:
        """Queue speech (int16 mono 8 kHz); the future resolves, when its last
        frame was sent, to (first frame time, last frame time)."""
        done = asyncio.get_running_loop().create_future()
        self._say.put_nowait((np.asarray(pcm8k, dtype=np.int16), done))
        return done

    async def say(self, pcm8k: np.ndarray) -> tuple[float, float]:
        return await self.say_later(pcm8k)

    @property
    def sent_ms(self) -> int:
        """Audio sent so far (silence included)."""
        return self.chunk * 20

    def _media(self, ulaw: bytes) -> str:
        self.chunk += 1
        return json.dumps(
            {
                "event": "media",
                "sequenceNumber": self._next_seq(),
                "media": {"track": "inbound", "chunk": str(self.chunk), "timestamp": str(self.chunk * 20 - 20), "payload": base64.b64encode(ulaw).decode()},
                "streamSid": self.stream_sid,
            }
        )

    # ------------------------------------------------------------ the 20 ms clock
    async def _pace(self) -> None:
        """Both directions on one clock. Like a phone, it keeps real time: if
        this process stalls, the frames that fell due meanwhile are sent and
        played at once (the speaker does not wait); past 1 s behind it resyncs
        and records a stall of its own."""
        loop = asyncio.get_running_loop()
        period = FRAME / RATE
        next_at = loop.time()
        try:
            while True:
                due = int((loop.time() - next_at) / period) + 1
                if due > 50:
                    self.rec.caller_stalls.append(time.monotonic())
                    next_at = loop.time()
                    due = 1
                for _ in range(due):
                    now = time.monotonic()
                    await self.ws.send(self._media(self._mic_frame(now)))
                    await self._play(now)
                    next_at += period
                await asyncio.sleep(max(next_at - loop.time(), 0))
        except websockets.ConnectionClosed:
            pass

    def _mic_frame(self, now: float) -> bytes:
        """The next 20 ms of μ-law: queued speech, else silence."""
        if self._speech is None and not self._say.empty():
            self._speech, self._speech_done = self._say.get_nowait()
            self._speech_first = now
            self._speech_pos = 0
            voiced = first_voiced(self._speech, RATE)
            self._voiced_at = None if voiced is None else int(voiced * RATE)
            self._speech_onset = None
        if self._speech is None:
            return SILENCE
        frame, self._speech = self._speech[:FRAME], self._speech[FRAME:]
        if self._voiced_at is not None and self._speech_pos <= self._voiced_at < self._speech_pos + FRAME:
            # The frame was captured in the 20 ms before it is sent.
            self._speech_onset = now - (FRAME - (self._voiced_at - self._speech_pos)) / RATE
        self._speech_pos += FRAME
        if len(frame) < FRAME:
            frame = np.concatenate([frame, np.zeros(FRAME - len(frame), np.int16)])
        if len(self._speech) == 0:
            self.rec.spoken.append((self._speech_first, now))
            self.rec.utterances.append(Utterance(self._speech_first, now, self._speech_onset))
            if not self._speech_done.done():
                self._speech_done.set_result((self._speech_first, now))
            self._speech = None
        return pcm16_to_ulaw(frame.astype("<i2").tobytes())

    async def _play(self, now: float) -> None:
        """Play 20 ms of Twilio's buffer; echo the marks whose audio has played."""
        gaps = len(self.ear.gaps)
        for name in self.ear.play(now):
            await self._echo(name, now, cleared=False)
        self.rec.stalls.extend(at for at, _ in self.ear.gaps[gaps:])

    async def _echo(self, name: str, now: float, cleared: bool) -> None:
        self.rec.echoes.append(Echo(now, name, cleared))
        await self.send({"event": "mark", "sequenceNumber": self._next_seq(), "streamSid": self.stream_sid, "mark": {"name": name}})

    # ------------------------------------------------------------ receiving
    # long: the simulated Twilio caller's receive loop: one branch per message kind Twilio's platform sends
    async def _recv(self) -> None:
        try:
            async for raw in self.ws:
                now = time.monotonic()
                if not isinstance(raw, str):
                    self.rec.unexpected.append((now, "binary message"))
                    continue
                try:
                    msg = json.loads(raw)
                    event = msg["event"]
                except (ValueError, KeyError, TypeError):
                    self.rec.unexpected.append((now, raw[:200]))
                    continue
                if msg.get("streamSid") != self.stream_sid:
                    self.rec.unexpected.append((now, f"wrong streamSid in {raw[:200]}"))
                    continue
                if event == "media":
                    ulaw = base64.b64decode(msg["media"]["payload"], validate=True)
                    self.rec.media.append((now, ulaw))
                    self.ear.receive(now, ulaw_to_pcm16(ulaw))
                elif event == "mark":
                    name = msg["mark"]["name"]
                    self.rec.marks.append((now, name))
                    for n in self.ear.mark(now, name):  # nothing buffered ahead of it: echoed at once
                        await self._echo(n, now, cleared=False)
                elif event == "clear":
                    self.rec.clears.append(now)
                    played, dropped = self.ear.clear(now)
                    for n in played:
                        await self._echo(n, now, cleared=False)
                    for n in dropped:
                        await self._echo(n, now, cleared=True)
                else:
                    self.rec.unexpected.append((now, raw[:200]))
        except websockets.ConnectionClosed:
            pass
        finally:
            if self.ws.close_code is not None:
                self.close_code = self.ws.close_code
                self.close_reason = self.ws.close_reason or ""
            self.closed.set()

    # ------------------------------------------------------------ queries
    def played_audio(self, after: float = 0.0, until: float = float("inf")) -> bytes:
        """What the caller heard (PCM16 8 kHz) in [after, until)."""
        return b"".join(pcm for t, pcm in self.rec.played if after <= t < until)

    def last_played_at(self) -> float:
        """When the last piece heard started playing (0 if none)."""
        return self.rec.played[-1][0] if self.rec.played else 0.0

    @property
    def buffered_ms(self) -> int:
        return self.ear.buffered_ms

    async def wait_until(self, predicate, timeout: float = 30.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not met in {timeout}s")
            await asyncio.sleep(0.02)

    async def wait_audio(self, after: float = 0.0, timeout: float = 30.0) -> float:
        """Until agent audio (received after ``after``) starts playing; returns the play time."""
        await self.wait_until(lambda: any(t >= after for t, _ in self.rec.played), timeout, "agent audio")
        return next(t for t, _ in self.rec.played if t >= after)

    async def wait_clear(self, after: float = 0.0, timeout: float = 30.0) -> float:
        await self.wait_until(lambda: any(t >= after for t in self.rec.clears), timeout, "a clear")
        return next(t for t in self.rec.clears if t >= after)

    async def wait_greeting(self, quiet: float = 1.2, timeout: float = 40.0) -> None:
        """Until the agent's opening (a greeting, a recording notice) has played
        out: its first audio, then ``quiet`` seconds of nothing. Waiting for
        quiet alone returns at once when the opening comes late (a loaded
        machine): nothing has played yet, so the line looks quiet."""
        await self.wait_audio(timeout=timeout)
        await self.wait_quiet(quiet=quiet, timeout=timeout)

    async def wait_quiet(self, quiet: float = 1.5, timeout: float = 60.0, after: float = 0.0) -> None:
        """Until nothing is buffered and nothing has played for ``quiet`` seconds."""

        def quiet_now() -> bool:
            now = time.monotonic()
            last = max(self.last_played_at(), self.rec.media[-1][0] if self.rec.media else 0.0, after)
            return self.ear.buffered == 0 and now - last >= quiet

        await self.wait_until(quiet_now, timeout, "quiet")
