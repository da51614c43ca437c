"""Orchestrator settings: declared once, with types, ranges and help (parley.settings).

Besides its own settings, the orchestrator takes the deployment's session
policy: ``PARLEY_POLICY_<FIELD>`` for any field of ``reducer.Policy``
(PARLEY_POLICY_REPROMPT_AFTER=8, PARLEY_POLICY_GREETING="Hello..."), each
checked against the field's type at start. A session's own parameters
override them, within what parley.session_params allows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Mapping

from pydantic import PrivateAttr, field_validator, model_validator

from parley.clock import Clock, machine_zone, parse_now, zone_named
from parley.settings import Invalid, ServiceSettings, setting

from . import reducer

POLICY_PREFIX = "PARLEY_POLICY_"

# Policy fields that have a setting of their own: where a transfer goes also
# decides whether the transfer tool exists at all.
_OWN_SETTING = {"transfer_to": "PARLEY_TRANSFER_TO"}


class Settings(ServiceSettings):
    service: ClassVar[str] = "orchestrator"
    # Once read on their own; one name per setting now.
    retired: ClassVar[dict[str, str]] = {
        "PARLEY_SYSTEM_PROMPT": "PARLEY_POLICY_SYSTEM_PROMPT",
        "PARLEY_GREETING": "PARLEY_POLICY_GREETING",
        "PARLEY_VOICEMAIL_MESSAGE": "PARLEY_POLICY_VOICEMAIL_MESSAGE",
        "PARLEY_TRANSFER_WARM": "PARLEY_POLICY_TRANSFER_WARM",
    }

    http_port: int = setting("PARLEY_HTTP_PORT", 8082, "port the HTTP server (health, metrics) listens on", ge=1, le=65535)
    data_dir: Path = setting("PARLEY_DATA_DIR", Path("var"), "where the appointment book (appointments.sqlite3) is kept")
    timezone: str = setting(
        "PARLEY_TIMEZONE", "", "the clinic's time zone: today, opening hours (parley.clock); unset: the machine's (TZ, else /etc/localtime)",
        allowed="an IANA time zone name like America/New_York",
    )  # fmt: skip
    now: str = setting(
        "PARLEY_NOW", "", "pins the clinic's calendar at this instant (tests, demos); no offset: wall time in PARLEY_TIMEZONE",
        allowed="an ISO 8601 date and time like 2026-11-28T09:30:00",
    )  # fmt: skip
    # Privacy: how long each session's event log (what callers said, in steps) is kept.
    log_retention_days: float = setting("PARLEY_LOG_RETENTION_DAYS", 7.0, "days each session's event log is kept", ge=0.01, le=3650)
    # The LLM (adapters/llm.py): an OpenAI-compatible server, else the built-in receptionist.
    llm_base_url: str = setting(
        "LLM_BASE_URL", "", "an OpenAI-compatible API (https://api.openai.com/v1); unset: the built-in receptionist",
        pattern=r"^https?://\S+$", allowed="an http(s):// URL",
    )  # fmt: skip
    llm_model: str = setting("LLM_MODEL", "", "the model's name at LLM_BASE_URL (gpt-4o-mini)")
    llm_api_key: str = setting("LLM_API_KEY", "", "the LLM server's key, if it needs one", secret=True)
    llm_timeout: float = setting("LLM_TIMEOUT", 30.0, "seconds an LLM request may take", gt=0, le=600)
    llm_temperature: float | None = setting("LLM_TEMPERATURE", None, "sampling temperature; unset: the server's default", ge=0, le=2)
    capacity: int = setting(
        "PARLEY_ORCHESTRATOR_CAPACITY", 100,
        "live sessions this replica owns at full load, reported to the gateways (parley.load): when every orchestrator replica is full, a new call is refused. 0: no limit. Default from the capacity benchmark (docs/BENCHMARKS.md 5)",
        ge=0, le=100000,
    )  # fmt: skip
    llm_token_batch_ms: float = setting(
        "PARLEY_LLM_TOKEN_BATCH_MS", 100.0,
        "LLM tokens arriving within this many ms are stored as one event, unless one lets a TTS chunk be cut (0: one event per token)",
        ge=0, le=1000,
    )  # fmt: skip
    transfer_to: str = setting(
        "PARLEY_TRANSFER_TO", "", "the number transfer_call connects callers to (E.164); unset: no transfers",
        pattern=r"^(\+[1-9][0-9]{6,14}|sip:\S+)$", allowed="an E.164 number like +15550007777, or a sip: URI",
    )  # fmt: skip
    policy: dict[str, str] = setting(
        "PARLEY_POLICY_<FIELD>", {}, "the deployment's session policy: any field of reducer.Policy, e.g. PARLEY_POLICY_REPROMPT_AFTER=8",
        allowed="a value of the field's type", shown_default="",
    )  # fmt: skip

    _clock: Clock = PrivateAttr(default_factory=Clock.system)

    @classmethod
    def _values(cls, env: Mapping[str, str]) -> dict[str, Any]:
        values = super()._values(env)
        policy = {k: v for k, v in env.items() if k.startswith(POLICY_PREFIX)}
        return {**values, "policy": policy} if policy else values

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if value:
            try:
                zone_named(value)
            except ValueError:
                raise Invalid("an IANA time zone name like America/New_York or Europe/Paris") from None
        return value

    @field_validator("policy")
    @classmethod
    def _policy(cls, values: dict[str, str]) -> dict[str, str]:
        out = {}
        for var, raw in values.items():
            name = var.removeprefix(POLICY_PREFIX).lower()
            out[name] = check_policy(var, name, raw)
        return out

    @model_validator(mode="after")
    def _whole(self) -> "Settings":
        if self.llm_base_url or self.llm_model or self.llm_api_key:
            for var, value in (("LLM_BASE_URL", self.llm_base_url), ("LLM_MODEL", self.llm_model)):
                if not value:
                    raise Invalid(
                        "set with the other LLM_* settings (e.g. LLM_BASE_URL=https://api.openai.com/v1 LLM_MODEL=gpt-4o-mini), "
                        "or unset every LLM_* for the built-in receptionist",
                        variable=var, value=value,
                    )  # fmt: skip
        zone = zone_named(self.timezone) if self.timezone else machine_zone()
        try:
            pinned = parse_now(self.now, zone) if self.now.strip() else None
        except ValueError:
            raise Invalid("an ISO 8601 date and time like 2026-11-28T09:30:00", variable="PARLEY_NOW", value=self.now) from None
        self._clock = Clock(zone, pinned)
        return self

    @property
    def clock(self) -> Clock:
        """The clinic's clock: PARLEY_TIMEZONE, PARLEY_NOW (parley.clock)."""
        return self._clock

    @property
    def llm(self) -> bool:
        """Whether an OpenAI-compatible LLM writes the replies."""
        return bool(self.llm_base_url)


def check_policy(var: str, name: str, raw: str) -> str:
    """One PARLEY_POLICY_<FIELD> value, checked against the Policy field's type."""
    if name in _OWN_SETTING:
        raise Invalid(f"unset: this one is {_OWN_SETTING[name]}", variable=var, value=raw)
    if name not in reducer.Policy.__struct_fields__:
        raise Invalid(f"unset: it names no session policy setting (known: {', '.join(reducer.Policy.__struct_fields__)})", variable=var, value=raw)
    kind = type(getattr(reducer.Policy(), name))
    if kind is bool and raw.strip().lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
        raise Invalid("1 or 0 (true/false, yes/no, on/off)", variable=var, value=raw)
    if reducer.policy_from_params({name: raw})[1]:
        what = {int: "a whole number", float: "a number of at least 0"}.get(kind, "a value the policy accepts (not empty)")
        raise Invalid(f"{what} for the policy's {name}", variable=var, value=raw)
    return raw

