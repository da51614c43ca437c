"""Adapter: ElevenLabs' multi-context TTS WebSocket, hand-written.

From elevenlabs.io/docs ("Multi-Context WebSocket" API reference and its
guide):

    connect  {base}/v1/text-to-speech/{voice_id}/multi-stream-input
             ?model_id=&output_format=pcm_24000&sync_alignment=true&auto_mode=true&inactivity_timeout=60
             header xi-api-key: KEY
    send     {"text": "... ", "context_id"}            text for a context (the first opens it)
             {"context_id", "flush": true}             generate what was sent, now
             {"context_id", "close_context": true}     stop and forget a context (a barge-in)
             {"close_socket": true}
    receive  {"audio": base64 PCM, "isFinal": false, "contextId", "alignment": {"chars",
              "charStartTimesMs", "charDurationsMs"}}
             {"isFinal": true, "contextId"}           the context's audio is complete

A socket carries at most ``MAX_CONTEXTS`` (5) contexts at once, so the
adapter keeps a small pool and opens another socket when every one is full.
A chunk is one context: its text, a flush, the audio until ``isFinal``, then
``close_context``; a chunk closed early (a cancelled run) is closed at the
provider, which stops generating it. ``alignment`` gives the characters each
piece of audio carries, so a failure mid-chunk knows how much was said. The
same failures as Cartesia's (``ProviderError``): a refused handshake (401,
429), a dropped socket, an error message, no audio within ``first_audio_s``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import json
import logging
from typing import AsyncIterator
from urllib.parse import quote, urlencode

from websockets.exceptions import ConnectionClosed

from parley.providers import ProviderError, kind_of_status

from .. import audio
from ..lanes import Job
from .websocket import open_socket

log = logging.getLogger("parley_tts.elevenlabs")

MAX_CONTEXTS = 5


class _Socket:
    def __init__(self, ws):
        self.ws = ws
        self.contexts: dict[str, asyncio.Queue] = {}
        self.reader: asyncio.Task | None = None
        self.open = True


class ElevenLabs:
    name = "elevenlabs"
    cloud = True

    def __init__(
        self, *, base: str, api_key: str, model: str, voice: str, sample_rate: int = 24000,
        first_audio_s: float = 1.5, piece_ms: float = 200.0,
    ):  # fmt: skip
        query = {"model_id": model, "output_format": f"pcm_{sample_rate}", "sync_alignment": "true", "auto_mode": "true", "inactivity_timeout": 60}
        self.url = f"{base.rstrip('/')}/v1/text-to-speech/{quote(voice, safe='')}/multi-stream-input?{urlencode(query)}"
        self.api_key = api_key
        self.sample_rate = sample_rate
        self.first_audio_s = first_audio_s
        self.max_samples = audio.samples_for_ms(piece_ms, sample_rate)
        self._sockets: list[_Socket] = []
        self._opening: asyncio.Lock | None = None
        self._ids = itertools.count()

    async def start(self) -> None:
        try:
            await self._socket()
        except ProviderError as exc:
            log.warning("elevenlabs not reachable at start: %s", exc, extra={"provider": self.name, "error": str(exc)})

    async def _socket(self) -> _Socket:
        """A socket with room for one more context (a new one if all are full)."""
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            for s in self._sockets:
                if s.open and len(s.contexts) < MAX_CONTEXTS:
                    return s
            s = _Socket(await open_socket(self.name, self.url, {"xi-api-key": self.api_key}, self.first_audio_s))
            s.reader = asyncio.create_task(self._read(s), name="elevenlabs-reader")
            self._sockets.append(s)
            return s

    async def _read(self, s: _Socket) -> None:
        why = "closed"
        try:
            async for raw in s.ws:
                try:
                    msg = json.loads(raw)
                    context = msg.get("contextId") or msg.get("context_id") or ""
                except (ValueError, AttributeError):
                    log.warning("elevenlabs sent something that is not a JSON object: dropped", extra={"provider": self.name})
                    continue
                queue = s.contexts.get(context)
                if queue is not None:
                    queue.put_nowait(msg)
                elif msg.get("error") and not context:
                    # An error for the socket itself: every context on it fails.
                    for q in s.contexts.values():
                        q.put_nowait(msg)
        except ConnectionClosed as exc:
            why = f"socket closed ({exc.rcvd.code} {exc.rcvd.reason})".strip() if exc.rcvd else "socket dropped (no close frame)"
        except Exception as exc:  # noqa: BLE001
            why = f"socket broke: {exc!r}"
        finally:
            s.open = False
            if s in self._sockets:
                self._sockets.remove(s)
            for q in s.contexts.values():
                q.put_nowait(ProviderError(self.name, "dropped", why))

    async def aclose(self) -> None:
        for s in list(self._sockets):
            try:
                await s.ws.send(json.dumps({"close_socket": True}))
                await s.ws.close()
            except Exception:  # noqa: BLE001
                pass
            if s.reader is not None:
                await asyncio.gather(s.reader, return_exceptions=True)
        self._sockets = []

    def close(self) -> None:
        pass

    # long: one chunk over ElevenLabs' WebSocket protocol: request, audio and alignment, final and error in one place
    async def stream(self, job: Job) -> AsyncIterator[bytes]:
        context = f"{job.session}-{job.run}-{job.chunk}-{next(self._ids)}"
        queue: asyncio.Queue = asyncio.Queue()
        spoken = 0
        carry = b""
        s = await self._socket()
        s.contexts[context] = queue
        try:
            try:
                await s.ws.send(json.dumps({"text": job.text.strip() + " ", "context_id": context}))
                await s.ws.send(json.dumps({"context_id": context, "flush": True}))
            except ConnectionClosed as exc:
                raise ProviderError(self.name, "dropped", f"socket closed before the request: {exc}") from None
            samples = 0
            while True:
                try:
                    msg = await asyncio.wait_for(queue.get(), self.first_audio_s)
                except asyncio.TimeoutError:
                    what = "no audio" if samples == 0 else "no more audio"
                    raise ProviderError(self.name, "timeout", f"{what} within {self.first_audio_s:g} s", spoken=spoken) from None
                if isinstance(msg, ProviderError):
                    msg.spoken = spoken
                    raise msg
                if msg.get("error"):
                    status = int(msg.get("code") or msg.get("status_code") or 500) if str(msg.get("code") or "").isdigit() else 500
                    raise ProviderError(self.name, kind_of_status(status), f"error: {str(msg.get('message') or msg.get('error'))[:200]}", spoken=spoken)
                if msg.get("audio"):
                    try:
                        pcm = carry + base64.b64decode(msg["audio"], validate=True)
                    except (binascii.Error, ValueError, TypeError):
                        raise ProviderError(self.name, "refused", "audio that is not base64", spoken=spoken) from None
                    pcm, carry = pcm[: len(pcm) // 2 * 2], pcm[len(pcm) // 2 * 2 :]
                    samples += len(pcm) // 2
                    for piece in audio.split(pcm, self.max_samples):
                        yield piece
                    chars = (msg.get("alignment") or {}).get("chars") or []
                    spoken = min(len(job.text), spoken + len(chars))
                if msg.get("isFinal") or msg.get("is_final"):
                    return
        finally:
            s.contexts.pop(context, None)
            if s.open:
                # Done: free the context. Closed early or failed: stop generating it.
                try:
                    await s.ws.send(json.dumps({"context_id": context, "close_context": True}))
                except Exception:  # noqa: BLE001 - the socket is going; the reader reports it
                    pass
