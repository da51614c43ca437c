"""Structured logs: one JSON object per line on stderr, secrets redacted.

Every service calls ``setup(service)`` once. Fields passed as ``extra={...}``
(session_id, run_id, event, state_from, state_to, commands, ...) become keys
of the JSON line. The level comes from PARLEY_LOG_LEVEL (default INFO).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

# Values that must never reach a log line, whatever the caller passed.
_SECRET_KEYS = re.compile(r"(api[_-]?key|auth[_-]?token|authorization|signature|password|secret)", re.I)
_SECRET_VALUES = [
    re.compile(r"(Bearer\s+)[A-Za-z0-9._\-]+"),
    re.compile(r"(sk-)[A-Za-z0-9_\-]{8,}"),
]


def _secrets_from_env() -> list[str]:
    names = ("LLM_API_KEY", "TWILIO_AUTH_TOKEN", "OPENAI_API_KEY", "PARLEY_INSPECT_TOKEN")
    return [v for n in names if (v := os.environ.get(n)) and len(v) >= 4]


def redact(text: str, secrets: list[str]) -> str:
    for s in secrets:
        text = text.replace(s, "[REDACTED]")
    for pattern in _SECRET_VALUES:
        text = pattern.sub(r"\1[REDACTED]", text)
    return text


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str):
        super().__init__()
        self.service = service
        self.secrets = _secrets_from_env()

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key in _STANDARD or key.startswith("_"):
                continue
            out[key] = "[REDACTED]" if _SECRET_KEYS.search(key) else value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(out, default=str), self.secrets)


def setup(service: str, level: str | None = None, stream=None) -> logging.Logger:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("PARLEY_LOG_LEVEL", "INFO")).upper())
    for noisy in ("uvicorn.access", "httpx", "httpcore", "aioice", "aiortc", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return logging.getLogger(service)


def now() -> float:
    return time.time()
