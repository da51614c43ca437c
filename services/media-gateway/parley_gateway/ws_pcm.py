"""``/ws/pcm``: the simplest transport, for the browser page, tools and tests.

Client -> server: binary messages of PCM16 LE mono 16 kHz, any length; text
messages of JSON ``{"type": "dtmf", "digit": "5"}`` or ``{"type": "hangup"}``.
Server -> client: binary messages of PCM16 LE mono 16 kHz agent audio, paced in
real time in 20 ms frames; text messages of JSON objects with a ``type``
(``session``, ``step``, ``state``, ``transcript``, ``agent_text``,
``tool_call``, ``tool_result``, ``interrupted``, ``error``, ``end``).
"""

from __future__ import annotations

import asyncio
import json
import logging

from fastapi import WebSocket, WebSocketDisconnect

from parley.audio import Mark

from .call import Call

log = logging.getLogger("parley.gateway")

OUTBOX_LIMIT = 500  # 10 s of frames: a client this far behind is gone


class PcmSocket:
    kind = "pcm"
    rate = 16000
    reports_playback = False

    def __init__(self, ws: WebSocket):
        self.ws = ws
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.call: Call | None = None
        self.closing = False

    def tick(self) -> None:
        frame = self.call.next_frame() if self.call else None
        if frame is not None:
            self._put(frame)

    def _put(self, item) -> None:
        if self.outbox.qsize() > OUTBOX_LIMIT:
            raise RuntimeError("client is not reading")
        self.outbox.put_nowait(item)

    async def send_frame(self, frame: bytes) -> None:
        self._put(frame)

    async def send_notice(self, notice: dict) -> None:
        self._put(json.dumps(notice))

    async def on_mark(self, mark: Mark) -> None:
        pass

    async def on_flush(self, run: int) -> None:
        pass

    async def close(self, reason: str) -> None:
        self.closing = True
        self._put(None)

    async def sender(self) -> None:
        while True:
            item = await self.outbox.get()
            if item is None:
                await self.ws.close(1000)
                return
            if isinstance(item, bytes):
                await self.ws.send_bytes(item)
            else:
                await self.ws.send_text(item)


async def serve(ws: WebSocket, nc, ticker, stats: dict) -> None:
    await ws.accept()
    transport = PcmSocket(ws)
    call = Call(nc, transport, stats=stats)
    transport.call = call
    params = {k: v for k, v in ws.query_params.items() if k not in ("token",)}
    sender = asyncio.create_task(transport.sender())
    reason = "hangup"
    try:
        try:
            await call.start(params=params)
        except RuntimeError as exc:
            await ws.send_text(json.dumps({"type": "error", "error": str(exc)}))
            await ws.close(1011)
            return
        await transport.send_notice({"type": "session", "session": call.session})
        ticker.add(transport)
        while not transport.closing:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                break
            if msg.get("bytes") is not None:
                try:
                    await call.feed(msg["bytes"])
                except ValueError as exc:
                    await transport.send_notice({"type": "error", "error": str(exc)})
            elif msg.get("text") is not None:
                await _on_text(call, transport, msg["text"])
                if transport.closing:
                    reason = "client hung up"
    except WebSocketDisconnect:
        pass
    except RuntimeError as exc:
        reason = f"error: {exc}"
    finally:
        ticker.remove(transport)
        await call.end(reason)
        sender.cancel()


async def _on_text(call: Call, transport: PcmSocket, text: str) -> None:
    try:
        msg = json.loads(text)
        kind = msg["type"]
    except (ValueError, KeyError, TypeError):
        await transport.send_notice({"type": "error", "error": "text messages must be JSON objects with a 'type'"})
        return
    if kind == "dtmf" and isinstance(msg.get("digit"), str) and len(msg["digit"]) == 1 and msg["digit"] in "0123456789*#":
        await call.dtmf(msg["digit"])
    elif kind == "hangup":
        await transport.close("client hung up")
    else:
        await transport.send_notice({"type": "error", "error": f"unknown message type {kind!r}"})
