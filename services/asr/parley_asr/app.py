"""The ASR service's FastAPI app: health, stats, and the worker's lifetime.

The lifespan loads the models (Silero always; Whisper and the end-of-turn
model unless PARLEY_PROVIDERS=fixed) off the event loop, connects to NATS and starts the
worker. /healthz answers 503 until all of that is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from parley import bus, telemetry
from parley.load import Reporter

from .settings import Settings
from . import smart_turn
from .smart_turn import SmartTurn
from .transcription import Transcriber
from .vad import SileroVad
from .worker import Worker

log = logging.getLogger("parley_asr")


def cloud_provider(settings: Settings):
    """The cloud provider PARLEY_ASR names (None: Whisper hears the words)."""
    if not settings.cloud:
        return None
    if settings.provider == "deepgram":
        from .providers.deepgram import Deepgram

        return Deepgram(base=settings.base, api_key=settings.api_key, model=settings.model_name, timeout_s=settings.cloud_timeout_s)
    from .providers.openai_transcribe import OpenAITranscription

    return OpenAITranscription(base=settings.base, api_key=settings.api_key, model=settings.model_name, timeout_s=settings.cloud_timeout_s)


def load_models(settings: Settings) -> tuple[SileroVad, Transcriber | None, Transcriber | None]:
    """Silero; Whisper unless in fixed mode (with a cloud provider: only as
    its fallback, one lane); a second Whisper for finals if configured."""
    vad = SileroVad(batched=settings.vad_batched)
    if settings.fixed:
        return vad, None, None
    if settings.cloud:
        return vad, (load_whisper(settings) if settings.fallback == "whisper" else None), None
    whisper = load_whisper(settings)
    finals = load_whisper(settings) if settings.final_lane else None
    return vad, whisper, finals


def load_whisper(settings: Settings) -> Transcriber:
    from .whisper import WhisperTranscriber

    model = WhisperTranscriber(
        path=settings.whisper_path(),
        cpu_threads=settings.whisper_threads,
        min_window_ms=settings.whisper_window_ms,
        pad_ms=settings.whisper_pad_ms,
        fallback=settings.whisper_fallback,
        floor_clip_ms=settings.floor_clip_ms,
    )
    model.warm_up()
    return model


def load_end_of_turn(settings: Settings) -> SmartTurn | None:
    """The end-of-turn model, once per process (never in fixed mode)."""
    return smart_turn.shared(settings.eot_threads) if settings.eot_model else None


def create_app(settings: Settings, transcriber: Transcriber | None = None) -> FastAPI:
    """``transcriber`` lets tests share one loaded Whisper model; else the models are loaded here."""
    state: dict = {}
    tel = telemetry.setup("asr", settings.otlp_endpoint)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if transcriber is not None or settings.fixed:
            vad, whisper, finals = await asyncio.to_thread(SileroVad, None, settings.vad_batched), transcriber, None
            if settings.cloud and settings.fallback == "none":
                whisper = None
        else:
            vad, whisper, finals = await asyncio.to_thread(load_models, settings)
        end_of_turn = await asyncio.to_thread(load_end_of_turn, settings)
        nc = await bus.connect(settings.nats_url, name=f"asr-{settings.worker_id}", credentials=settings.nats_credentials, replicas=settings.nats_replicas)
        worker = Worker(nc, settings, vad, whisper, finals, end_of_turn, cloud=cloud_provider(settings), tel=tel)
        await worker.start()
        state["worker"] = worker
        reporter = Reporter(nc, "asr", worker.id, lambda: len(worker.sessions), settings.capacity)
        await reporter.start()
        log.info(
            "asr ready",
            extra={
                "worker": worker.id,
                "mode": settings.providers,
                "vad_batched": vad.batched,
                "whisper_lanes": worker.queue.lanes if worker.queue else 0,
                "provider": worker.cloud.name if worker.cloud else "whisper",
                "fallback": ("whisper" if worker.queue else None) if worker.cloud else None,
                "end_of_turn_model": end_of_turn is not None,
                "nats": settings.nats_url,
            },
        )
        try:
            yield
        finally:
            state.pop("worker", None)
            await reporter.stop()
            await worker.stop()
            await nc.drain()
            telemetry.shutdown()

    app = FastAPI(title="Parley ASR", lifespan=lifespan)
    tel.add_metrics_route(app)

    @app.get("/healthz")
    async def healthz():
        worker = state.get("worker")
        if worker is None or not worker.nc.is_connected or not worker.healthy:
            return JSONResponse({"ok": False}, status_code=503)
        return {"ok": True, "service": "asr", "worker": worker.id, "mode": worker.settings.providers, "stats": worker.stats}

    app.state.parley = state
    return app
