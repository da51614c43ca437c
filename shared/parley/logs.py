"""Structured logs: one JSON object per line on stderr, secrets redacted.

Every service calls ``setup(service)`` first thing (so that even a refused
setting is one JSON line), then ``setup(service, settings.log_level,
secrets=settings.secrets())`` once its settings are read: the level is
PARLEY_LOG_LEVEL, and the values of its secret settings never reach a line.
Fields passed as ``extra={...}`` (session_id, run_id, event, state_from,
state_to, commands, ...) become keys of the JSON line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Iterable

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

# Values that must never reach a log line, whatever the caller passed.
_SECRET_KEYS = re.compile(r"(api[_-]?key|auth[_-]?token|authorization|signature|password|secret)", re.I)
_SECRET_VALUES = [
    re.compile(r"(Bearer\s+)[A-Za-z0-9._\-]+"),
    re.compile(r"(sk-)[A-Za-z0-9_\-]{8,}"),
    # A session token in a URL (/ws/pcm?token=..., as the interface has it):
    # uvicorn logs the WebSocket's request line.
    re.compile(r"([?&](?:token|access_token)=)[^&\s\"\\]+"),
]


def redact(text: str, secrets: list[str]) -> str:
    for s in secrets:
        text = text.replace(s, "[REDACTED]")
    for pattern in _SECRET_VALUES:
        text = pattern.sub(r"\1[REDACTED]", text)
    return text


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str, secrets: Iterable[str] = ()):
        super().__init__()
        self.service = service
        self.secrets = [s for s in secrets if len(s) >= 4]  # shorter would redact ordinary words

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


def setup(service: str, level: str = "INFO", stream=None, secrets: Iterable[str] = ()) -> logging.Logger:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(service, secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("uvicorn.access", "httpx", "httpcore", "aioice", "aiortc", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return logging.getLogger(service)
