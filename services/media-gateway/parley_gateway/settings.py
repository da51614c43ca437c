"""Gateway settings: declared once, with types, ranges and help (parley.settings)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import field_validator
from pydantic_settings import NoDecode

from parley.session_params import Allowed
from parley.settings import Invalid, ServiceSettings, setting

from .auth import Rate, parse_origins, parse_rate

_HOST = re.compile(r"^(https?://|wss?://)?[A-Za-z0-9.\-\[\]:]+/?$")
_ICE = re.compile(r"^(stun|stuns|turn|turns):\S+$")


class Settings(ServiceSettings):
    service: ClassVar[str] = "media-gateway"

    http_port: int = setting("PARLEY_HTTP_PORT", 8080, "port of the page, the transports and the APIs", ge=1, le=65535)
    # Twilio (docs/TWILIO.md).
    public_host: str = setting(
        "PUBLIC_HOST", "", "host[:port] Twilio reaches this gateway at (wss://PUBLIC_HOST/twilio/media); unset: the request's Host",
        allowed="host[:port], like gw.example.com",
    )  # fmt: skip
    twilio_account_sid: str = setting(
        "TWILIO_ACCOUNT_SID", "", "the Twilio account (REST calls: outbound, keys, transfers)", pattern=r"^AC[0-9a-fA-F]{32}$",
        allowed="AC followed by 32 hex digits",
    )  # fmt: skip
    twilio_auth_token: str = setting(
        "TWILIO_AUTH_TOKEN", "", "checks Twilio's signatures, signs stream tokens, authenticates REST calls; unset: Twilio endpoints are refused",
        secret=True,
    )  # fmt: skip
    twilio_api_base: str = setting("TWILIO_API_BASE", "https://api.twilio.com", "Twilio's REST API (a stand-in in tests)", pattern=r"^https?://\S+$", allowed="an http(s):// URL")
    twilio_caller_id: str = setting(
        "TWILIO_CALLER_ID", "", "the number outbound calls come from unless a request names another", pattern=r"^\+[1-9][0-9]{6,14}$",
        allowed="an E.164 number like +15550001000",
    )  # fmt: skip
    twilio_insecure: bool = setting("PARLEY_TWILIO_INSECURE", False, "Twilio endpoints work without TWILIO_AUTH_TOKEN: local development only")
    # A resume after a pause replays from the last mark Twilio echoed, so this
    # bounds what the caller may hear twice; each mark is one more message each
    # way (the frames between two marks go as one media message). 60: 100 calls
    # pass on 2 cores, 20 fails by 10 ms (BENCHMARKS 7, session 6).
    twilio_mark_ms: int = setting(
        "PARLEY_TWILIO_MARK_MS", 60, "Twilio: a mark after every this many ms of audio (and at each chunk's end)", ge=20, le=2000, multiple_of=20,
        allowed="a multiple of 20 from 20 to 2000 (ms of audio between marks)",
    )  # fmt: skip
    # Audio queued at Twilio ahead of what the caller hears: a stall of this
    # process shorter than it is not heard (a pause or a flush clears Twilio's
    # buffer at once, so it costs the audible stop nothing; marks, not the lead,
    # say what was heard). 60 ms left gaps at 100 calls on 2 cores (BENCHMARKS 7).
    twilio_lead_ms: int = setting(
        "PARLEY_TWILIO_LEAD_MS", 200, "Twilio: ms of agent audio kept queued at Twilio ahead of what the caller hears", ge=20, le=2000, multiple_of=20,
        allowed="a multiple of 20 from 20 to 2000 (ms of audio)",
    )  # fmt: skip
    # WebRTC (aiortc's own default is 4 packets, 80 ms, on every word the caller says).
    ice_servers: Annotated[tuple[str, ...], NoDecode] = setting(
        "PARLEY_ICE_SERVERS", (), "STUN/TURN servers for WebRTC, comma separated; unset: none (host candidates only)",
        allowed="stun:HOST:PORT or turn:HOST:PORT, comma separated",
    )  # fmt: skip
    webrtc_jitter_frames: int = setting("PARLEY_WEBRTC_JITTER_FRAMES", 2, "WebRTC: 20 ms packets held before decoding the caller's audio", ge=1, le=8)
    # Who may do what (parley_gateway.auth, docs/SECURITY.md).
    api_key: str = setting("PARLEY_API_KEY", "", "bearer key for POST /api/sessions and /api/calls; unset: both are off", secret=True)
    inspect_token: str = setting(
        "PARLEY_INSPECT_TOKEN", "", "watching other people's calls (/?watch, recordings, call-backs); unset: the inspector is off", secret=True
    )
    session_token_ttl: float = setting("PARLEY_SESSION_TOKEN_TTL", 60.0, "seconds a session token may wait to be used (once)", ge=5, le=3600)
    demo: Literal["", "local", "open"] = setting(
        "PARLEY_DEMO", "", "the page gets its own tokens: local (this machine's clients only: make run) or open (anyone); unset: off",
        allowed="local or open, or unset",
    )
    allowed_origins: Annotated[tuple[str, ...], NoDecode] = setting(
        "PARLEY_ALLOWED_ORIGINS", (), "browser origins allowed besides the gateway's own page, comma separated",
        allowed="origins like https://app.example.com, comma separated",
    )  # fmt: skip
    session_rate: Annotated[Rate, NoDecode] = setting(
        "PARLEY_SESSION_RATE", Rate(20, 60.0), "new sessions per client address: N/SECONDS", shown_default="20/60",
        allowed="N/SECONDS (20/60: twenty new sessions a minute per client address), or 0 for no limit",
    )  # fmt: skip
    session_params: Annotated[Allowed, NoDecode] = setting(
        "PARLEY_SESSION_PARAMS", None, "what sessions may set (parley.session_params): all, none, or NAME[=LOW..HIGH],...",
        default_factory=Allowed.everything, shown_default="all", allowed="all, none, or NAME[=LOW..HIGH],... of parley.session_params",
    )  # fmt: skip
    # Admission (admission.py): past this many calls, new ones are refused.
    max_calls: int = setting(
        "PARLEY_MAX_CALLS", 100, "calls this gateway carries at once; past it a new call is refused (busy), not let in to degrade every call",
        ge=1, le=100000,
    )  # fmt: skip
    busy_retry_after: int = setting("PARLEY_BUSY_RETRY_AFTER", 10, "seconds a refused caller is told to wait (Retry-After)", ge=1, le=3600)
    # Files and recordings (recording.py).
    data_dir: Path = setting("PARLEY_DATA_DIR", Path("var"), "where the gateway keeps its files (recordings/ under it)")
    recordings: Literal["off", "opt-in", "all"] = setting(
        "PARLEY_RECORDINGS", "off", "record calls: off; opt-in (a session with recording=on); all"
    )
    recordings_keep_days: float = setting("PARLEY_RECORDINGS_KEEP_DAYS", 30.0, "recordings older than this are deleted", gt=0, le=36500)

    @field_validator("recordings", "demo", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("public_host")
    @classmethod
    def _host(cls, value: str) -> str:
        if value and not _HOST.match(value.strip()):
            raise Invalid("host[:port], like gw.example.com or 203.0.113.7:8443 (no path)")
        return value

    @field_validator("ice_servers", mode="before")
    @classmethod
    def _ice(cls, value: Any) -> Any:
        servers = tuple(s.strip() for s in value.split(",") if s.strip()) if isinstance(value, str) else value
        if any(not _ICE.match(s) for s in servers):
            raise Invalid("stun:HOST:PORT or turn:HOST:PORT, comma separated")
        return servers

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _origins(cls, value: Any) -> Any:
        return _parsed(parse_origins, value, "origins like https://app.example.com, comma separated") if isinstance(value, str) else value

    @field_validator("session_rate", mode="before")
    @classmethod
    def _rate(cls, value: Any) -> Any:
        if isinstance(value, tuple) and not isinstance(value, Rate):
            return Rate(*value)
        return _parsed(parse_rate, value, "N/SECONDS (20/60: twenty new sessions a minute per client address), or 0 for no limit") if isinstance(value, str) else value

    @field_validator("session_params", mode="before")
    @classmethod
    def _params(cls, value: Any) -> Any:
        return _parsed(Allowed.parse, value, "all, none, or NAME[=LOW..HIGH],... of parley.session_params") if isinstance(value, str) else value


def _parsed(parse, value: str, allowed: str):
    """A parser's ValueError (which says what was wrong) as the setting's error."""
    try:
        return parse(value)
    except ValueError as exc:
        raise Invalid(f"{allowed} ({exc})") from None
