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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        return cls(
            **service_env(env, default_port=cls.http_port),
            data_dir=Path(env.get("PARLEY_DATA_DIR", "var")),
            clock=Clock.from_env(env),
            env=env,
        )
