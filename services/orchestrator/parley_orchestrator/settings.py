"""Orchestrator settings, read once from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping


@dataclass(frozen=True)
class Settings:
    nats_url: str = "nats://127.0.0.1:4222"
    http_host: str = "127.0.0.1"
    http_port: int = 8082
    providers: str = "real"  # real | fixed
    data_dir: Path = Path("var")
    env: Mapping[str, str] = field(default_factory=dict)  # LLM_* and session defaults

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        return cls(
            nats_url=env.get("NATS_URL", cls.nats_url),
            http_host=env.get("PARLEY_HTTP_HOST", cls.http_host),
            http_port=int(env.get("PARLEY_HTTP_PORT", cls.http_port)),
            providers=env.get("PARLEY_PROVIDERS", cls.providers),
            data_dir=Path(env.get("PARLEY_DATA_DIR", "var")),
            env=env,
        )
