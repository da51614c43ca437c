"""A local stand-in for Deepgram's live streaming speech-to-text.

From developers.deepgram.com (the "Live Audio" reference, "Interim
Results", "Endpointing", "Utterance End", "Speech Started", "Finalize",
"KeepAlive", "CloseStream", "STT Troubleshooting WebSocket, NET, and DATA
Errors"):

* ``GET /v1/listen?...`` upgraded to a WebSocket, ``Authorization: Token
  KEY``; a bad key is refused at the handshake (HTTP 401, a JSON body with
  ``err_code``/``err_msg``, and a ``dg-error`` header). Query: ``encoding``
  (linear16, mulaw), ``sample_rate``, ``channels``, ``interim_results``,
  ``endpointing`` (ms of silence, or false), ``utterance_end_ms``,
  ``vad_events``, ``model``...
* Raw audio needs both ``encoding`` and ``sample_rate`` ("If you are using
  the Encoding feature, the Sample Rate feature is also required"): a
  request naming one without the other, or an encoding this stand-in cannot
  decode (it knows ``linear16`` and ``mulaw``), is refused at the handshake
  with HTTP 400. ``mulaw`` is G.711 μ-law, one byte a sample (a phone call's
  8 kHz audio as Twilio sends it); each stream records the bytes it got,
  unchanged (``raw``).
* The client sends binary audio, and JSON ``{"type": "KeepAlive"}``,
  ``{"type": "Finalize"}``, ``{"type": "CloseStream"}``.
* The server sends ``Results`` (``start``, ``duration`` in seconds of the
  stream's audio, ``is_final``, ``speech_final``, ``from_finalize``,
  ``channel.alternatives[0].transcript``/``confidence``/``words``,
  ``metadata``), ``SpeechStarted`` (``timestamp``), ``UtteranceEnd``
  (``last_word_end``) and, at close, ``Metadata``.
* Close codes: 1000 after CloseStream; 1008 ``DATA-0000`` for audio it
  cannot decode; 1011 ``NET-0001`` when it got no audio (nor KeepAlive) for
  10 s.

What it "hears": voiced stretches are found by energy (20 ms frames);
``hear(pcm, rate)`` turns a stretch into words (a fixed script by default,
Whisper for end-to-end tests). Interim results come every ``interim_s`` of
speech; a stretch is final (``speech_final``) after ``endpointing`` ms of
silence, or at once on ``Finalize`` (``from_finalize``).

Faults: a refusal (``status``) is taken at the handshake; any other fault is
taken by a stream when it first hears speech (so a test can queue one after
the call began), and ``drop_after`` counts the bytes received from then on.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Callable
from urllib.parse import parse_qs, urlsplit

import numpy as np

from ..audio import ulaw_to_pcm16
from . import Faults
from .websocket_api import WebSocketApi, json_response

FRAME_S = 0.02
VOICED_RMS = 300.0
IDLE_CLOSE_S = 10.0
ENCODINGS = ("linear16", "mulaw")  # raw encodings this stand-in decodes (Deepgram knows more)


def scripted(*texts: str) -> Callable[[bytes, int], str]:
    """Hearing that says the given texts in turn, one per voiced stretch (then the last again)."""
    said = {"n": 0}

    def hear(pcm: bytes, rate: int) -> str:
        text = texts[min(said["n"], len(texts) - 1)] if texts else ""
        return text

    hear.next = lambda: said.__setitem__("n", said["n"] + 1)  # type: ignore[attr-defined]
    return hear


class Deepgram(WebSocketApi):
    max_size = 2**22  # a client may send a few seconds of audio in one message

    def __init__(self, key: str = "test-deepgram-key", hear: Callable[[bytes, int], str] | None = None, host: str = "127.0.0.1", interim_s: float = 0.5):
        self.key = key
        self.hear = hear or scripted("I'd like to book an appointment.")
        self.host = host
        self.interim_s = interim_s
        self.port = 0
        self.faults = Faults()
        self.refused: list[int] = []
        self.streams: list[dict] = []  # per stream: query, received controls, audio seconds, close

    def _handshake(self, connection, request):
        if urlsplit(request.path).path != "/v1/listen":
            return json_response(404, {"err_code": "NOT_FOUND", "err_msg": "Not found."})
        if request.headers.get("Authorization", "") != f"Token {self.key}":
            return self._refuse(401, {"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials.", "request_id": str(uuid.uuid4())}, {"dg-error": "Invalid credentials."})
        query = {k: v[-1] for k, v in parse_qs(urlsplit(request.path).query).items()}
        problem = _format_problem(query)
        if problem:
            return self._refuse(400, {"err_code": "Bad Request", "err_msg": problem, "request_id": str(uuid.uuid4())}, {"dg-error": problem})
        return self._fault_refusal(
            lambda status: {"err_code": "TOO_MANY_REQUESTS", "err_msg": "Too many requests."} if status == 429 else {"err_code": "ERROR", "err_msg": "Refused."}
        )

    # ------------------------------------------------------------------ a stream
    async def _connection(self, ws) -> None:
        query = {k: v[-1] for k, v in parse_qs(urlsplit(ws.request.path).query).items()}
        record: dict = {"query": query, "controls": [], "audio_s": 0.0, "close": None, "results": [], "raw": bytearray(), "speech_started": []}
        self.streams.append(record)
        s = _Stream(self, ws, query, record, None)
        await s.run()


class _Stream:
    def __init__(self, owner: Deepgram, ws, query: dict, record: dict, fault):
        self.o, self.ws, self.record, self.fault = owner, ws, record, fault
        self.rate = int(query.get("sample_rate", 16000))
        self.encoding = query.get("encoding", "")
        self.interim = query.get("interim_results", "false") == "true"
        ep = query.get("endpointing", "10")
        self.endpointing = None if ep == "false" else int(ep) / 1000
        self.utterance_end = int(query["utterance_end_ms"]) / 1000 if "utterance_end_ms" in query else None
        self.vad_events = query.get("vad_events", "false") == "true"
        self.request_id = str(uuid.uuid4())
        self.audio = bytearray()  # everything received, PCM16
        self.samples_seen = 0  # samples scanned into frames
        self.speaking = False
        self.seg_start = 0  # sample where the unfinalized stretch began
        self.finalized = 0  # sample up to which results are final
        self.silence_run = 0
        self.last_interim = 0
        self.last_word_end: float | None = None
        self.utterance_end_due: float | None = None
        self.received_bytes = 0  # since the first speech (when the fault was taken)
        self.fault_taken = False
        self.sent_results = 0

    # long: the vendor stand-in's receive loop: each documented close code and message kind of Deepgram's live API in one place
    async def run(self) -> None:
        ws = self.ws
        frame = int(FRAME_S * self.rate)
        try:
            while True:
                try:
                    msg = await asyncio.wait_for(ws.recv(), IDLE_CLOSE_S)
                except asyncio.TimeoutError:
                    self.record["close"] = (1011, "NET-0001")
                    await ws.close(1011, "NET-0001: did not receive audio data or a text message within the timeout window")
                    return
                if isinstance(msg, bytes):
                    pcm = self._decode(msg)
                    if pcm is None:
                        self.record["close"] = (1008, "DATA-0000")
                        await ws.close(1008, "DATA-0000: The payload cannot be decoded as audio.")
                        return
                    self.record["raw"] += msg
                    if self.fault_taken:
                        self.received_bytes += len(msg)
                    if self.fault is not None and self.fault.drop_after is not None and self.received_bytes > self.fault.drop_after:
                        self.record["close"] = "dropped"
                        ws.transport.abort()
                        return
                    self.audio += pcm
                    self.record["audio_s"] = len(self.audio) / 2 / self.rate
                    while (len(self.audio) // 2) - self.samples_seen >= frame:
                        await self._frame(self.samples_seen, frame)
                        self.samples_seen += frame
                    continue
                try:
                    control = json.loads(msg)
                except ValueError:
                    continue
                kind = control.get("type")
                self.record["controls"].append(kind)
                if kind == "Finalize":
                    await self._finalize(from_finalize=True)
                elif kind == "CloseStream":
                    await self._finalize(from_finalize=False)
                    await self._send({"type": "Metadata", "transaction_key": "deprecated", "request_id": self.request_id,
                                      "sha256": "", "created": "2026-01-01T00:00:00.000Z", "duration": len(self.audio) / 2 / self.rate,
                                      "channels": 1, "models": ["stand-in"], "model_info": {}})  # fmt: skip
                    self.record["close"] = (1000, "")
                    await ws.close(1000, "")
                    return
        except Exception:  # noqa: BLE001 - the client went away
            self.record["close"] = self.record["close"] or "client gone"

    def _decode(self, msg: bytes) -> bytes | None:
        """PCM16 at the stream's rate, or None if it is not audio of the stream's encoding."""
        if self.encoding == "mulaw":
            return ulaw_to_pcm16(msg)
        if self.encoding == "linear16" and not len(msg) % 2:
            return msg
        if not self.encoding and msg.startswith(b"RIFF"):
            return b""  # a container header: this stand-in hears raw audio only
        return None

    async def _frame(self, at: int, n: int) -> None:
        pcm = np.frombuffer(bytes(self.audio[at * 2 : (at + n) * 2]), "<i2").astype(np.float32)
        voiced = float(np.sqrt(np.mean(pcm * pcm))) > VOICED_RMS if len(pcm) else False
        now_s = (at + n) / self.rate
        if voiced:
            self.silence_run = 0
            self.utterance_end_due = None
            if not self.fault_taken:
                self.fault_taken = True
                self.fault = self.o.faults.next()
            if not self.speaking:
                self.speaking = True
                if self.seg_start <= self.finalized:
                    self.seg_start = max(self.finalized, at)
                self.last_interim = at
                self.record["speech_started"].append(round(at / self.rate, 3))
                if self.vad_events:
                    await self._send({"type": "SpeechStarted", "channel": [0], "timestamp": round(at / self.rate, 3)})
            elif self.interim and (at + n - self.last_interim) >= self.o.interim_s * self.rate:
                self.last_interim = at + n
                await self._results(self.seg_start, at + n, final=False)
        elif self.speaking:
            self.silence_run += n
            if self.endpointing is not None and self.silence_run >= self.endpointing * self.rate:
                self.speaking = False
                await self._results(self.seg_start, at + n, final=True, speech_final=True)
                if self.utterance_end is not None:
                    self.utterance_end_due = now_s + self.utterance_end
        elif self.utterance_end_due is not None and now_s >= self.utterance_end_due:
            self.utterance_end_due = None
            await self._send({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": self.last_word_end or 0.0})

    async def _finalize(self, from_finalize: bool) -> None:
        end = len(self.audio) // 2
        if end > self.finalized:
            await self._results(self.seg_start if self.seg_start < end else self.finalized, end, final=True, from_finalize=from_finalize)
            self.speaking = False
            self.silence_run = 0

    async def _results(self, start: int, end: int, *, final: bool, speech_final: bool = False, from_finalize: bool = False) -> None:
        start = max(start, self.finalized) if final else start
        pcm = bytes(self.audio[start * 2 : end * 2])
        voiced = self._voiced(pcm)
        text = self.o.hear(pcm, self.rate) if voiced else ""
        if final:
            self.finalized = end
            self.seg_start = end
            if text and hasattr(self.o.hear, "next"):
                self.o.hear.next()
        words = text.split()
        dur = (end - start) / self.rate
        # Word times: spread evenly over the voiced part of the stretch (a stand-in's guess;
        # Deepgram aligns each word), so that the silence around speech holds no words.
        w0, w1 = self._voiced_span(pcm)
        w0, wdur = (start + w0) / self.rate, (w1 - w0) / self.rate
        word_objs = [{"word": w.strip(".,?!").lower(), "start": round(w0 + wdur * i / max(1, len(words)), 3),
                      "end": round(w0 + wdur * (i + 1) / max(1, len(words)), 3), "confidence": 0.95,
                      "punctuated_word": w} for i, w in enumerate(words)]  # fmt: skip
        if word_objs:
            self.last_word_end = word_objs[-1]["end"]
        msg = {
            "type": "Results", "channel_index": [0, 1], "duration": round(dur, 3), "start": round(start / self.rate, 3),
            "is_final": final, "speech_final": speech_final, "from_finalize": from_finalize,
            "channel": {"alternatives": [{"transcript": text, "confidence": 0.95 if text else 0.0, "words": word_objs}]},
            "metadata": {"request_id": self.request_id, "model_info": {"name": "stand-in", "version": "1", "arch": "stand-in"}, "model_uuid": "0"},
        }  # fmt: skip
        self.record["results"].append({"is_final": final, "speech_final": speech_final, "from_finalize": from_finalize, "text": text,
                                       "start": msg["start"], "duration": msg["duration"]})  # fmt: skip
        await self._send(msg)

    def _voiced_span(self, pcm: bytes) -> tuple[int, int]:
        """[first, last) sample of ``pcm``'s voiced 20 ms frames (all of it if none is)."""
        a = np.frombuffer(pcm, "<i2").astype(np.float32)
        n = int(FRAME_S * self.rate)
        loud = [i for i in range(0, len(a) - n + 1, n) if float(np.sqrt(np.mean(a[i : i + n] ** 2))) > VOICED_RMS]
        return (loud[0], loud[-1] + n) if loud else (0, len(a))

    def _voiced(self, pcm: bytes) -> bool:
        a = np.frombuffer(pcm, "<i2").astype(np.float32)
        n = int(FRAME_S * self.rate)
        frames = [a[i : i + n] for i in range(0, len(a) - n + 1, n)]
        return sum(1 for f in frames if float(np.sqrt(np.mean(f * f))) > VOICED_RMS) >= 3

    async def _send(self, msg: dict) -> None:
        if self.fault is not None and self.fault.delay_first and self.sent_results == 0 and msg.get("type") == "Results":
            await asyncio.sleep(self.fault.delay_first)
        if msg.get("type") == "Results":
            self.sent_results += 1
        await self.ws.send(json.dumps(msg))


def _format_problem(query: dict) -> str:
    """Why the audio format of a /v1/listen request cannot work ("" if it can)."""
    encoding, rate = query.get("encoding"), query.get("sample_rate")
    if encoding is not None and encoding not in ENCODINGS:
        return f"Bad Request: unsupported encoding {encoding!r} (this stand-in decodes {', '.join(ENCODINGS)})."
    if (encoding is None) != (rate is None):
        return "Bad Request: raw audio needs both encoding and sample_rate."
    if rate is not None and not (rate.isdigit() and 0 < int(rate) <= 48000):
        return f"Bad Request: invalid sample_rate {rate!r}."
    return ""
