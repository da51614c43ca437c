"""Gateway settings, read once from the environment."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from parley.natsauth import Credentials
from parley.session_params import Allowed

from .auth import DEMO_MODES, parse_origins, parse_rate
from parley.settings import service_env


@dataclass(frozen=True)
class Settings:
    nats_url: str = "nats://127.0.0.1:4222"
    nats_credentials: Credentials = Credentials()  # PARLEY_NATS_SEED_FILE (parley.natsauth)
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    public_host: str = ""  # host[:port] Twilio reaches us at (wss://PUBLIC_HOST/twilio/media)
    twilio_account_sid: str = ""
    twilio_auth_token: str = ""
    twilio_api_base: str = "https://api.twilio.com"
    ice_servers: tuple[str, ...] = ()  # e.g. stun:stun.example.org:3478; none by default
    # Watching other people's calls (/?watch) shows their words: only with
    # this token (PARLEY_INSPECT_TOKEN); unset, the inspector is off.
    inspect_token: str = ""
    # Twilio: a mark after every this many ms of audio (and at each chunk's
    # end). A resume after a pause replays from the last mark Twilio echoed,
    # so this bounds what the caller may hear twice; each mark is one more
    # message each way. A multiple of 20 (one frame).
    twilio_mark_ms: int = 20
    # WebRTC: packets aiortc's receiver holds before decoding the caller's
    # audio (its own default is 4, 80 ms, on every word the caller says).
    webrtc_jitter_frames: int = 2
    # Outbound calls: POST /api/calls needs "Authorization: Bearer <this>"
    # (PARLEY_API_KEY); unset, outbound calls are off. TWILIO_CALLER_ID is
    # the number calls come from unless a request names another.
    api_key: str = ""
    twilio_caller_id: str = ""
    # Where the gateway keeps its files (recordings/ under it): PARLEY_DATA_DIR.
    data_dir: Path = Path("var")
    # Call recordings (PARLEY_RECORDINGS): off; opt-in (a session whose
    # parameters say recording=on); all. Kept PARLEY_RECORDINGS_KEEP_DAYS.
    recordings: str = "off"
    recordings_keep_days: float = 30.0
    # Sessions (parley_gateway.auth): a token lives this long and is used once.
    session_token_ttl: float = 60.0
    # "" (off), "local" (make run: the page gets tokens, for clients on this
    # machine only) or "open" (for any client: a demo on a network).
    demo: str = ""
    allowed_origins: tuple[str, ...] = ()  # besides the gateway's own page
    session_rate: tuple[int, float] = (20, 60.0)  # new sessions per client address per seconds (0: no limit)
    # What sessions may set (parley.session_params): PARLEY_SESSION_PARAMS.
    session_params: Allowed = field(default_factory=Allowed.everything)
    # Twilio's endpoints refuse to work without TWILIO_AUTH_TOKEN unless this
    # is set (PARLEY_TWILIO_INSECURE=1): local development only.
    twilio_insecure: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        common = service_env(env, default_port=cls.http_port)
        return cls(
            nats_url=common["nats_url"],
            nats_credentials=common["nats_credentials"],
            http_host=common["http_host"],
            http_port=common["http_port"],
            public_host=env.get("PUBLIC_HOST", ""),
            twilio_account_sid=env.get("TWILIO_ACCOUNT_SID", ""),
            twilio_auth_token=env.get("TWILIO_AUTH_TOKEN", ""),
            twilio_api_base=env.get("TWILIO_API_BASE", cls.twilio_api_base),
            ice_servers=tuple(s for s in env.get("PARLEY_ICE_SERVERS", "").split(",") if s.strip()),
            inspect_token=env.get("PARLEY_INSPECT_TOKEN", ""),
            twilio_mark_ms=_mark_ms(env.get("PARLEY_TWILIO_MARK_MS", str(cls.twilio_mark_ms))),
            api_key=env.get("PARLEY_API_KEY", ""),
            twilio_caller_id=env.get("TWILIO_CALLER_ID", ""),
            data_dir=Path(env.get("PARLEY_DATA_DIR", "var")),
            recordings=_choice("PARLEY_RECORDINGS", env.get("PARLEY_RECORDINGS", cls.recordings), ("off", "opt-in", "all")),
            recordings_keep_days=_days("PARLEY_RECORDINGS_KEEP_DAYS", env.get("PARLEY_RECORDINGS_KEEP_DAYS", str(cls.recordings_keep_days))),
            session_token_ttl=float(_int_in("PARLEY_SESSION_TOKEN_TTL", env.get("PARLEY_SESSION_TOKEN_TTL", "60"), 5, 3600, "seconds a session token may wait to be used")),
            demo=_choice("PARLEY_DEMO", env.get("PARLEY_DEMO", ""), DEMO_MODES),
            allowed_origins=parse_origins(env.get("PARLEY_ALLOWED_ORIGINS", "")),
            session_rate=parse_rate(env.get("PARLEY_SESSION_RATE", "20/60")),
            session_params=Allowed.from_env(env),
            twilio_insecure=_flag("PARLEY_TWILIO_INSECURE", env.get("PARLEY_TWILIO_INSECURE", "")),
            webrtc_jitter_frames=_int_in("PARLEY_WEBRTC_JITTER_FRAMES", env.get("PARLEY_WEBRTC_JITTER_FRAMES", str(cls.webrtc_jitter_frames)), 1, 8, "packets of 20 ms"),
        )


def _mark_ms(value: str) -> int:
    try:
        ms = int(value)
    except ValueError:
        ms = -1
    if ms < 20 or ms > 2000 or ms % 20:
        raise ValueError(f"PARLEY_TWILIO_MARK_MS must be a multiple of 20 between 20 and 2000 (ms of audio between marks), not {value!r}")
    return ms


def _int_in(name: str, value: str, low: int, high: int, what: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = low - 1
    if not low <= n <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high} ({what}), not {value!r}")
    return n


def _choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value.strip().lower() not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, not {value!r}")
    return value.strip().lower()


def _days(name: str, value: str) -> float:
    try:
        days = float(value)
    except ValueError:
        days = -1.0
    if not days > 0 or not math.isfinite(days):
        raise ValueError(f"{name} must be a number of days above 0 (recordings older than that are deleted), not {value!r}")
    return days


def _flag(name: str, value: str) -> bool:
    low = value.strip().lower()
    if low in ("", "0", "false", "no", "off"):
        return False
    if low in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{name} must be 1 or 0, not {value!r}")
