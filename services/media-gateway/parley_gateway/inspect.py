"""Watch any session from the browser: the inspector for calls that have no
page of their own (phone calls), or for looking at a call after it ended.

``GET /api/sessions`` lists the sessions whose state is in KV;
``WS /ws/inspect/{session}`` sends the same JSON notices the caller's page
gets: every recorded step from the session's event log (JetStream, from the
start, then live), plus the latency and barge-in notices the gateway that
carries the call derives. The page at ``/?watch=SESSION`` renders them.

What callers said is private: both need ``?token=`` equal to the gateway's
PARLEY_INSPECT_TOKEN, and without one configured the inspector is off.
(``make run`` makes a token and prints the inspector's URL.)
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from parley import contract, subjects

from .call import notices_for
from .settings import Settings

log = logging.getLogger("parley.gateway")


def allowed(settings: Settings, token: str | None) -> bool:
    return bool(settings.inspect_token) and hmac.compare_digest((token or "").encode(), settings.inspect_token.encode())


REFUSED = "the inspector needs ?token= equal to PARLEY_INSPECT_TOKEN (unset: the inspector is off)"


def register(app: FastAPI, state: dict, settings: Settings) -> None:
    @app.get("/api/sessions")
    async def sessions(token: str | None = None):
        if not allowed(settings, token):
            return JSONResponse({"error": REFUSED}, status_code=403)
        try:
            kv = await state["nc"].jetstream().key_value(subjects.SESSIONS_BUCKET)
            keys = await kv.keys()
        except Exception:  # noqa: BLE001 - no bucket or no keys yet
            keys = []
        return {"sessions": sorted(keys)[-200:]}

    @app.websocket("/ws/inspect/{session}")
    async def inspect(ws: WebSocket, session: str, token: str | None = None):
        await ws.accept()
        if not allowed(settings, token):
            await ws.send_text(json.dumps({"type": "error", "error": REFUSED}))
            await ws.close(1008)
            return
        try:
            subjects.session_token(session)
        except ValueError:
            await ws.send_text(json.dumps({"type": "error", "error": "invalid session id"}))
            await ws.close(1008)
            return
        await watch(ws, state["nc"], session)


async def watch(ws: WebSocket, nc, session: str) -> None:
    outbox: asyncio.Queue = asyncio.Queue(maxsize=10_000)

    async def on_step(msg) -> None:
        try:
            step = contract.decode_step(msg.data)
        except (contract.DecodeError, contract.ValidationError):
            return
        for notice in notices_for(step):
            _offer(outbox, json.dumps(notice))

    async def on_notice(msg) -> None:
        _offer(outbox, msg.data.decode(errors="replace"))

    js = nc.jetstream()
    subs = [
        await js.subscribe(subjects.log(session), ordered_consumer=True, cb=on_step),
        await nc.subscribe(subjects.notices(session), cb=on_notice),
    ]
    await ws.send_text(json.dumps({"type": "session", "session": session, "watching": True}))
    receiver = asyncio.create_task(_until_closed(ws))
    try:
        while not receiver.done():
            getter = asyncio.create_task(outbox.get())
            done, _ = await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                await ws.send_text(getter.result())
            else:
                getter.cancel()
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        receiver.cancel()
        for sub in subs:
            try:
                await sub.unsubscribe()
            except Exception:  # noqa: BLE001
                pass


def _offer(outbox: asyncio.Queue, text: str) -> None:
    if not outbox.full():  # a watcher this far behind loses notices, never the call
        outbox.put_nowait(text)


async def _until_closed(ws: WebSocket) -> None:
    while True:
        msg = await ws.receive()
        if msg["type"] == "websocket.disconnect":
            return
