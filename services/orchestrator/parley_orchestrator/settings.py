"""Orchestrator settings, read once from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from parley.clock import Clock
from parley.natsauth import Credentials
from parley.settings import service_env


@dataclass(frozen=True)
class Settings:
    nats_url: str = "nats://127.0.0.1:4222"
    nats_credentials: Credentials = Credentials()  # PARLEY_NATS_SEED_FILE (parley.natsauth)
    http_host: str = "127.0.0.1"
    http_port: int = 8082
    providers: str = "real"  # real | fixed
    data_dir: Path = Path("var")
    clock: Clock = field(default_factory=Clock.system)  # PARLEY_TIMEZONE, PARLEY_NOW (see parley.clock)
    env: Mapping[str, str] = field(default_factory=dict)  # LLM_* and session defaults
    # Privacy: how long each session's event log (what callers said, in
    # steps) is kept, PARLEY_LOG_RETENTION_DAYS (0.01 to 3650; default 7).
    log_retention_days: float = 7.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        return cls(
            **service_env(env, default_port=cls.http_port),
            data_dir=Path(env.get("PARLEY_DATA_DIR", "var")),
            clock=Clock.from_env(env),
            env=env,
            log_retention_days=_days(env.get("PARLEY_LOG_RETENTION_DAYS", "7")),
        )


def _days(value: str) -> float:
    try:
        days = float(value)
    except ValueError:
        days = -1.0
    if not 0.01 <= days <= 3650:
        raise ValueError(f"PARLEY_LOG_RETENTION_DAYS must be a number of days from 0.01 to 3650, not {value!r}")
    return days
