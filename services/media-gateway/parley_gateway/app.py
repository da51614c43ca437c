"""The media gateway's FastAPI app: the browser page and the transports."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

from fastapi import FastAPI, WebSocket
from fastapi.responses import FileResponse, JSONResponse

from parley import bus, subjects, telemetry

from . import inspect, outbound, twilio_media, webrtc, ws_pcm
from .call import Ticker
from .settings import Settings

log = logging.getLogger("parley.gateway")
STATIC = Path(__file__).parent / "static"


def create_app(settings: Settings) -> FastAPI:
    state: dict = {"stats": {}}
    tel = telemetry.setup("media-gateway")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        nc = await bus.connect(settings.nats_url, name="media-gateway", credentials=settings.nats_credentials)
        state.update(nc=nc, ticker=Ticker(state["stats"]))
        log.info("gateway ready", extra={"url": f"http://{settings.http_host}:{settings.http_port}/"})
        try:
            yield
        finally:
            await nc.drain()
            telemetry.shutdown()

    app = FastAPI(title="Parley media gateway", lifespan=lifespan)
    tel.add_metrics_route(app)
    app.state.parley = state

    @app.get("/healthz")
    async def healthz():
        nc = state.get("nc")
        if nc is None or not nc.is_connected:
            return JSONResponse({"ok": False}, status_code=503)
        return {"ok": True, "stats": state["stats"]}

    @app.get("/")
    async def index():
        return FileResponse(STATIC / "index.html")

    @app.get("/api/info")
    async def info():
        try:
            reply = await state["nc"].request(subjects.ORCHESTRATOR_INFO, b"", timeout=2)
            return json.loads(reply.data)
        except Exception:  # noqa: BLE001
            return JSONResponse({"brain": None, "error": "orchestrator not reachable"}, status_code=503)

    @app.websocket("/ws/pcm")
    async def pcm(ws: WebSocket):
        await ws_pcm.serve(ws, state["nc"], state["ticker"], state["stats"])

    webrtc.register(app, state, settings)
    twilio_media.register(app, state, settings)
    outbound.register(app, state, settings)
    inspect.register(app, state, settings)
    return app
