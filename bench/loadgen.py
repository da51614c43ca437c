"""A light load generator: many callers in one process, at real-time pace.

It plays the caller's side of many calls at once, over Twilio Media Streams
(``/twilio/media``) or ``/ws/pcm``, and records what each caller saw. Written
for ``bench/run.py``; it also runs by hand against a running stack::

    python bench/loadgen.py --url ws://127.0.0.1:8080/twilio/media --calls 50 \
        --speech var/bench/speech/fixed-2.4s.ulaw --turns 3 --out /tmp/load.json

It behaves like ``parley.callers.twilio`` (Twilio's side: ``connected``,
``start``, a ``media`` message every 20 ms, real-time playout behind a jitter
buffer, each ``mark`` echoed when the audio before it has played, ``clear``
honoured and echoing the pending marks), made cheap enough for 100+ callers
sharing two cores with the stack:

* one ticker task paces every caller on a shared 20 ms clock (absolute
  deadlines; when this process stalls, the frames that fell due are sent and
  played at once, as a phone's clock would);
* the microphone's messages are precomputed (base64 μ-law per 20 ms frame);
  received audio is counted, never decoded;
* no WebSocket compression (Twilio offers none);
* the event loop is uvloop's when it is installed (``--loop``): the callers
  stand in for Twilio, which is not on this machine, so the less of the two
  cores they take from the stack, the more the verdict is about the stack
  (measured in docs/BENCHMARKS.md section 7, capacity8).

Each caller's script: connect, wait ``--start-at`` (spread across callers so
their turns do not all coincide), then per turn: say the utterance; wait for
the first agent audio; then either wait until the reply has played out (quiet
for ``--quiet`` s) or, with ``--barge-after S``, talk over the reply S seconds
after it started playing. Then hang up.

What is recorded per caller and turn (``time.monotonic()``; reported in ms):
* ``speech_start``/``speech_end``: send time of the first and last frame of
  the utterance (the utterance files are trimmed to their voiced part, so the
  last frame sent is the caller's end of speech);
* ``answer_ms``: speech end -> first agent audio *received*; ``play_ms``: ->
  first agent audio *played* (after the jitter buffer);
* barge-in: ``bargein_last_media_ms`` (speech start -> the last audio message
  received before the ``clear``, i.e. the cancelled run's last frame) and
  ``bargein_clear_ms`` (speech start -> ``clear`` received);
* underruns: once a reply has started playing, every time the jitter buffer
  ran dry and audio of the same reply came afterwards (no caller speech and no
  clear in between), with the length of the silence heard;
* ``notices``: the gateway's JSON notices (``/ws/pcm`` only: latency splits).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import os
import secrets
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from parley.scenarios.line import mint_session

PERIOD = 0.02
TWILIO_RATE_BYTES = 8000  # μ-law: one byte per sample
PCM_RATE_BYTES = 32000  # PCM16 16 kHz


@dataclass
class Turn:
    speech_start: float = 0.0
    speech_end: float = 0.0
    first_media: float | None = None
    first_play: float | None = None
    barge: bool = False  # this utterance talked over a reply
    last_media_before_clear: float | None = None
    clear_at: float | None = None
    latency: dict | None = None  # the gateway's notice for the reply to this turn (/ws/pcm)


@dataclass
class Record:
    index: int
    session: str = ""
    turns: list[Turn] = field(default_factory=list)
    underruns: list[tuple[float, float]] = field(default_factory=list)  # (at, silence heard s)
    failures: list[str] = field(default_factory=list)
    marks: int = 0
    echoes: int = 0
    clears: int = 0
    media_in: int = 0
    audio_while_speaking: int = 0  # agent audio messages received while the caller spoke
    notices: list[tuple[float, dict]] = field(default_factory=list)


class Caller:
    """One call: the script, the microphone and the playout buffer."""

    def __init__(self, index: int, args, speech: list[list[bytes | str]], silence: bytes | str):
        self.i = index
        self.args = args
        self.twilio = args.transport == "twilio"
        self.rate_bytes = TWILIO_RATE_BYTES if self.twilio else PCM_RATE_BYTES
        self.frame_bytes = int(self.rate_bytes * PERIOD)
        self.speech = speech
        self.silence = silence
        self.rec = Record(index)
        self.ws = None
        self.stream_sid = "MZ" + secrets.token_hex(16)
        self.call_sid = "CA" + secrets.token_hex(16)
        self.seq = 0
        self.chunk = 0
        self.loop = asyncio.get_running_loop()
        # Microphone.
        self.mic: list | None = None  # frames of the utterance being said
        self.mic_pos = 0
        self.mic_done: asyncio.Future | None = None
        self.speaking = False
        # Playout: ints (bytes of audio) and strs (mark names), oldest first.
        self.buffer: deque = deque()
        self.buffered = 0
        self.play_from = 0.0
        self.playing = False  # a reply's audio has started playing
        self.dry_since: float | None = None
        self.last_media = 0.0
        self.turn: Turn | None = None
        self.waiters: list[tuple[str, float, asyncio.Future]] = []  # (kind, param, future), checked each tick
        self.answer: asyncio.Future | None = None
        self.cleared: asyncio.Future | None = None
        self.out: deque = deque()  # messages to send, written by the ticker
        self.closed = False

    # ------------------------------------------------------------ messages
    def _seq(self) -> str:
        self.seq += 1
        return str(self.seq)

    def _media(self, payload_b64: str) -> str:
        self.chunk += 1
        return (
            '{"event":"media","sequenceNumber":"%s","media":{"track":"inbound","chunk":"%d","timestamp":"%d","payload":"%s"},"streamSid":"%s"}'
            % (self._seq(), self.chunk, self.chunk * 20 - 20, payload_b64, self.stream_sid)
        )

    def _mark_echo(self, name: str) -> str:
        return json.dumps({"event": "mark", "sequenceNumber": self._seq(), "streamSid": self.stream_sid, "mark": {"name": name}})

    # ------------------------------------------------------------ the 20 ms tick (called by the ticker)
    def tick(self, now: float) -> None:
        if self.ws is None or self.closed:
            return
        frame = self.silence
        if self.mic is not None:
            if self.mic_pos == 0:
                self.turn.speech_start = now
            frame = self.mic[self.mic_pos]
            self.mic_pos += 1
            if self.mic_pos == len(self.mic):
                self.turn.speech_end = now
                self.mic = None
                self.speaking = False
                self.mic_done.set_result(now)
        self.out.append(self._media(frame) if self.twilio else frame)
        self._play(now)
        if self.waiters:
            self._check_waiters(now)

    def _play(self, now: float) -> None:
        if now < self.play_from:
            return
        want = self.frame_bytes
        got = 0
        buf = self.buffer
        while buf:
            head = buf[0]
            if type(head) is str:
                buf.popleft()
                self._echo(head)
                continue
            if want == 0:
                break
            take = head if head <= want else want
            want -= take
            got += take
            self.buffered -= take
            if take == head:
                buf.popleft()
            else:
                buf[0] = head - take
        if got:
            if not self.playing:
                self.playing = True
                if self.turn is not None and self.turn.first_play is None and self.turn.first_media is not None:
                    self.turn.first_play = now
            self.dry_since = None
        if want and self.playing and self.dry_since is None:
            self.dry_since = now  # ran dry: the reply ended, or an underrun (decided when audio comes)

    def _echo(self, name: str) -> None:
        self.rec.echoes += 1
        self.out.append(self._mark_echo(name))

    def _check_waiters(self, now: float) -> None:
        keep = []
        for kind, param, fut in self.waiters:
            if fut.done():
                continue
            if kind == "quiet" and self.buffered == 0 and now - self.last_media >= param:
                fut.set_result(now)
            elif kind == "played" and self.turn.first_play is not None and now - self.turn.first_play >= param:
                fut.set_result(now)
            else:
                keep.append((kind, param, fut))
        self.waiters = keep

    # ------------------------------------------------------------ receiving
    def on_audio(self, nbytes: int, now: float) -> None:
        self.rec.media_in += 1
        self.last_media = now
        if self.speaking:
            self.rec.audio_while_speaking += 1
        if self.dry_since is not None:
            # Audio after the buffer ran dry mid-reply: the caller heard a gap.
            if not self.speaking:
                self.rec.underruns.append((now, now - self.dry_since + self.args.jitter))
            self.dry_since = None
            self.playing = False
        if self.buffered == 0:
            self.play_from = max(self.play_from, now + self.args.jitter)
        self.buffer.append(nbytes)
        self.buffered += nbytes
        t = self.turn
        if t is not None and t.first_media is None and t.speech_end and not self.speaking:
            t.first_media = now
            if self.answer is not None and not self.answer.done():
                self.answer.set_result(now)

    def on_mark(self, name: str, now: float) -> None:
        self.rec.marks += 1
        if self.buffered == 0:
            pending = [m for m in self.buffer if type(m) is str]
            self.buffer.clear()
            for m in pending + [name]:
                self._echo(m)
        else:
            self.buffer.append(name)

    def on_clear(self, now: float) -> None:
        self.rec.clears += 1
        pending = [m for m in self.buffer if type(m) is str]
        self.buffer.clear()
        self.buffered = 0
        self.dry_since = None
        self.playing = False
        for m in pending:
            self._echo(m)
        t = self.turn
        if t is not None and t.barge and t.clear_at is None:
            t.clear_at = now
            t.last_media_before_clear = self.last_media
        if self.cleared is not None and not self.cleared.done():
            self.cleared.set_result(now)

    async def receive(self) -> None:
        twilio = self.twilio
        try:
            async for raw in self.ws:
                now = time.monotonic()
                if not twilio:
                    if isinstance(raw, bytes):
                        self.on_audio(len(raw), now)
                    else:
                        notice = json.loads(raw)
                        self.rec.notices.append((now, notice))
                        if notice.get("type") == "session":
                            self.rec.session = notice["session"]
                        elif notice.get("type") == "latency" and self.turn is not None and self.turn.latency is None:
                            self.turn.latency = notice
                    continue
                msg = json.loads(raw)
                event = msg.get("event")
                if event == "media":
                    payload = msg["media"]["payload"]
                    self.on_audio(len(payload) * 3 // 4 - payload[-2:].count("="), now)
                elif event == "mark":
                    self.on_mark(msg["mark"]["name"], now)
                elif event == "clear":
                    self.on_clear(now)
                else:
                    self.rec.failures.append(f"unexpected message: {raw[:100]}")
        except ConnectionClosed:
            pass
        finally:
            if not self.closed:
                self.closed = True
                self.rec.failures.append("connection closed by the gateway")

    # ------------------------------------------------------------ the script
    def say(self, utterance: list, barge: bool = False) -> asyncio.Future:
        self.turn = Turn(barge=barge)
        self.rec.turns.append(self.turn)
        self.answer = self.loop.create_future()
        self.cleared = self.loop.create_future() if barge else None
        self.mic_done = self.loop.create_future()
        self.mic_pos = 0
        self.speaking = True
        self.playing = False  # whatever played before belongs to an earlier reply
        self.dry_since = None
        self.mic = utterance
        return self.mic_done

    def wait(self, kind: str, param: float) -> asyncio.Future:
        fut = self.loop.create_future()
        self.waiters.append((kind, param, fut))
        return fut

    async def script(self, start_at: float) -> None:
        a = self.args
        try:
            url = a.url
            if not self.twilio:
                # A /ws/pcm session needs a one-time token (POST /api/sessions).
                token = await asyncio.to_thread(mint_session, "http" + a.url.split("/ws/")[0].removeprefix("ws"), a.api_key, {})
                url += ("&" if "?" in url else "?") + f"token={token}"
            self.ws = await connect(url, compression=None, max_size=1 << 22, open_timeout=30)
        except Exception as exc:  # noqa: BLE001
            self.rec.failures.append(f"connect failed: {exc!r}")
            self.closed = True
            return
        recv = asyncio.create_task(self.receive())
        try:
            if self.twilio:
                self.out.append(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
                self.out.append(
                    json.dumps(
                        {
                            "event": "start",
                            "sequenceNumber": self._seq(),
                            "start": {
                                "accountSid": "AC" + "0" * 32,
                                "streamSid": self.stream_sid,
                                "callSid": self.call_sid,
                                "tracks": ["inbound"],
                                "customParameters": {"bench_call": str(self.i)},
                                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                            },
                            "streamSid": self.stream_sid,
                        }
                    )
                )
            await asyncio.sleep(max(0.0, start_at - time.monotonic()))
            if self.closed:
                return  # refused (a full gateway closes the stream at once): nothing to say
            if a.greeting:
                # Let the agent's greeting (if any) play out first.
                await asyncio.wait_for(self.wait("quiet", a.quiet), a.reply_timeout)
            turns = a.turns
            k = 0
            await self.say(self.speech[k % len(self.speech)])
            while True:
                await asyncio.wait_for(self.answer, a.answer_timeout)
                k += 1
                if k >= turns:
                    if a.barge_after:
                        break  # the last reply: heard enough
                    await asyncio.wait_for(self.wait("quiet", a.quiet), a.reply_timeout)
                    break
                if a.barge_after:
                    await asyncio.wait_for(self.wait("played", a.barge_after), a.reply_timeout)
                    done = self.say(self.speech[k % len(self.speech)], barge=True)
                    await asyncio.wait_for(self.cleared, a.answer_timeout)
                    await done
                else:
                    await asyncio.wait_for(self.wait("quiet", a.quiet), a.reply_timeout)
                    await asyncio.sleep(a.pause)
                    await self.say(self.speech[k % len(self.speech)])
        except asyncio.TimeoutError:
            t = self.turn
            what = "no clear" if t and t.barge and t.clear_at is None else "no answer" if t and t.first_media is None else "reply did not end"
            self.rec.failures.append(f"{what} in turn {len(self.rec.turns)}")
        except ConnectionClosed:
            pass
        finally:
            if not self.closed:
                self.closed = True
                try:
                    if self.twilio:
                        await self.ws.send(json.dumps({"event": "stop", "sequenceNumber": self._seq(), "stop": {"accountSid": "AC" + "0" * 32, "callSid": self.call_sid}, "streamSid": self.stream_sid}))
                    await self.ws.close()
                except Exception:  # noqa: BLE001
                    pass
            recv.cancel()


async def ticker(callers: list[Caller], stats: dict, stop: asyncio.Event) -> None:
    """The one clock for every caller: mic frames out, 20 ms of playout each."""
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    lates = stats["late_ms"]
    while not stop.is_set():
        late = loop.time() - next_at
        due = int(late / PERIOD) + 1
        if due > 50:
            stats["resyncs"] += 1
            next_at = loop.time()
            due = 1
        lates.append(round(late * 1000, 1))
        if due > 1:
            # This process stalled: let the receivers take in what arrived
            # meanwhile before playing the overdue ticks, or the stall would
            # show up as an underrun that the gateway did not cause.
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        for _ in range(due):
            now = time.monotonic()
            for c in callers:
                c.tick(now)
            next_at += PERIOD
        for c in callers:
            if c.out and c.ws is not None and not c.closed:
                out, c.out = c.out, deque()
                try:
                    for m in out:
                        await c.ws.send(m)
                except ConnectionClosed:
                    pass
        await asyncio.sleep(max(next_at - loop.time(), 0))


def frames_of(data: bytes, frame_bytes: int, twilio: bool) -> list:
    out = []
    for i in range(0, len(data), frame_bytes):
        f = data[i : i + frame_bytes]
        f += (b"\xff" if twilio else b"\x00") * (frame_bytes - len(f))
        out.append(base64.b64encode(f).decode() if twilio else f)
    return out


def callers_for(args, speech_files) -> list[Caller]:
    """``args.calls`` callers of ``args.transport`` saying these recordings
    (μ-law 8 kHz for Twilio, PCM16 16 kHz for /ws/pcm)."""
    twilio = args.transport == "twilio"
    frame_bytes = int((TWILIO_RATE_BYTES if twilio else PCM_RATE_BYTES) * PERIOD)
    speech = [frames_of(Path(p).read_bytes(), frame_bytes, twilio) for p in speech_files]
    silence = frames_of((b"\xff" if twilio else b"\x00") * frame_bytes, frame_bytes, twilio)[0]
    return [Caller(i, args, speech, silence) for i in range(args.calls)]


@contextlib.asynccontextmanager
async def placed(callers: list[Caller], args, stats: dict | None = None):
    """The calls placed one by one over ``args.connect_spread`` (like calls
    arriving), each caller talking ``args.settle`` after it connects plus its
    share of ``args.spread``, all paced by one ``ticker``. Yields (the start
    time, the callers' script tasks); the ticker stops when the block ends."""
    stats = stats if stats is not None else {"late_ms": [], "resyncs": 0}
    stop = asyncio.Event()
    tick_task = asyncio.create_task(ticker(callers, stats, stop))
    n = max(1, len(callers))
    t0 = time.monotonic()
    scripts = []
    try:
        for i, c in enumerate(callers):
            start_at = t0 + args.connect_spread * i / n + args.settle + args.spread * i / n
            scripts.append(asyncio.create_task(c.script(start_at)))
            await asyncio.sleep(args.connect_spread / n)
        yield t0, scripts
    finally:
        stop.set()
        await tick_task


async def main_async(args) -> dict:
    callers = callers_for(args, args.speech)
    # The callers stand in for Twilio, whose clock no garbage collector
    # stops: the cycle collector is off while they talk (reference counting
    # frees what they make; a run is about a minute), so none of its passes
    # (measured 86 ms at 100 calls) delays every caller's sending and time
    # stamps at once. What exists before is frozen, and collected after.
    gc.collect()
    gc.freeze()
    gc.disable()
    stats = {"late_ms": [], "resyncs": 0}
    cpu0 = time.process_time()
    try:
        async with placed(callers, args, stats) as (t0, scripts):
            await asyncio.gather(*scripts)
    finally:
        gc.enable()
        gc.unfreeze()
    wall = time.monotonic() - t0
    late = sorted(stats["late_ms"])
    return {
        "transport": args.transport,
        "calls": args.calls,
        "turns": args.turns,
        "jitter_ms": args.jitter * 1000,
        "wall_s": wall,
        "cpu_s": time.process_time() - cpu0,
        "started_at": t0,
        "wall_minus_mono": time.time() - time.monotonic(),
        "ticker_late_ms": {"p50": late[len(late) // 2] if late else 0, "p99": late[int(len(late) * 0.99)] if late else 0, "max": late[-1] if late else 0},
        "ticker_resyncs": stats["resyncs"],
        "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
        "callers": [asdict(c.rec) for c in callers],
    }


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="ws://host:port/twilio/media or ws://host:port/ws/pcm")
    p.add_argument("--transport", choices=("twilio", "pcm"), default="twilio")
    p.add_argument("--api-key", default=os.environ.get("PARLEY_API_KEY", ""), help="the gateway's PARLEY_API_KEY (/ws/pcm sessions need a token it mints)")
    p.add_argument("--calls", type=int, default=1)
    p.add_argument("--turns", type=int, default=3)
    p.add_argument("--speech", nargs="+", required=True, help="raw μ-law 8 kHz (twilio) or PCM16 16 kHz (pcm) files; turn k says file k mod n")
    p.add_argument("--jitter", type=float, default=0.06, help="s of audio buffered before playing starts (from empty)")
    p.add_argument("--quiet", type=float, default=0.8, help="a reply is over after this long with nothing buffered or received")
    p.add_argument("--pause", type=float, default=0.2, help="s between the end of a reply and the next utterance")
    p.add_argument("--settle", type=float, default=0.5, help="s after connecting before the first utterance")
    p.add_argument("--spread", type=float, default=5.0, help="first utterances spread over this many s across callers")
    p.add_argument("--connect-spread", type=float, default=2.0, help="connections spread over this many s")
    p.add_argument("--greeting", action="store_true", help="wait for the agent's greeting to play out before the first turn")
    p.add_argument("--barge-after", type=float, default=0.0, help="talk over each reply this many s after it starts playing")
    p.add_argument("--answer-timeout", type=float, default=10.0)
    p.add_argument("--reply-timeout", type=float, default=40.0)
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="the event loop (uvloop falls back to asyncio's when it is not installed)")
    p.add_argument("--out", help="write the JSON result here (default: stdout)")
    return p.parse_args(argv)


def run(coro, loop: str = "uvloop"):
    """``asyncio.run(coro)`` on uvloop's event loop when asked and installed."""
    if loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(coro)
    return asyncio.run(coro)


def main(argv=None) -> None:
    args = parse(argv)
    try:
        os.nice(-5)  # the caller side stands in for Twilio, which is not on this machine: keep its clock steady
    except OSError:
        pass
    result = run(main_async(args), args.loop)
    text = json.dumps(result)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
