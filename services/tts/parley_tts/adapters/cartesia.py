"""Adapter: Cartesia's TTS WebSocket (``{base}/tts/websocket``), hand-written.

Why Cartesia's WebSocket (and not ElevenLabs' stream-input) for the
streaming cloud voice: one socket per worker carries every session's speech
at once, each chunk in its own *context* (``context_id``), and a context is
cancelled at the provider by one message (``{"context_id", "cancel": true}``):
a barge-in stops the vendor generating, on the same warm socket, with no
reconnect before the next reply. ElevenLabs' single-context stream-input
socket ends the whole connection to stop (its multi-context socket does the
same job as Cartesia's contexts, with ``close_context``). Cartesia also
returns raw PCM16 at the rate we ask for, and word timestamps, which say how
much of a chunk was really spoken when a socket breaks mid-chunk, so the
fallback voice says only the rest.

Why not the ``cartesia`` SDK: it wraps the same socket, but hides the
handshake's HTTP status and the close code behind its own exceptions, runs
its own reconnects, and has no hook for per-context first-byte timeouts; all
of which are exactly what a fallback needs to see. The protocol is small.

Wire format (docs.cartesia.ai, "Text to Speech (WebSocket)", "Contexts"):

    connect  {base}/tts/websocket  headers Authorization: Bearer KEY, Cartesia-Version: DATE
    send     {"model_id", "transcript", "voice": {"mode": "id", "id"}, "language",
              "context_id", "output_format": {"container": "raw", "encoding": "pcm_s16le",
              "sample_rate"}, "add_timestamps": true, "continue": false}
    send     {"context_id", "cancel": true}
    receive  {"type": "chunk", "data": base64 PCM, "done": false, "context_id", "status_code": 206}
             {"type": "timestamps", "word_timestamps": {"words", "start", "end"}, "context_id"}
             {"type": "done", "done": true, "context_id"}
             {"type": "error", "done": true, "status_code", "title", "message", "error_code", "context_id"}

A refused key is an HTTP 401 at the handshake; a refused connection, a close
mid-stream, an error message, or no audio within ``first_audio_s`` all raise
``ProviderError`` for the chunk (the worker falls back). One chunk is one
context; a context whose stream is closed early (a cancelled run) is
cancelled at the provider.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import json
import logging
from typing import AsyncIterator

from websockets.exceptions import ConnectionClosed

from parley.providers import ProviderError, kind_of_status

from .. import audio
from ..lanes import Job
from .websocket import open_socket

log = logging.getLogger("parley_tts.cartesia")

API_VERSION = "2025-04-16"


def spoken_chars(text: str, words: list[str]) -> int:
    """The end, in ``text``, of the last of ``words`` (said in order) found
    in it: how much of the text those words cover. 0 when none is found."""
    pos = end = 0
    lowered = text.lower()
    for word in words:
        w = word.strip().lower()
        if not w:
            continue
        at = lowered.find(w, pos)
        if at < 0:
            break
        pos = end = at + len(w)
    return end


class Cartesia:
    name = "cartesia"
    cloud = True

    def __init__(
        self, *, base: str, api_key: str, model: str, voice: str, sample_rate: int = 24000,
        first_audio_s: float = 1.5, piece_ms: float = 200.0, language: str = "en",
    ):  # fmt: skip
        self.url = f"{base.rstrip('/')}/tts/websocket"
        self.api_key = api_key
        self.model = model
        self.voice = voice
        self.sample_rate = sample_rate
        self.first_audio_s = first_audio_s
        self.language = language
        self.max_samples = audio.samples_for_ms(piece_ms, sample_rate)
        self._ws = None
        self._reader: asyncio.Task | None = None
        self._connecting: asyncio.Lock | None = None
        self._contexts: dict[str, asyncio.Queue] = {}
        self._ids = itertools.count()

    # ------------------------------------------------------------ the socket
    async def start(self) -> None:
        """Open the socket before the first reply needs it (a failure here is
        only logged: the first chunk tries again, and falls back)."""
        try:
            await self._connection()
        except ProviderError as exc:
            log.warning("cartesia not reachable at start: %s", exc, extra={"provider": self.name, "error": str(exc)})

    async def _connection(self):
        if self._ws is not None:
            return self._ws
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._ws is not None:
                return self._ws
            headers = {"Authorization": f"Bearer {self.api_key}", "Cartesia-Version": API_VERSION}
            ws = await open_socket(self.name, self.url, headers, self.first_audio_s)
            self._ws = ws
            self._reader = asyncio.create_task(self._read(ws), name="cartesia-reader")
            log.info("cartesia connected", extra={"provider": self.name, "url": self.url})
            return ws

    async def _read(self, ws) -> None:
        """Every message to its context's queue; a closed socket fails every open context."""
        why = "closed"
        try:
            async for raw in ws:
                try:
                    msg = json.loads(raw)
                    queue = self._contexts.get(msg.get("context_id", ""))
                except (ValueError, AttributeError):
                    log.warning("cartesia sent something that is not a JSON object: dropped", extra={"provider": self.name})
                    continue
                if queue is not None:
                    queue.put_nowait(msg)
        except ConnectionClosed as exc:
            why = f"socket closed ({exc.rcvd.code if exc.rcvd else 'no close frame'} {exc.rcvd.reason if exc.rcvd else ''})".strip()
        except Exception as exc:  # noqa: BLE001 - any break of the socket fails the open contexts, loudly
            why = f"socket broke: {exc!r}"
        finally:
            if self._ws is ws:
                self._ws = None
            error = ProviderError(self.name, "dropped", why)
            for queue in self._contexts.values():
                queue.put_nowait(error)
            if self._contexts:
                log.warning("cartesia socket lost with contexts open", extra={"provider": self.name, "contexts": len(self._contexts), "error": why})

    async def aclose(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    def close(self) -> None:
        pass  # the socket is closed by aclose (in the app's lifespan)

    # ------------------------------------------------------------- speaking
    # long: one chunk over Cartesia's WebSocket protocol: request, audio and timestamps, done/error, and cancel at the provider in one place
    async def stream(self, job: Job) -> AsyncIterator[bytes]:
        context = f"{job.session}-{job.run}-{job.chunk}-{next(self._ids)}"
        queue: asyncio.Queue = asyncio.Queue()
        self._contexts[context] = queue
        done = False
        samples = 0
        words: list[tuple[str, float]] = []  # (word, end s)
        carry = b""
        try:
            ws = await self._connection()
            request = {
                "model_id": self.model,
                "transcript": job.text,
                "voice": {"mode": "id", "id": self.voice},
                "language": self.language,
                "context_id": context,
                "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": self.sample_rate},
                "add_timestamps": True,
                "continue": False,
            }
            try:
                await ws.send(json.dumps(request))
            except ConnectionClosed as exc:
                raise ProviderError(self.name, "dropped", f"socket closed before the request: {exc}") from None
            while True:
                try:
                    msg = await asyncio.wait_for(queue.get(), self.first_audio_s)
                except asyncio.TimeoutError:
                    what = "no audio" if samples == 0 else "no more audio"
                    raise ProviderError(self.name, "timeout", f"{what} within {self.first_audio_s:g} s", spoken=self._spoken(job.text, words, samples)) from None
                if isinstance(msg, ProviderError):
                    msg.spoken = self._spoken(job.text, words, samples)
                    raise msg
                kind = msg.get("type")
                if kind == "chunk":
                    try:
                        pcm = carry + base64.b64decode(msg.get("data") or "", validate=True)
                    except (binascii.Error, ValueError):
                        raise ProviderError(self.name, "refused", "audio that is not base64", spoken=self._spoken(job.text, words, samples)) from None
                    pcm, carry = pcm[: len(pcm) // 2 * 2], pcm[len(pcm) // 2 * 2 :]
                    samples += len(pcm) // 2
                    for piece in audio.split(pcm, self.max_samples):
                        yield piece
                elif kind == "timestamps":
                    ts = msg.get("word_timestamps") or {}
                    words.extend(zip(ts.get("words") or [], ts.get("end") or []))
                elif kind == "done" or (kind != "error" and msg.get("done")):
                    done = True
                    return
                elif kind == "error":
                    done = True  # the provider closed the context itself
                    status = int(msg.get("status_code") or 500)
                    text = msg.get("message") or msg.get("title") or msg.get("error") or "error"
                    raise ProviderError(self.name, kind_of_status(status), f"error {status}: {text}", spoken=self._spoken(job.text, words, samples))
                # flush_done, phoneme_timestamps, anything newer: nothing to do
        finally:
            self._contexts.pop(context, None)
            if not done and self._ws is not None:
                # Closed early (the run was cancelled) or failed: stop the
                # provider generating for it.
                try:
                    await self._ws.send(json.dumps({"context_id": context, "cancel": True}))
                except Exception:  # noqa: BLE001 - the socket is going; the reader reports it
                    pass

    def _spoken(self, text: str, words: list[tuple[str, float]], samples: int) -> int:
        """Characters of ``text`` whose words ended inside the audio delivered."""
        delivered = samples / self.sample_rate
        return spoken_chars(text, [w for w, end in words if isinstance(end, (int, float)) and end <= delivered])


