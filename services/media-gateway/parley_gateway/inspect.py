"""Watch any session from the browser: the inspector for calls that have no
page of their own (phone calls), or for looking at a call after it ended.

``GET /api/sessions`` lists the sessions with a recorded log;
``GET /api/callbacks`` lists the front desk's call-back tasks (requests the
agent could not serve, recorded by the orchestrator's ``request_callback``);
``GET /api/recordings`` lists the call recordings (``recording.py``),
``GET /api/recordings/{session}`` says whether that call was recorded, and
``GET /api/recordings/{session}.wav`` is the recording itself (a call still
going on included: its header is made from what is on disk so far);
``WS /ws/inspect/{session}`` sends the same JSON notices the caller's page
gets: every recorded step from the session's event log (JetStream, from the
start, then live), plus the latency and barge-in notices the gateway that
carries the call derives. The page at ``/?watch=SESSION`` renders them.

What callers said is private: every route needs the gateway's
PARLEY_INSPECT_TOKEN, in an ``Authorization: Bearer`` header or in the
HttpOnly cookie ``POST /api/inspect/login`` sets (the page asks for the token
once); never in a URL, where proxy logs and browser history would keep it.
Without a token configured the inspector is off. Who watched which call, and
from where, is logged (``inspector watching``). (``make run`` makes a token
and prints it.)
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.requests import HTTPConnection

from parley import contract, subjects

from . import auth, recording
from .call import notices_for
from .settings import Settings

log = logging.getLogger("parley.gateway")


def allowed(settings: Settings, request: HTTPConnection) -> bool:
    """The inspector token in the request's Authorization header or cookie."""
    return auth.inspector_ok(settings.inspect_token, request.headers, request.cookies)


REFUSED = "the inspector needs PARLEY_INSPECT_TOKEN: as 'Authorization: Bearer <token>', or log in on the page (/?watch) for a cookie (unset: the inspector is off)"
COOKIE_AGE = 12 * 3600


def _who(request: HTTPConnection) -> str | None:
    return request.client.host if request.client else None


def register(app: FastAPI, state: dict, settings: Settings) -> None:
    @app.post("/api/inspect/login")
    async def login(request: Request):
        """Trade the token for an HttpOnly, SameSite=Strict cookie (the page's way in)."""
        try:
            state["gate"].rate.take(f"inspect-login {_who(request)}", state["gate"].now())
        except auth.Refused as refused:
            return JSONResponse({"error": str(refused)}, status_code=refused.status)
        try:
            body = json.loads(await request.body() or b"{}")
            token = body.get("token", "") if isinstance(body, dict) else ""
        except ValueError:
            token = ""
        if not settings.inspect_token or not isinstance(token, str) or not hmac.compare_digest(token.encode(), settings.inspect_token.encode()):
            log.warning("inspector log-in refused", extra={"client": _who(request)})
            state["stats"]["inspect_login_refused"] = state["stats"].get("inspect_login_refused", 0) + 1
            return JSONResponse({"error": "wrong inspector token" if settings.inspect_token else REFUSED}, status_code=403)
        log.info("inspector logged in", extra={"client": _who(request)})
        reply = JSONResponse({"ok": True})
        reply.set_cookie(
            auth.INSPECT_COOKIE, auth.inspect_cookie(settings.inspect_token), max_age=COOKIE_AGE, httponly=True, samesite="strict",
            secure=request.url.scheme == "https", path="/",
        )
        return reply

    @app.post("/api/inspect/logout")
    async def logout():
        reply = JSONResponse({"ok": True})
        reply.delete_cookie(auth.INSPECT_COOKIE, path="/")
        return reply

    @app.get("/api/sessions")
    async def sessions(request: Request):
        if not allowed(settings, request):
            return JSONResponse({"error": REFUSED}, status_code=403)
        log.info("inspector listed sessions", extra={"client": _who(request)})
        # The sessions with recorded steps, from the log stream's subjects (the
        # gateway has no access to the session state bucket: parley.natsauth).
        try:
            info = await state["nc"].jetstream().stream_info(subjects.LOG_STREAM, subjects_filter=subjects.LOG_ALL)
            keys = [subjects.session_of(s) for s in (info.state.subjects or {})]
        except Exception:  # noqa: BLE001 - no stream yet
            keys = []
        return {"sessions": sorted(keys)[-200:]}

    @app.get("/api/callbacks")
    async def callbacks(request: Request):
        """The front desk's call-back tasks: what callers asked for that the
        agent could not do itself (kept by the orchestrator)."""
        if not allowed(settings, request):
            return JSONResponse({"error": REFUSED}, status_code=403)
        log.info("inspector listed call-back tasks", extra={"client": _who(request)})
        try:
            reply = await state["nc"].request(subjects.ORCHESTRATOR_CALLBACKS, b"", timeout=3)
            body = json.loads(reply.data)
        except Exception as exc:  # noqa: BLE001 - no orchestrator answering
            log.warning("call-back tasks unavailable: %s", exc)
            return JSONResponse({"error": "the orchestrator did not answer"}, status_code=503)
        return JSONResponse(body, status_code=503 if "error" in body else 200)

    @app.get("/api/recordings")
    async def recordings(request: Request):
        if not allowed(settings, request):
            return JSONResponse({"error": REFUSED}, status_code=403)
        log.info("inspector listed recordings", extra={"client": _who(request)})
        folder = settings.data_dir / "recordings"
        return {"recordings": await asyncio.to_thread(recording.listing, folder), "mode": settings.recordings}

    @app.get("/api/recordings/{name}")
    async def one_recording(name: str, request: Request):
        """``SESSION``: what is known of its recording (404: none);
        ``SESSION.wav``: the audio."""
        if not allowed(settings, request):
            return JSONResponse({"error": REFUSED}, status_code=403)
        log.info("inspector opened a recording", extra={"session_id": name[:68], "client": _who(request)})
        session, wav = (name[:-4], True) if name.endswith(".wav") else (name, False)
        try:
            subjects.session_token(session)
        except ValueError:
            return JSONResponse({"error": "invalid session id"}, status_code=400)
        path = settings.data_dir / "recordings" / f"{session}.wav"
        meta = await asyncio.to_thread(recording.read_meta, path)
        if not path.exists():
            return JSONResponse({"error": f"no recording of {session}"}, status_code=404)
        if not wav:
            return {"session": session, **meta, "audio": f"/api/recordings/{session}.wav"}
        if meta.get("finished"):
            return FileResponse(path, media_type="audio/wav", filename=f"{session}.wav")
        return _live_wav(path, session)

    @app.websocket("/ws/inspect/{session}")
    async def inspect(ws: WebSocket, session: str):
        await ws.accept()
        if not allowed(settings, ws) or not auth.origin_ok(ws.headers.get("origin"), ws.headers.get("host"), settings.allowed_origins):
            log.warning("inspector refused", extra={"client": _who(ws), "session_id": session[:64]})
            await ws.send_text(json.dumps({"type": "error", "error": REFUSED}))
            await ws.close(1008)
            return
        try:
            subjects.session_token(session)
        except ValueError:
            await ws.send_text(json.dumps({"type": "error", "error": "invalid session id"}))
            await ws.close(1008)
            return
        # Watching a call shows what a caller said: who watched is on record.
        log.info("inspector watching", extra={"session_id": session, "client": _who(ws)})
        state["stats"]["inspect_watches"] = state["stats"].get("inspect_watches", 0) + 1
        await watch(ws, state["nc"], session, state["stats"])


