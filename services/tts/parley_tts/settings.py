"""TTS settings: declared once, with types, ranges and help (parley.settings)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import field_validator

from parley.instance import instance_id, worker_token
from parley.settings import ServiceSettings, setting


class Settings(ServiceSettings):
    service: ClassVar[str] = "tts"
    # Cancelled runs and ended sessions are remembered this long / this many (lanes.py).
    forget_after_s: ClassVar[float] = 120.0
    remember: ClassVar[int] = 10_000

    http_port: int = setting("PARLEY_HTTP_PORT", 8083, "port the HTTP server (health, metrics) listens on", ge=1, le=65535)
    worker_id: str = setting(
        "PARLEY_TTS_WORKER_ID", None, "this worker's id on the bus (its NATS connection name)",
        default_factory=lambda: instance_id("tts"), shown_default="tts-<host>-<pid>-<random>",
        allowed="1 to 64 letters, digits, '-' or '_' (a NATS subject token)",
    )  # fmt: skip
    piece_ms: float = setting("PARLEY_TTS_PIECE_MS", 200.0, "the longest audio message", ge=20, le=5000)
    # Piper: concurrent syntheses, and ONNX Runtime threads for each (adapters/piper_voice.py).
    synth_threads: int = setting("PARLEY_TTS_THREADS", 2, "Piper syntheses that run at once", ge=1, le=64)
    ort_threads: int = setting("PARLEY_TTS_ORT_THREADS", 1, "ONNX Runtime threads for each synthesis", ge=1, le=16)
    # Fixed-latency mode (adapters/canned.py).
    fixed_first_audio_ms: float = setting("PARLEY_TTS_FIXED_FIRST_AUDIO_MS", 100.0, "fixed mode: the first audio comes this long after Synthesize", ge=0, le=60000)
    fixed_ms_per_char: float = setting("PARLEY_TTS_FIXED_MS_PER_CHAR", 65.0, "fixed mode: audio length per character of text", ge=0, le=1000)
    fixed_min_ms: float = setting("PARLEY_TTS_FIXED_MIN_MS", 300.0, "fixed mode: the shortest chunk of audio", ge=0, le=60000)
    fixed_lead_ms: float = setting("PARLEY_TTS_FIXED_LEAD_MS", 300.0, "fixed mode: audio sent ahead of real time", ge=0, le=60000)

    _worker_id = field_validator("worker_id")(worker_token)
