"""ASR settings, read once from the environment."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import Mapping

from parley.settings import service_env

from . import endpointer

DEFAULT_FIXED_TRANSCRIPT = "I'd like to book an appointment tomorrow at three p.m."


def _worker_id() -> str:
    return f"asr-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Settings:
    nats_url: str = "nats://127.0.0.1:4222"
    http_host: str = "127.0.0.1"
    http_port: int = 8081
    providers: str = "real"  # real | fixed
    worker_id: str = field(default_factory=_worker_id)
    # Endpointing (see endpointer.py).
    threshold: float = 0.5
    start_ms: float = 160.0  # speech this long before SpeechStarted
    silence_ms: float = 500.0  # silence this long before SpeechStopped
    max_utterance_ms: float = 25_000.0  # Whisper sees 30 s at most
    preroll_ms: float = 300.0  # audio kept before the speech that started an utterance
    # Transcription.
    partial_every_ms: float = 700.0  # of speech between two partial transcriptions
    whisper_threads: int = 2
    final_lane: bool = True  # a second Whisper instance for finals only (see transcription.py)
    fixed_transcript: str = DEFAULT_FIXED_TRANSCRIPT
    fixed_delay_ms: float = 150.0  # fixed mode: final this long after SpeechStopped
    # Session lifetime and the VAD loop.
    idle_release_s: float = 120.0  # release a session that sent no audio this long
    # How often the VAD scores the windows that are complete: half a window,
    # so a decision waits 8 ms on average for its tick rather than 16.
    tick_ms: float = 16.0
    vad_batched: bool = True  # False: one ONNX call per session (to measure what batching saves)

    @property
    def fixed(self) -> bool:
        return self.providers == "fixed"

    def endpointing(self) -> endpointer.Config:
        return endpointer.Config.from_ms(
            threshold=self.threshold,
            start_ms=self.start_ms,
            silence_ms=self.silence_ms,
            max_ms=self.max_utterance_ms,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "Settings":
        env = os.environ if env is None else env
        values = dict(
            **service_env(env, default_port=cls.http_port),
            threshold=float(env.get("PARLEY_ASR_THRESHOLD", cls.threshold)),
            start_ms=float(env.get("PARLEY_ASR_START_MS", cls.start_ms)),
            silence_ms=float(env.get("PARLEY_ASR_SILENCE_MS", cls.silence_ms)),
            max_utterance_ms=float(env.get("PARLEY_ASR_MAX_UTTERANCE_MS", cls.max_utterance_ms)),
            preroll_ms=float(env.get("PARLEY_ASR_PREROLL_MS", cls.preroll_ms)),
            partial_every_ms=float(env.get("PARLEY_ASR_PARTIAL_MS", cls.partial_every_ms)),
            whisper_threads=int(env.get("PARLEY_ASR_WHISPER_THREADS", cls.whisper_threads)),
            final_lane=env.get("PARLEY_ASR_FINAL_LANE", "1").lower() not in ("0", "false", "no"),
            fixed_transcript=env.get("PARLEY_FIXED_TRANSCRIPT", DEFAULT_FIXED_TRANSCRIPT),
            fixed_delay_ms=float(env.get("PARLEY_ASR_FIXED_DELAY_MS", cls.fixed_delay_ms)),
            idle_release_s=float(env.get("PARLEY_ASR_IDLE_RELEASE_S", cls.idle_release_s)),
            vad_batched=env.get("PARLEY_ASR_VAD_BATCH", "1").lower() not in ("0", "false", "no"),
        )
        if env.get("PARLEY_ASR_WORKER_ID"):
            values["worker_id"] = env["PARLEY_ASR_WORKER_ID"]
        values.update(overrides)
        return cls(**values)
