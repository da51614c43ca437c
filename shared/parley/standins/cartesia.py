"""A local stand-in for Cartesia's TTS WebSocket.

From docs.cartesia.ai ("Text to Speech (WebSocket)", "Contexts"):

* ``GET /tts/websocket`` upgraded to a WebSocket; the key comes as
  ``Authorization: Bearer KEY`` (or ``X-API-Key``), the API version as
  ``Cartesia-Version`` (or the ``cartesia_version`` query parameter). A
  missing or wrong key is refused at the handshake with HTTP 401.
* A generation request is a JSON text message with ``model_id``,
  ``transcript``, ``voice`` ``{"mode": "id", "id"}``, ``context_id``,
  ``output_format`` ``{"container": "raw", "encoding": "pcm_s16le",
  "sample_rate"}``, ``continue`` and optional ``add_timestamps``. Inputs with
  ``continue: true`` are concatenated verbatim until one with ``continue:
  false`` (possibly an empty transcript).
* Answers, each with the ``context_id``: ``{"type": "chunk", "data": base64,
  "done": false, "status_code": 206, "step_time"}``, ``{"type":
  "timestamps", "word_timestamps": {"words", "start", "end"}}``, ``{"type":
  "done", "done": true, "status_code": 206}``, and on failure ``{"type":
  "error", "done": true, "status_code", "title", "message", "error_code"}``.
* ``{"context_id", "cancel": true}`` stops the context: no more of its audio
  is sent. Contexts of one socket run side by side.

Audio is made by ``speak(text, rate)`` (a tone per word by default) and sent
in pieces of about 100 ms of audio, a little faster than real time.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Callable

from . import Faults, tone_speech
from .websocket_api import WebSocketApi, json_response

PIECE_S = 0.1
PACE = 0.25  # seconds of wall time per second of audio: 4x real time


class Cartesia(WebSocketApi):
    def __init__(self, key: str = "test-cartesia-key", speak: Callable[[str, int], bytes] = tone_speech, host: str = "127.0.0.1"):
        self.key = key
        self.speak = speak
        self.host = host
        self.port = 0
        self.faults = Faults()
        self.requests: list[dict] = []
        self.cancelled: list[str] = []
        self.finished: list[str] = []
        self.connections = 0
        self.pace = PACE  # wall seconds per second of audio (1.0: generates at real time)
        self.hold = False  # True: every context keeps its last piece (and its done) until this turns False
        self.refused: list[int] = []
        self._tasks: set[asyncio.Task] = set()

    # ---------------------------------------------------------------- handshake
    def _handshake(self, connection, request):
        if request.path.split("?")[0] != "/tts/websocket":
            return json_response(404, {"error": "Not found"})
        auth = request.headers.get("Authorization", "")
        key = auth[len("Bearer ") :] if auth.startswith("Bearer ") else request.headers.get("X-API-Key", "")
        if key != self.key:
            return self._refuse(401, {"error": "Invalid API key"})
        if not request.headers.get("Cartesia-Version") and "cartesia_version=" not in request.path:
            return self._refuse(400, {"error": "Cartesia-Version header is required"})
        return self._fault_refusal(lambda status: {"error": "Too many requests" if status == 429 else "refused"})

    # ---------------------------------------------------------------- messages
    async def _connection(self, ws) -> None:
        self.connections += 1
        contexts: dict[str, asyncio.Task] = {}
        pending: dict[str, str] = {}  # context -> transcript so far (continue: true)
        try:
            async for raw in ws:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    await ws.send(json.dumps({"type": "error", "done": True, "status_code": 400, "title": "Invalid JSON", "message": "could not parse the message"}))
                    continue
                context = msg.get("context_id", "")
                if msg.get("cancel"):
                    self.cancelled.append(context)
                    task = contexts.pop(context, None)
                    if task is not None:
                        task.cancel()
                    continue
                self.requests.append(msg)
                missing = [f for f in ("model_id", "voice", "output_format") if not msg.get(f)]
                if missing:
                    await ws.send(json.dumps({"type": "error", "done": True, "status_code": 400, "context_id": context,
                                              "title": "Invalid request", "message": f"missing {', '.join(missing)}"}))  # fmt: skip
                    continue
                pending[context] = pending.get(context, "") + (msg.get("transcript") or "")
                if msg.get("continue"):
                    continue
                text = pending.pop(context)
                task = asyncio.create_task(self._generate(ws, msg, context, text))
                contexts[context] = task
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except Exception:  # noqa: BLE001 - the client went away
            pass
        finally:
            for task in contexts.values():
                task.cancel()

    async def _generate(self, ws, msg: dict, context: str, text: str) -> None:
        fault = self.faults.next()
        fmt = msg["output_format"]
        rate = int(fmt.get("sample_rate") or 44100)
        if fault is not None and fault.in_band:
            await ws.send(json.dumps({"type": "error", "done": True, "status_code": fault.in_band, "context_id": context,
                                      "title": "Rate limited" if fault.in_band == 429 else "Error",
                                      "message": "Too many concurrent requests" if fault.in_band == 429 else "generation failed",
                                      "error_code": "rate_limited" if fault.in_band == 429 else "internal"}))  # fmt: skip
            return
        if fault is not None and fault.delay_first:
            await asyncio.sleep(fault.delay_first)
        pcm = self.speak(text, rate)
        if msg.get("add_timestamps"):
            words = text.split()
            total = len(pcm) / 2 / rate
            ends = [round(total * (i + 1) / max(1, len(words)), 3) for i in range(len(words))]
            starts = [0.0] + ends[:-1]
            await ws.send(json.dumps({"type": "timestamps", "done": False, "status_code": 206, "context_id": context,
                                      "word_timestamps": {"words": words, "start": starts, "end": ends}}))  # fmt: skip
        step = int(PIECE_S * rate) * 2
        sent = 0
        for i in range(0, len(pcm), step):
            piece = pcm[i : i + step]
            while self.hold and i + step >= len(pcm):  # a voice still generating the end of this context
                await asyncio.sleep(0.01)
            if fault is not None and fault.drop_after is not None and sent + len(piece) > fault.drop_after:
                ws.transport.abort()  # the socket breaks: no close frame
                return
            await ws.send(json.dumps({"type": "chunk", "data": base64.b64encode(piece).decode(), "done": False,
                                      "status_code": 206, "step_time": 12.5, "context_id": context}))  # fmt: skip
            sent += len(piece)
            await asyncio.sleep(PIECE_S * self.pace)
        await ws.send(json.dumps({"type": "done", "done": True, "status_code": 206, "context_id": context}))
        self.finished.append(context)
