"""ASR settings, read once from the environment.

Every knob is declared once, in ``KNOBS``: its environment variable, type,
allowed range and a line on what it does. ``Settings.from_env`` parses them
all with errors that name the variable; the README's settings table is
checked against this one by a test. Defaults are measured: the figures behind
each are in services/asr/BENCHMARKS.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Mapping

from parley.instance import configured_id, instance_id
from parley.natsauth import Credentials
from parley.settings import service_env

from . import endpointer

DEFAULT_FIXED_TRANSCRIPT = "I'd like to book an appointment tomorrow at three p.m."


def _worker_id() -> str:
    return instance_id("asr")  # safe as a subject token whatever the host is called


@dataclass(frozen=True)
class Knob:
    env: str
    field: str
    kind: type  # float, int, bool or str
    low: float | None = None  # inclusive bounds for numbers
    high: float | None = None
    doc: str = ""


KNOBS: tuple[Knob, ...] = (
    # Endpointing (endpointer.py).
    Knob("PARLEY_ASR_THRESHOLD", "threshold", float, 0.05, 0.95, "speech probability; silence is below threshold - 0.15"),
    Knob("PARLEY_ASR_START_MS", "start_ms", float, 32, 2000, "speech this long before SpeechStarted"),
    Knob("PARLEY_ASR_SILENCE_MS", "silence_ms", float, 32, 5000, "silence this long before SpeechStopped"),
    Knob("PARLEY_ASR_PREROLL_MS", "preroll_ms", float, 0, 2000, "audio before the speech that Whisper and the end-of-turn model also get"),
    Knob("PARLEY_ASR_MAX_UTTERANCE_MS", "max_utterance_ms", float, 1000, 28000, "an utterance is cut (Stop, final) at this length"),
    # Transcription (transcription.py, whisper.py).
    Knob("PARLEY_ASR_PARTIAL_MS", "partial_every_ms", float, 32, 1e9, "speech between two partial transcriptions"),
    Knob("PARLEY_ASR_FINAL_LANE", "final_lane", bool, doc="a second Whisper instance (about 95 MB) that runs finals only"),
    Knob("PARLEY_ASR_WHISPER_THREADS", "whisper_threads", int, 1, 16, "CTranslate2 threads per Whisper instance"),
    Knob("PARLEY_ASR_WHISPER_WINDOW_MS", "whisper_window_ms", float, 1000, 30000, "Whisper's encoder window, at least (30000: always the full 30 s)"),
    Knob("PARLEY_ASR_WHISPER_PAD_MS", "whisper_pad_ms", float, 0, 30000, "and at least this much beyond the audio"),
    # End of turn (smart_turn.py, completeness.py).
    Knob("PARLEY_ASR_EOT", "eot", bool, doc="the acoustic end-of-turn model (Smart Turn v3.2) scores each SpeechStopped"),
    Knob("PARLEY_ASR_EOT_THREADS", "eot_threads", int, 1, 16, "onnxruntime threads for the end-of-turn model"),
    Knob("PARLEY_ASR_EOT_BATCH", "eot_batch", int, 1, 64, "stops of different sessions scored in one model call, at most"),
    Knob("PARLEY_ASR_TURN_JOIN_MS", "turn_join_ms", float, 0, 60000, "an unfinished final joins the next utterance's text when it started within this"),
    # Fixed providers (load tests).
    Knob("PARLEY_FIXED_TRANSCRIPT", "fixed_transcript", str, doc="fixed mode: the final's text"),
    Knob("PARLEY_ASR_FIXED_DELAY_MS", "fixed_delay_ms", float, 0, 60000, "fixed mode: the final comes this long after SpeechStopped"),
    Knob("PARLEY_ASR_FIXED_EOT", "fixed_eot", float, -1, 1, "fixed mode: SpeechStopped.eot (no model runs; -1 = unknown)"),
    # Session lifetime and the VAD loop.
    Knob("PARLEY_ASR_IDLE_RELEASE_S", "idle_release_s", float, 0.1, 86400, "release a session that sent no audio this long"),
    Knob("PARLEY_ASR_VAD_BATCH", "vad_batched", bool, doc="0: one Silero call per session (only to measure what batching saves)"),
)


@dataclass(frozen=True)
class Settings:
    nats_url: str = "nats://127.0.0.1:4222"
    nats_credentials: Credentials = Credentials()  # PARLEY_NATS_SEED_FILE (parley.natsauth)
    http_host: str = "127.0.0.1"
    http_port: int = 8081
    providers: str = "real"  # real | fixed
    worker_id: str = field(default_factory=_worker_id)
    # Endpointing (see endpointer.py).
    threshold: float = 0.5
    start_ms: float = 160.0
    # 500 ms until the reducer waits on eot/complete; then 200 ms (7 windows,
    # 224 ms), so the stop comes soon and the reducer waits longer only when
    # the signals say the caller is not done (BENCHMARKS.md).
    silence_ms: float = 500.0
    max_utterance_ms: float = 25_000.0  # Whisper sees 30 s at most
    preroll_ms: float = 300.0
    # Transcription.
    partial_every_ms: float = 320.0
    final_lane: bool = True
    whisper_threads: int = 2
    whisper_window_ms: float = 10_000.0
    whisper_pad_ms: float = 4_000.0
    # End of turn.
    eot: bool = True
    eot_threads: int = 1
    eot_batch: int = 8
    turn_join_ms: float = 3_000.0
    # Fixed providers.
    fixed_transcript: str = DEFAULT_FIXED_TRANSCRIPT
    fixed_delay_ms: float = 150.0
    fixed_eot: float = 1.0
    # Session lifetime and the VAD loop.
    idle_release_s: float = 120.0
    # How often the VAD scores the windows that are complete: half a window,
    # so a decision waits 8 ms on average for its tick rather than 16.
    tick_ms: float = 16.0
    vad_batched: bool = True

    def __post_init__(self) -> None:
        for knob in KNOBS:
            value = getattr(self, knob.field)
            if knob.low is not None and not knob.low <= value <= knob.high:
                raise ValueError(f"{knob.env} must be between {knob.low:g} and {knob.high:g}, not {value!r}")

    @property
    def fixed(self) -> bool:
        return self.providers == "fixed"

    @property
    def eot_model(self) -> bool:
        """Whether the end-of-turn model runs (never in fixed mode: it would cost capacity)."""
        return self.eot and not self.fixed

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
        values: dict[str, object] = dict(service_env(env, default_port=cls.http_port))
        for knob in KNOBS:
            raw = env.get(knob.env)
            if raw is not None:
                values[knob.field] = _parse(knob, raw)
        values["worker_id"] = configured_id(env, "PARLEY_ASR_WORKER_ID", "asr")
        values.update(overrides)
        return cls(**values)


def _parse(knob: Knob, raw: str):
    if knob.kind is bool:
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{knob.env} must be 1 or 0 (true/false), not {raw!r}")
    if knob.kind is str:
        return raw
    try:
        return knob.kind(raw)
    except ValueError:
        raise ValueError(f"{knob.env} must be {'an integer' if knob.kind is int else 'a number'}, not {raw!r}") from None


assert {k.field for k in KNOBS} <= {f.name for f in fields(Settings)}
