"""A local stand-in for ElevenLabs' multi-context TTS WebSocket.

From elevenlabs.io/docs ("Multi-Context WebSocket" reference and guide):

* ``GET /v1/text-to-speech/{voice_id}/multi-stream-input`` upgraded to a
  WebSocket, the key in ``xi-api-key`` (refused: HTTP 401 at the handshake);
  query ``model_id``, ``output_format`` (``pcm_16000``, ``pcm_22050``,
  ``pcm_24000``, ``pcm_44100``...), ``sync_alignment``, ``auto_mode``,
  ``inactivity_timeout``.
* Client messages: ``{"text", "context_id"}`` (the first opens the context;
  text accumulates), ``{"context_id", "flush": true}`` (generate it now),
  ``{"context_id", "close_context": true}`` (stop it: nothing more of it is
  sent), ``{"close_socket": true}``.
* Server messages: ``{"audio": base64, "isFinal": false, "contextId",
  "alignment": {"chars", "charStartTimesMs", "charDurationsMs"}}`` (with
  sync_alignment), then ``{"isFinal": true, "contextId"}``.
* At most 5 contexts per socket: a sixth gets an error message for it.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from . import Faults, tone_speech
from .websocket_api import WebSocketApi, json_response

PIECE_S = 0.1


class ElevenLabs(WebSocketApi):
    def __init__(self, key: str = "test-elevenlabs-key", speak: Callable[[str, int], bytes] = tone_speech, host: str = "127.0.0.1"):
        self.key = key
        self.speak = speak
        self.host = host
        self.port = 0
        self.pace = 0.25
        self.faults = Faults()
        self.connections: list[dict] = []  # per socket: path query, voice
        self.texts: dict[str, str] = {}
        self.closed_contexts: list[str] = []
        self.finished: list[str] = []
        self.refused: list[int] = []

    def _handshake(self, connection, request):
        parts = urlsplit(request.path).path.strip("/").split("/")
        if len(parts) != 4 or parts[:2] != ["v1", "text-to-speech"] or parts[3] != "multi-stream-input":
            return json_response(404, {"detail": "Not found"})
        if request.headers.get("xi-api-key") != self.key:
            return self._refuse(401, {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}})
        return self._fault_refusal(lambda status: {"detail": {"status": "too_many_concurrent_requests", "message": "Too many requests"}})

    async def _connection(self, ws) -> None:
        url = urlsplit(ws.request.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.connections.append({"voice": url.path.split("/")[3], **query})
        rate = int(query.get("output_format", "mp3_44100_128").split("_")[1]) if query.get("output_format", "").startswith("pcm_") else 24000
        align = query.get("sync_alignment") == "true"
        contexts: dict[str, str] = {}
        tasks: dict[str, asyncio.Task] = {}
        try:
            async for raw in ws:
                msg = json.loads(raw)
                if msg.get("close_socket"):
                    await ws.close(1000, "")
                    return
                ctx = msg.get("context_id", "")
                if msg.get("close_context"):
                    self.closed_contexts.append(ctx)
                    contexts.pop(ctx, None)
                    task = tasks.pop(ctx, None)
                    if task is not None:
                        task.cancel()
                    continue
                if "text" in msg:
                    if ctx not in contexts and len(contexts) >= 5:
                        await ws.send(json.dumps({"error": "max_contexts_exceeded", "message": "at most 5 contexts per socket", "contextId": ctx}))
                        continue
                    contexts[ctx] = contexts.get(ctx, "") + msg["text"]
                    self.texts[ctx] = contexts[ctx]
                if msg.get("flush") and ctx in contexts and ctx not in tasks:
                    tasks[ctx] = asyncio.create_task(self._generate(ws, ctx, contexts[ctx].strip(), rate, align))
        except Exception:  # noqa: BLE001 - the client went away
            pass
        finally:
            for t in tasks.values():
                t.cancel()

    async def _generate(self, ws, ctx: str, text: str, rate: int, align: bool) -> None:
        fault = self.faults.next()
        if fault is not None and fault.delay_first:
            await asyncio.sleep(fault.delay_first)
        if fault is not None and fault.in_band:
            await ws.send(json.dumps({"error": "rate_limited" if fault.in_band == 429 else "error", "code": fault.in_band, "message": "Too many requests", "contextId": ctx}))
            return
        words = text.split(" ")
        sent = 0
        for i, word in enumerate(words):
            chars = word + (" " if i < len(words) - 1 else "")
            pcm = self.speak(word, rate)
            if fault is not None and fault.drop_after is not None and sent + len(pcm) > fault.drop_after:
                ws.transport.abort()
                return
            msg = {"audio": base64.b64encode(pcm).decode(), "isFinal": False, "contextId": ctx}
            if align:
                n = len(chars)
                ms = len(pcm) / 2 / rate * 1000
                msg["alignment"] = {"chars": list(chars), "charStartTimesMs": [round(ms * k / n) for k in range(n)], "charDurationsMs": [round(ms / n)] * n}
            await ws.send(json.dumps(msg))
            sent += len(pcm)
            await asyncio.sleep(len(pcm) / 2 / rate * self.pace)
        await ws.send(json.dumps({"isFinal": True, "contextId": ctx}))
        self.finished.append(ctx)
