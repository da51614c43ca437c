"""TTS settings, read once from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

from parley.instance import configured_id, instance_id
from parley.natsauth import Credentials
from parley.settings import service_env


def _worker_id() -> str:
    return instance_id("tts")  # safe as a subject token whatever the host is called


@dataclass(frozen=True)
class Settings:
    nats_url: str = "nats://127.0.0.1:4222"
    nats_credentials: Credentials = Credentials()  # PARLEY_NATS_SEED_FILE (parley.natsauth)
    http_host: str = "127.0.0.1"
    http_port: int = 8083
    providers: str = "real"  # real | fixed
    worker_id: str = field(default_factory=_worker_id)
    piece_ms: float = 200.0  # longest audio message
    # Piper: concurrent syntheses, and ONNX Runtime threads for each (see adapters/piper_voice.py).
    synth_threads: int = 2
    ort_threads: int = 1
    # Fixed-latency mode (adapters/canned.py).
    fixed_first_audio_ms: float = 100.0
    fixed_ms_per_char: float = 65.0
    fixed_min_ms: float = 300.0
    fixed_lead_ms: float = 300.0
    # Cancelled runs and ended sessions are remembered this long / this many.
    forget_after_s: float = 120.0
    remember: int = 10_000

    @property
    def fixed(self) -> bool:
        return self.providers == "fixed"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "Settings":
        env = os.environ if env is None else env
        values = dict(
            **service_env(env, default_port=cls.http_port),
            piece_ms=float(env.get("PARLEY_TTS_PIECE_MS", cls.piece_ms)),
            synth_threads=int(env.get("PARLEY_TTS_THREADS", cls.synth_threads)),
            ort_threads=int(env.get("PARLEY_TTS_ORT_THREADS", cls.ort_threads)),
            fixed_first_audio_ms=float(env.get("PARLEY_TTS_FIXED_FIRST_AUDIO_MS", cls.fixed_first_audio_ms)),
            fixed_ms_per_char=float(env.get("PARLEY_TTS_FIXED_MS_PER_CHAR", cls.fixed_ms_per_char)),
        )
        values["worker_id"] = configured_id(env, "PARLEY_TTS_WORKER_ID", "tts")
        values.update(overrides)
        return cls(**values)
