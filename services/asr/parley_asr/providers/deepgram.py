"""Provider: Deepgram live streaming (``{base}/v1/listen`` over a WebSocket).

From developers.deepgram.com ("Live Audio" API reference, "Interim
Results", "Endpointing", "Utterance End", "Finalize", "KeepAlive",
"CloseStream", "STT Troubleshooting WebSocket, NET, and DATA Errors"):

    connect  {base}/v1/listen?model=&encoding=linear16&sample_rate=16000&channels=1
             &interim_results=true&endpointing=MS&utterance_end_ms=MS&vad_events=true&punctuate=true&smart_format=true
             header Authorization: Token KEY  (a bad key: HTTP 401 at the handshake; 429 when over the limit)
    send     binary audio; {"type": "KeepAlive"} when no audio flows; {"type": "Finalize"}
             (flush: the audio so far comes back final, marked "from_finalize": true);
             {"type": "CloseStream"} (the server sends what is left, a Metadata, and closes)
    receive  {"type": "Results", "start", "duration", "is_final", "speech_final", "from_finalize",
              "channel": {"alternatives": [{"transcript", "confidence", "words"}]}}
             {"type": "SpeechStarted", "timestamp"}, {"type": "UtteranceEnd", "last_word_end"},
             {"type": "Metadata", "request_id", ...}
    close    1000 normal; 1008 (DATA-0000: audio that cannot be decoded); 1011 (NET-0000/NET-0001:
             nothing received in time, server errors)

Phone calls. A Twilio call's audio is 8 kHz μ-law; Deepgram takes it as it
is (``encoding=mulaw&sample_rate=8000``, one byte a sample). When the
gateway offers it (``AsrClaim.native``), the session's stream opens that way
and is fed the carrier's bytes unchanged from ``subjects.audio_native``
(``native_audio``), not the 16 kHz PCM upsampled from them: a quarter of the
upload (64 vs 256 kbit/s), and the provider hears the call as the carrier
delivered it. The worker's VAD still hears the PCM, and times stay counted
in the session's 16 kHz samples (a μ-law byte is two of them), so the
utterances the VAD cuts and the words Deepgram times line up as before.

How it is used here. One stream per session for the whole call (Deepgram
bills the audio streamed), opened at claim time. The worker's own VAD
decides when an utterance ends; then ``final`` sends ``Finalize`` (queued
behind the audio already waiting, so it flushes up to the utterance's end)
and takes the finalized words of the utterance: each word by its own times
(``words[].start/end``), to the utterance its middle falls in, since one
finalized result may run past the stop into the next utterance (the caller
went on after a short pause: its first words were already on their way
behind the ``Finalize``). Deepgram's own
endpointing (``speech_final``) and ``UtteranceEnd`` are requested and
counted, but they do not decide the turn: the reducer's evidence does, the
same with every provider. Interim results are the partials.

Failures. The stream reconnects by itself (audio is held, up to
``HOLD_S``, while it does, so nothing is lost across a blip); a refused key
waits ``AUTH_RETRY_S`` before asking again. While it is down, or if it broke
during an utterance (the provider missed the utterance's start), or if the
finalized words do not come within ``timeout_s``, ``final`` raises
``ProviderError``: Whisper hears that utterance from the audio the worker
holds.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from urllib.parse import urlencode

import numpy as np
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from parley.providers import ProviderError, handshake_refused

log = logging.getLogger("parley_asr.deepgram")

RATE = 16000  # the session's clock: samples of the 16 kHz PCM the worker hears
# offer -> (encoding, sample_rate, session samples per byte, the byte of silence)
NATIVE = {"mulaw/8000": ("mulaw", 8000, 2, b"\xff")}
HOLD_S = 10.0  # audio held while (re)connecting
AUTH_RETRY_S = 60.0
MAX_BACKOFF_S = 30.0
KEEPALIVE_S = 5.0  # Deepgram closes a stream that gets nothing for 10 s (NET-0001)
# Finalized up to within this of the utterance's end counts as done: the audio up to
# the end was queued before the Finalize, so its answer reaches past the end (the slack
# is for rounding). Not "any from_finalize result since": one answering an earlier
# Finalize may arrive late, and would end the wait before this utterance's words.
TOLERANCE = int(0.05 * RATE)


class Deepgram:
    """The provider's configuration; ``listener(session)`` opens one stream."""

    name = "deepgram"
    per_session = True  # each session's stream recovers on its own (no worker-wide breaker)
    natives = tuple(NATIVE)  # what it takes as the carrier sent it (AsrClaim.native)

    def __init__(self, *, base: str, api_key: str, model: str, timeout_s: float = 2.0, endpointing_ms: int = 300, utterance_end_ms: int = 1000):
        self.query = {
            "model": model, "encoding": "linear16", "sample_rate": RATE, "channels": 1, "interim_results": "true",
            "endpointing": endpointing_ms, "utterance_end_ms": utterance_end_ms, "vad_events": "true",
            "punctuate": "true", "smart_format": "true",
        }  # fmt: skip
        self.base = base.rstrip("/")
        self.url = self.url_for("")
        self.api_key = api_key
        self.timeout_s = timeout_s

    def url_for(self, native: str) -> str:
        """The stream's URL for PCM16 at 16 kHz (``native`` ""), or for one of ``natives``."""
        query = dict(self.query)
        if native:
            query["encoding"], query["sample_rate"], _, _ = NATIVE[native]
        return f"{self.base}/v1/listen?{urlencode(query)}"

    def listener(self, session: str, native: str = "") -> "DeepgramListener":
        """``native``: one of ``natives`` when the session's audio comes as the carrier sent it."""
        listener = DeepgramListener(self, session, native)
        listener.start()
        return listener

    async def aclose(self) -> None:
        pass


