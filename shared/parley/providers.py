"""What the ASR and TTS services share about cloud providers: how a failure
is named, and when a failing provider is tried again.

An adapter turns whatever its vendor did (an HTTP status at the WebSocket
handshake, a close code, an error message, silence) into one
``ProviderError`` with a ``kind``; the service then falls back to the next
provider for that piece of work, reports ``ProviderFailed`` on the session
and counts it. ``Breaker`` decides whether the failing provider is asked at
all for the next piece of work: it is pure (the time comes in as an
argument), so it is tested on its own.

    auth        the key was refused (HTTP 401/403): tried again after ``auth_cooldown``
    rate_limit  HTTP 429 or the vendor's own limit message: after Retry-After, or ``cooldown``
    dropped     the socket or the response broke mid-stream: tried again at once, then backs off
    timeout     no first byte (or no next byte) in time: backs off like ``dropped``
    refused     any other refusal (HTTP 4xx/5xx, a vendor error message)

Nothing here ever holds a key: adapters put keys in headers only, never in a
URL or a message, so an error text is safe to log and to publish.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["auth", "rate_limit", "dropped", "timeout", "refused"]


class ProviderError(Exception):
    """A provider failed one piece of work. ``spoken`` (TTS): how many
    characters of the text are known to have been delivered as audio before
    the failure (-1: unknown)."""

    def __init__(self, provider: str, kind: Kind, message: str, *, retry_after: float | None = None, spoken: int = -1):
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.kind: Kind = kind
        self.retry_after = retry_after
        self.spoken = spoken


def kind_of_status(status: int) -> Kind:
    if status in (401, 403):
        return "auth"
    if status == 429:
        return "rate_limit"
    return "refused"


def retry_after(headers) -> float | None:
    """Seconds from a Retry-After header (a number of seconds; dates are not honoured)."""
    value = (headers or {}).get("retry-after") or (headers or {}).get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def handshake_refused(provider: str, status: int, headers, body: bytes | str | None, keys: tuple[str, ...], header: str = "") -> ProviderError:
    """The error for a WebSocket handshake the provider answered with an
    HTTP status: its kind from the status, its Retry-After, and a short reason
    (the first of ``keys`` in a JSON body; else the ``header`` the vendor
    puts its reason in, or the body's text)."""
    reason = ""
    try:
        data = json.loads(body or b"")
        if isinstance(data, dict):
            reason = str(next((data[k] for k in keys if data.get(k)), ""))[:200]
        else:
            raise ValueError("not an object")
    except ValueError:
        text = body[:200].decode(errors="replace") if isinstance(body, bytes) else str(body or "")[:200]
        reason = ((headers or {}).get(header, "") if header else "") or text
    return ProviderError(provider, kind_of_status(status), f"connection refused: HTTP {status} {reason}".strip(), retry_after=retry_after(headers))


@dataclass
class Breaker:
    """When to ask a failing provider again.

    A refused key stays refused for ``auth_cooldown`` (a deployer fixes a key
    in minutes, not milliseconds; asking on every utterance would only add
    latency and log noise). A rate limit waits for Retry-After, else
    ``cooldown``. A dropped socket or a timeout is tried again at once the
    first time (a blip), then backs off doubling from ``cooldown`` up to
    ``max_cooldown``. A success closes the breaker.
    """

    cooldown: float = 2.0
    max_cooldown: float = 60.0
    auth_cooldown: float = 60.0
    open_until: float = 0.0
    failures: int = 0
    last_error: str = ""
    history: list[str] = field(default_factory=list)

    def allows(self, now: float) -> bool:
        return now >= self.open_until

    def failed(self, error: ProviderError, now: float) -> float:
        """Record a failure; returns how long the provider is skipped."""
        self.failures += 1
        self.last_error = str(error)
        if error.kind == "auth":
            wait = self.auth_cooldown
        elif error.kind == "rate_limit":
            wait = error.retry_after if error.retry_after is not None else self.cooldown
        elif self.failures == 1:
            wait = 0.0
        else:
            wait = min(self.max_cooldown, self.cooldown * 2 ** (self.failures - 2))
        self.open_until = max(self.open_until, now + wait)
        return wait

    def succeeded(self) -> None:
        self.failures = 0
        self.open_until = 0.0
