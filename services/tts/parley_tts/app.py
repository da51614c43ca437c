"""The TTS service's FastAPI app: health, stats, and the worker's lifetime.

The lifespan loads the voice (Piper, or the canned clip when
PARLEY_PROVIDERS=fixed) off the event loop, connects to NATS and starts the
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

from .adapters import Voice
from .settings import Settings
from .worker import Worker

log = logging.getLogger("parley_tts")


def cloud_voice(settings: Settings) -> Voice:
    """The cloud voice PARLEY_TTS names (no I/O here: it connects on start)."""
    common = dict(base=settings.base, api_key=settings.api_key, model=settings.model_name, voice=settings.voice,
                  first_audio_s=settings.first_audio_s, piece_ms=settings.piece_ms)  # fmt: skip
    if settings.provider == "cartesia":
        from .adapters.cartesia import Cartesia

        return Cartesia(sample_rate=settings.sample_rate, **common)
    if settings.provider == "elevenlabs":
        from .adapters.elevenlabs import ElevenLabs

        return ElevenLabs(sample_rate=settings.sample_rate, **common)
    from .adapters.openai_speech import OpenAISpeech

    return OpenAISpeech(**common)


def load_voices(settings: Settings) -> tuple[Voice, Voice | None]:
    """(the voice that speaks, the one that takes over when it fails)."""
    if settings.fixed or settings.provider == "piper":
        return load_voice(settings), None
    return cloud_voice(settings), (load_voice(settings) if settings.fallback == "piper" else None)


def load_voice(settings: Settings) -> Voice:
    if settings.fixed:
        from .adapters.canned import Canned

        return Canned.load(
            first_audio_ms=settings.fixed_first_audio_ms,
            ms_per_char=settings.fixed_ms_per_char,
            min_ms=settings.fixed_min_ms,
            lead_ms=settings.fixed_lead_ms,
            piece_ms=settings.piece_ms,
        )
    from .adapters.piper_voice import Piper

    return Piper.load(threads=settings.synth_threads, ort_threads=settings.ort_threads, piece_ms=settings.piece_ms, model=settings.piper_voice or None, steady=settings.steady)


def create_app(settings: Settings, voice: Voice | None = None) -> FastAPI:
    """``voice`` lets tests share one loaded Piper voice (it is then the
    embedded voice: the fallback when PARLEY_TTS names a cloud provider);
    else the voices are loaded here (and closed at the end)."""
    state: dict = {}
    tel = telemetry.setup("tts", settings.otlp_endpoint)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        own = voice is None
        if own:
            v, fallback = await asyncio.to_thread(load_voices, settings)
        elif settings.provider == "piper" or settings.fixed:
            v, fallback = voice, None
        else:
            v, fallback = cloud_voice(settings), (voice if settings.fallback == "piper" else None)
        if hasattr(v, "start"):
            await v.start()
        nc = await bus.connect(settings.nats_url, name=settings.worker_id, credentials=settings.nats_credentials, replicas=settings.nats_replicas)
        worker = Worker(nc, settings, v, fallback, tel=tel)
        await worker.start()
        state["worker"] = worker
        reporter = Reporter(nc, "tts", worker.id, lambda: len({key[0] for key in worker.held}), settings.capacity)
        await reporter.start()
        log.info(
            "tts ready",
            extra={"worker": worker.id, "mode": settings.providers, "voice": v.name, "rate": v.sample_rate,
                   "fallback": fallback.name if fallback else None, "nats": settings.nats_url},
        )  # fmt: skip
        try:
            yield
        finally:
            state.pop("worker", None)
            await reporter.stop()
            await worker.stop()
            await nc.drain()
            telemetry.shutdown()
            if hasattr(v, "aclose"):
                await v.aclose()
            if own:
                v.close()
                if fallback is not None:
                    fallback.close()

    app = FastAPI(title="Parley TTS", lifespan=lifespan)
    tel.add_metrics_route(app)

    @app.get("/healthz")
    async def healthz():
        worker = state.get("worker")
        if worker is None or not worker.nc.is_connected or not worker.healthy:
            return JSONResponse({"ok": False}, status_code=503)
        return {
            "ok": True,
            "service": "tts",
            "worker": worker.id,
            "mode": worker.settings.providers,
            "voice": worker.voice.name,
            "fallback": worker.voices[1].name if len(worker.voices) > 1 else None,
            "breakers": {name: {"failures": b.failures, "last_error": b.last_error} for name, b in worker.breakers.items()},
            "lanes": len(worker.runners),
            "stats": worker.stats,
        }

    app.state.parley = state
    return app
