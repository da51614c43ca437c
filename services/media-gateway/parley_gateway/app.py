"""The media gateway's FastAPI app: the browser page and the transports."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path

import msgspec
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse, Response

from parley import bus, instance, subjects, telemetry
from parley.load import LoadBoard, Reporter

from . import auth, inspect, outbound, twilio_media, webrtc, ws_pcm
from .admission import Admission
from .asr_watch import AsrWatch
from .call import Switchboard, Ticker
from .recording import Recordings
from .settings import Settings
from .tasks import TaskSet

log = logging.getLogger("parley.gateway")
STATIC = Path(__file__).parent / "static"
HOUSEKEEPING_S = 3600.0  # how often old recordings are looked for


class MintSession(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    params: dict[str, str] = {}


def _refuse(status: int, error: str) -> JSONResponse:
    return JSONResponse({"error": error}, status_code=status)


def _busy(admission: Admission, transport: str) -> JSONResponse:
    error = admission.refuse(transport)
    return JSONResponse({"error": error, "full": admission.which, "retry_after": admission.retry_after}, status_code=503, headers=admission.headers())


def _count(stats: dict, key: str) -> None:
    stats[key] = stats.get(key, 0) + 1


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def create_app(settings: Settings) -> FastAPI:
    gate = auth.Gate(
        grants=auth.Grants(ttl=settings.session_token_ttl),
        rate=auth.RateLimit(*settings.session_rate),
        allowed_params=settings.session_params,
        allowed_origins=settings.allowed_origins,
    )
    state: dict = {"stats": {}, "gate": gate}
    board = LoadBoard()  # the stack's load (parley.load): a call is refused when a service is full
    admission = state["admission"] = Admission(settings.max_calls, settings.busy_retry_after, state["stats"], board)
    tel = telemetry.setup("media-gateway", settings.otlp_endpoint)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        nc = await bus.connect(settings.nats_url, name="media-gateway", credentials=settings.nats_credentials, replicas=settings.nats_replicas)
        gate.shared = auth.SharedGrants(await _grants_bucket(nc, settings.session_token_ttl), ttl=settings.session_token_ttl)
        recordings = Recordings(settings.data_dir / "recordings", settings.recordings, settings.recordings_keep_days, state["stats"])
        recordings.open()
        tasks = TaskSet(state["stats"])
        tasks.spawn(_housekeeping(recordings), "recordings-housekeeping")
        state.update(nc=nc, ticker=Ticker(state["stats"]), recordings=recordings, asr_watch=AsrWatch(nc, stats=state["stats"]))
        state["switchboard"] = Switchboard(nc, state["stats"], tel, recordings, admission, state["asr_watch"])
        await board.start(nc)
        reporter = Reporter(nc, "gateway", instance.instance_id("gateway"), lambda: len(admission.calls), settings.max_calls)
        await reporter.start()
        log.info("gateway ready", extra={"url": f"http://{settings.http_host}:{settings.http_port}/", "recordings": settings.recordings})
        try:
            yield
        finally:
            await webrtc.hang_up_all(state, "gateway shutting down")  # while NATS still carries their last events
            await reporter.stop()
            await board.stop()
            tasks.cancel()
            state["asr_watch"].close()
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
        return {"ok": True, "service": "media-gateway", "calls": len(admission.calls), "max_calls": admission.limit, "load": board.snapshot(), "stats": state["stats"]}

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
        await ws_pcm.serve(ws, state["switchboard"], state["ticker"], gate)

    @app.post("/api/sessions")
    async def mint_session(request: Request):
        """A deployer's backend asks for a session: a one-time token (and the
        session's parameters, checked now, bound to it)."""
        stats = state["stats"]
        if not settings.api_key:
            return _refuse(503, "sessions are minted with an API key: set PARLEY_API_KEY on the gateway")
        if not auth.api_key_ok(settings.api_key, request.headers.get("authorization")):
            _count(stats, "api_sessions_unauthorized")
            log.warning("session token refused: bad or missing API key", extra={"client": _client(request)})
            return _refuse(401, "needs Authorization: Bearer <PARLEY_API_KEY>")
        if admission.full:
            return _busy(admission, "api")
        body = await request.body()
        try:
            req = msgspec.json.decode(body, type=MintSession) if body.strip() else MintSession()
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return _refuse(400, f'invalid request: {exc} (the body is optional JSON {{"params": {{"greeting": "..."}}}})')
        try:
            params = gate.params(req.params)
        except auth.Refused as refused:
            return _refuse(refused.status, str(refused))
        token, grant = await gate.mint(params, origin="api")
        _count(stats, "session_tokens")
        return JSONResponse({"token": token, "id": auth.grant_id(token), "expires_in": settings.session_token_ttl, "expires_at": grant.expires_at, "params": params}, status_code=201)

    @app.delete("/api/sessions/{grant}")
    async def revoke_session(grant: str, request: Request):
        """A deployer's backend takes back a token it minted and nobody used
        yet (``id`` from the mint's answer): any gateway replica refuses it
        from then on."""
        stats = state["stats"]
        if not settings.api_key or not auth.api_key_ok(settings.api_key, request.headers.get("authorization")):
            _count(stats, "api_sessions_unauthorized")
            log.warning("session revocation refused: bad or missing API key", extra={"client": _client(request)})
            return _refuse(401, "needs Authorization: Bearer <PARLEY_API_KEY>")
        outcome = await gate.revoke(grant)
        log.info("session token revocation", extra={"grant": grant[:12], "outcome": outcome})
        if outcome == "revoked":
            _count(stats, "session_tokens_revoked")
            return Response(status_code=204)
        if outcome == "used":
            return _refuse(409, "that token was already used: its session has started (hang it up instead)")
        return _refuse(404, "no unused session token with that id (never minted, or expired)")

    @app.post("/api/demo/session")
    async def demo_session(request: Request):
        """The page's own token, in the local demo mode only (make run)."""
        stats = state["stats"]
        client = _client(request)
        if not auth.demo_allows(settings.demo, client):
            _count(stats, "demo_refused")
            why = "this gateway is not in demo mode" if not settings.demo else f"demo mode {settings.demo!r} gives tokens to this machine only"
            return _refuse(403, f"{why}: a session needs a token from your backend (POST /api/sessions with PARLEY_API_KEY), passed to this page as #token=...")
        if "origin" not in request.headers:
            return _refuse(403, "demo tokens are for the gateway's own page (a browser request with an Origin)")
        if admission.full:
            return _busy(admission, "demo")
        try:
            auth.check_origin(request.headers, settings.allowed_origins)
            gate.rate.take(client or "unknown", gate.now())
        except auth.Refused as refused:
            return _refuse(refused.status, str(refused))
        token, grant = await gate.mint({}, origin="demo")
        _count(stats, "demo_tokens")
        return JSONResponse({"token": token, "expires_in": settings.session_token_ttl, "expires_at": grant.expires_at}, status_code=201)

    webrtc.register(app, state, settings)
    twilio_media.register(app, state, settings)
    outbound.register(app, state, settings)
    inspect.register(app, state, settings)
    return app


async def _grants_bucket(nc, ttl: float):
    """The session grants' KV bucket, shared by every gateway replica; entries
    live a little longer than a token (the expiry in each is checked too)."""
    from nats.js.api import KeyValueConfig, StorageType

    js = nc.jetstream()
    config = KeyValueConfig(bucket=subjects.GRANTS_BUCKET, history=1, ttl=ttl + 60, storage=StorageType.FILE, replicas=bus.replicas(nc))
    try:
        return await bus.through_election(lambda: js.create_key_value(config), "grants bucket not made")
    except Exception:  # noqa: BLE001 - made by another replica with another TTL: use it as it is
        return await js.key_value(subjects.GRANTS_BUCKET)


async def _housekeeping(recordings: Recordings) -> None:
    """Old recordings go, hourly (the first sweep ran at start)."""
    while True:
        await asyncio.sleep(HOUSEKEEPING_S)
        recordings.housekeeping()
