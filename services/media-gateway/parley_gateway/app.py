"""The media gateway's FastAPI app: the browser page and the transports."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path

from fastapi import FastAPI, WebSocket
from fastapi.responses import FileResponse, JSONResponse

from parley import bus, subjects, telemetry

from . import inspect, outbound, twilio_media, webrtc, ws_pcm
from .call import Ticker
from .recording import Recordings
from .settings import Settings
from .tasks import TaskSet

log = logging.getLogger("parley.gateway")
STATIC = Path(__file__).parent / "static"
HOUSEKEEPING_S = 3600.0  # how often old recordings are looked for


def create_app(settings: Settings) -> FastAPI:
    state: dict = {"stats": {}}
    tel = telemetry.setup("media-gateway")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        nc = await bus.connect(settings.nats_url, name="media-gateway", credentials=settings.nats_credentials)
        recordings = Recordings(settings.data_dir / "recordings", settings.recordings, settings.recordings_keep_days, state["stats"])
        recordings.open()
        tasks = TaskSet(state["stats"])
        tasks.spawn(_housekeeping(recordings), "recordings-housekeeping")
        state.update(nc=nc, ticker=Ticker(state["stats"]), recordings=recordings)
        log.info("gateway ready", extra={"url": f"http://{settings.http_host}:{settings.http_port}/", "recordings": settings.recordings})
        try:
            yield
        finally:
            tasks.cancel()
            await nc.drain()
            await asyncio.to_thread(recordings.close)  # what is queued reaches the disk
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
        await ws_pcm.serve(ws, state["nc"], state["ticker"], state["stats"], state.get("recordings"))

    webrtc.register(app, state, settings)
    twilio_media.register(app, state, settings)
    outbound.register(app, state, settings)
    inspect.register(app, state, settings)
    return app


async def _housekeeping(recordings: Recordings) -> None:
    """Old recordings go, hourly (the first sweep ran at start)."""
    while True:
        await asyncio.sleep(HOUSEKEEPING_S)
        recordings.housekeeping()