class DeepgramListener:
    provider = "deepgram"

    def __init__(self, dg: Deepgram, session: str, native: str = ""):
        self.dg = dg
        self.session = session
        self.native = native  # "" PCM16 16 kHz through audio(); else the native_audio() bytes
        self.url = dg.url_for(native)
        self.per_byte = NATIVE[native][2] if native else 0.5  # session samples per byte sent
        self.samples = 0  # samples handed to audio() so far (the session's audio clock)
        self.pending: deque[tuple[int, bytes | str]] = deque()  # (start sample, audio) or (-1, control JSON)
        self.wake = asyncio.Event()
        self.origin = 0  # session sample at the current connection's time 0
        self.connected = False
        self.error: ProviderError | None = None
        self.finals: list[tuple[int, int, str]] = []  # finalized words: (start, end, word) in session samples
        self.interim: tuple[int, int, str] | None = None
        self.finalized_upto = 0
        self.from_finalize = 0  # results marked from_finalize so far
        self.sent = 0  # samples sent (billed)
        self.billed_taken = 0
        self.stats = {"connects": 0, "drops": 0, "speech_started": 0, "utterance_end": 0, "speech_final": 0, "held_dropped_s": 0.0}
        self.closing = False
        self._task: asyncio.Task | None = None
        self._changed = asyncio.Event()

    # ------------------------------------------------------------ audio in
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"deepgram-{self.session}")

    def audio(self, pcm: bytes) -> None:
        if not self.native:
            self._push(pcm)

    def native_audio(self, data: bytes) -> None:
        """The caller's audio as the carrier sent it (``self.native``), in order."""
        if self.native:
            self._push(data)

    def native_gap(self, session_sample: int) -> int:
        """Some of the carrier's audio never came (a gap in its sequence) though the
        session's PCM did, up to ``session_sample``: the provider is sent silence in
        its place, so that its clock stays the session's (its times go on naming the
        right samples). Returns the session samples filled."""
        if not self.native or self.closing or session_sample <= self.samples:
            return 0
        n = int((session_sample - self.samples) / self.per_byte)
        self._push(NATIVE[self.native][3] * n)
        return self._samples_of(b"\0" * n)

    def _push(self, data: bytes) -> None:
        if self.closing:
            return
        self.pending.append((self.samples, data))
        self.samples += self._samples_of(data)
        if not self.connected:
            # Hold a bounded stretch while (re)connecting; older audio is
            # given up (Whisper still has it for any final that needs it).
            while self.pending and self.samples - self._first_audio_sample() > HOLD_S * RATE:
                start, item = self.pending.popleft()
                if isinstance(item, bytes):
                    self.stats["held_dropped_s"] += self._samples_of(item) / RATE
        self.wake.set()

    def _samples_of(self, data: bytes) -> int:
        return int(len(data) * self.per_byte)

    def _first_audio_sample(self) -> int:
        for start, item in self.pending:
            if isinstance(item, bytes):
                return start
        return self.samples

    def _control(self, message: dict) -> None:
        self.pending.append((-1, json.dumps(message)))
        self.wake.set()

    # ------------------------------------------------------------ the stream
    async def _run(self) -> None:
        backoff = 0.5
        while not self.closing:
            try:
                ws = await self._connect()
            except ProviderError as exc:
                self.error = exc
                wait = AUTH_RETRY_S if exc.kind == "auth" else exc.retry_after if exc.retry_after is not None else backoff
                backoff = min(MAX_BACKOFF_S, backoff * 2)
                log.warning("deepgram stream not open: %s (again in %g s)", exc, wait, extra={"session_id": self.session, "provider": "deepgram", "kind": exc.kind})
                self._changed.set()
                await self._sleep(wait)
                continue
            backoff = 0.5
            self.origin = self._first_audio_sample()
            self.connected, self.error = True, None
            self.stats["connects"] += 1
            self._changed.set()
            why = await self._pump(ws)
            self.connected = False
            if self.closing:
                return
            self.stats["drops"] += 1
            self.error = ProviderError("deepgram", "dropped", why)
            # Results of the old stream that never became final are gone with it.
            self.interim = None
            log.warning("deepgram stream lost: %s", why, extra={"session_id": self.session, "provider": "deepgram"})
            self._changed.set()

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._closed_event().wait(), seconds)
        except asyncio.TimeoutError:
            pass

    def _closed_event(self) -> asyncio.Event:
        if not hasattr(self, "_closed"):
            self._closed = asyncio.Event()
        return self._closed

    async def _connect(self):
        try:
            return await websockets.connect(
                self.url, additional_headers={"Authorization": f"Token {self.dg.api_key}"},
                open_timeout=self.dg.timeout_s, max_size=2**22,
            )  # fmt: skip
        except InvalidStatus as exc:
            r = exc.response
            raise handshake_refused("deepgram", r.status_code, r.headers, r.body, ("err_msg", "message", "err_code"), header="dg-error") from None
        except (asyncio.TimeoutError, TimeoutError):
            raise ProviderError("deepgram", "timeout", f"no connection within {self.dg.timeout_s:g} s") from None
        except (OSError, InvalidHandshake) as exc:
            raise ProviderError("deepgram", "dropped", f"cannot connect: {exc}") from None

    async def _pump(self, ws) -> str:
        """Send and receive until the stream ends; returns why it ended."""
        sender = asyncio.create_task(self._send(ws))
        try:
            async for raw in ws:
                if isinstance(raw, bytes):
                    continue
                try:
                    self._on_message(json.loads(raw))
                except (ValueError, AttributeError, TypeError, KeyError, IndexError) as exc:
                    log.warning("deepgram message not understood: %s", exc, extra={"session_id": self.session, "provider": "deepgram"})
            rcvd = ws.close_code
            return f"stream closed ({rcvd} {ws.close_reason or ''})".strip()
        except ConnectionClosed as exc:
            if exc.rcvd is None:
                return "socket dropped (no close frame)"
            return f"stream closed ({exc.rcvd.code} {exc.rcvd.reason})".strip()
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            await ws.close()

    async def _send(self, ws) -> None:
        while True:
            while self.pending:
                start, item = self.pending[0]
                await ws.send(item)
                self.pending.popleft()
                if isinstance(item, bytes):
                    self.sent += self._samples_of(item)
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), KEEPALIVE_S)
            except asyncio.TimeoutError:
                await ws.send(json.dumps({"type": "KeepAlive"}))

    def _words(self, alt: dict, text: str, start: int, end: int) -> list[tuple[int, int, str]]:
        """A final result's words in session samples; the whole transcript over the
        result's span when the server gives no word times."""
        out = []
        for w in alt.get("words") or ():
            word = str(w.get("punctuated_word") or w.get("word") or "").strip()
            if word:
                ws = self.origin + int(round(float(w.get("start", 0)) * RATE))
                out.append((ws, max(ws, self.origin + int(round(float(w.get("end", 0)) * RATE))), word))
        return out or [(start, end, text)]

    def _on_message(self, msg: dict) -> None:
        kind = msg.get("type")
        if kind == "Results":
            alt = (msg.get("channel") or {}).get("alternatives") or [{}]
            text = (alt[0].get("transcript") or "").strip()
            start = self.origin + int(round(float(msg.get("start", 0)) * RATE))
            end = start + int(round(float(msg.get("duration", 0)) * RATE))
            if msg.get("is_final"):
                if text:
                    self.finals.extend(self._words(alt[0], text, start, end))
                self.finalized_upto = max(self.finalized_upto, end)
                self.interim = None
                if msg.get("speech_final"):
                    self.stats["speech_final"] += 1
            else:
                self.interim = (start, end, text) if text else None
            if msg.get("from_finalize"):
                self.from_finalize += 1
            self._changed.set()
        elif kind == "SpeechStarted":
            self.stats["speech_started"] += 1
        elif kind == "UtteranceEnd":
            self.stats["utterance_end"] += 1
        elif kind == "Metadata":
            log.debug("deepgram metadata", extra={"session_id": self.session, "request_id": msg.get("request_id")})
        elif kind == "Error" or "err_code" in msg:
            self.error = ProviderError("deepgram", "refused", str(msg.get("description") or msg.get("err_msg") or msg)[:200])
            self._changed.set()

    # ------------------------------------------------------------ words out
    async def partial(self, audio: np.ndarray, begin: int) -> str | None:
        words = [t for s, e, t in self.finals if e > begin]
        if self.interim is not None and self.interim[1] > begin:
            words.append(self.interim[2])
        return " ".join(words) or None

    async def final(self, audio: np.ndarray, begin: int, end: int) -> str:
        if not self.connected:
            raise self.error or ProviderError("deepgram", "dropped", "the stream is not open")
        if self.origin > begin:
            raise ProviderError("deepgram", "dropped", "the stream was reopened during this utterance: it missed its start")
        self._control({"type": "Finalize"})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.dg.timeout_s
        while self.finalized_upto < end - TOLERANCE:
            if not self.connected or self.origin > begin:
                raise self.error or ProviderError("deepgram", "dropped", "the stream broke during this utterance")
            left = deadline - loop.time()
            if left <= 0:
                raise ProviderError("deepgram", "timeout", f"no final words within {self.dg.timeout_s:g} s")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass
        # A word is the utterance's if its middle is before the utterance's end; the
        # words after it wait for the next utterance (and words before ``begin``,
        # between utterances, are dropped with these).
        words = [t for s, e, t in self.finals if e > begin and (s + e) // 2 < end]
        self.finals = [f for f in self.finals if (f[0] + f[1]) // 2 >= end]
        return " ".join(words)

    def take_billed(self) -> float:
        billed = (self.sent - self.billed_taken) / RATE
        self.billed_taken = self.sent
        return billed

    async def close(self) -> None:
        if self.closing:
            return
        self.closing = True  # from here a closed stream is not reopened
        if self.connected:
            self._control({"type": "CloseStream"})
            deadline = asyncio.get_running_loop().time() + 1.0
            while self.connected and self.pending and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.02)
        self._closed_event().set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 1.0)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - the stream ends either way
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)