BACKLOG = 10_000  # notices waiting for a watcher that does not read: it is closed
SEND_TIMEOUT = 5.0  # one notice not taken in this long: the watcher is not reading


# long: one watcher's socket: its two tasks and the overflow close, in one try/finally
async def watch(ws: WebSocket, nc, session: str, stats: dict | None = None) -> None:
    """Send the session's notices until the watcher leaves. A watcher that
    falls ``BACKLOG`` notices behind is told why and closed (1008), logged
    and counted (``inspect_error_backlog``): it never holds the call up, and
    it is never left with a silently incomplete view."""
    stats = stats if stats is not None else {}
    outbox: asyncio.Queue = asyncio.Queue(maxsize=BACKLOG)
    overflow = asyncio.Event()

    def offer(text: str) -> None:
        if outbox.full():
            overflow.set()
        else:
            outbox.put_nowait(text)

    async def on_step(msg) -> None:
        try:
            step = contract.decode_step(msg.data)
        except (contract.DecodeError, contract.ValidationError):
            return
        for notice in notices_for(step):
            offer(json.dumps(notice))

    async def on_notice(msg) -> None:
        offer(msg.data.decode(errors="replace"))

    js = nc.jetstream()
    subs = [
        await js.subscribe(subjects.log(session), ordered_consumer=True, cb=on_step),
        await nc.subscribe(subjects.notices(session), cb=on_notice),
    ]
    await ws.send_text(json.dumps({"type": "session", "session": session, "watching": True}))
    receiver = asyncio.create_task(_until_closed(ws), name="inspect-receiver")
    behind = asyncio.create_task(overflow.wait(), name="inspect-overflow")
    try:
        while not receiver.done():
            getter = asyncio.create_task(outbox.get(), name="inspect-get")
            done, _ = await asyncio.wait({getter, receiver, behind}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                try:
                    await asyncio.wait_for(ws.send_text(getter.result()), SEND_TIMEOUT)
                    continue
                except asyncio.TimeoutError:
                    overflow.set()
            getter.cancel()
            if overflow.is_set():
                reason = f"the inspector is not reading (more than {BACKLOG} notices behind, or none taken in {SEND_TIMEOUT:g} s)"
                log.warning("inspector closed: %s", reason, extra={"session_id": session})
                stats["inspect_error_backlog"] = stats.get("inspect_error_backlog", 0) + 1
                await asyncio.wait_for(ws.send_text(json.dumps({"type": "error", "error": reason})), 2)
                await asyncio.wait_for(ws.close(1008, reason), 2)
                break
    except (WebSocketDisconnect, RuntimeError, asyncio.TimeoutError):
        pass
    finally:
        for task in (receiver, behind):
            task.cancel()
        await asyncio.gather(receiver, behind, return_exceptions=True)
        for sub in subs:
            try:
                await sub.unsubscribe()
            except Exception:  # noqa: BLE001
                pass


async def _until_closed(ws: WebSocket) -> None:
    while True:
        msg = await ws.receive()
        if msg["type"] == "websocket.disconnect":
            return


def _live_wav(path, session: str) -> StreamingResponse:
    """A recording still being written: its header says 0 until the end, so
    send one made from what is on disk now, then that much audio."""
    size = os.path.getsize(path)
    data = max(0, size - recording.HEADER) // 4 * 4

    def chunks():
        yield recording.wav_header(data)
        with open(path, "rb") as f:
            f.seek(recording.HEADER)
            left = data
            while left > 0:
                block = f.read(min(left, 1 << 16))
                if not block:
                    return
                left -= len(block)
                yield block

    headers = {"Content-Length": str(recording.HEADER + data), "Content-Disposition": f'inline; filename="{session}.wav"'}
    return StreamingResponse(chunks(), media_type="audio/wav", headers=headers)
