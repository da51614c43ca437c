"""Admission: how many calls this gateway carries at once, and the answer a
caller gets when it is full (issue 10 point 7).

A box that takes every call degrades every call once it is past its capacity
(late audio, slow answers for everyone). So each gateway carries at most
``PARLEY_MAX_CALLS`` calls; the default comes from the capacity benchmark
(docs/BENCHMARKS.md, "Admission"). Past it, a new call is refused at the
door, with an answer each transport understands:

* Twilio's webhook: TwiML ``<Reject reason="busy"/>`` (the caller hears a
  busy signal; Twilio does not bill a rejected call); a media stream that
  arrives anyway (no webhook in front) is closed with 1013 "try again later";
* ``/ws/pcm``: an ``error`` message with ``status`` 503 and ``retry_after``,
  then close code 1013;
* ``POST /webrtc/offer``, ``/api/sessions``, ``/api/demo/session``: HTTP 503
  with ``Retry-After``.

Calls already in progress are never touched. A call holds its place from
``Call.start`` to ``Call.end``. Several gateways behind a load balancer each
keep their own count: a refused caller retries and may reach another one
(the webhook's ``Retry-After`` / Twilio's fallback URL).

The rest of the stack counts too (``parley.load``): every ASR, orchestrator
and TTS replica reports its sessions and capacity; when one kind's replicas
together are full, a new call is refused the same way, and the answer says
which service is full (``Admission.full_kind``).
"""

from __future__ import annotations

import logging

from parley.load import LoadBoard, Total

log = logging.getLogger("parley.gateway")

# WebSocket close code 1013: "Try Again Later" (RFC 6455 registry).
CLOSE_TRY_AGAIN = 1013


class Admission:
    def __init__(self, limit: int, retry_after: int, stats: dict | None = None, board: LoadBoard | None = None):
        self.limit = limit
        self.retry_after = retry_after
        self.stats = stats if stats is not None else {}
        self.calls: set[str] = set()  # sessions holding a place
        self.board = board  # the rest of the stack's load (None: this gateway's own count only)
        self.full_kind: Total | None = None  # why the last ``full`` said yes, when another service is full

    @property
    def full(self) -> bool:
        """No room for one more call: this gateway's own limit, or a kind of
        service whose replicas are all full (``full_kind`` says which)."""
        self.full_kind = None
        if len(self.calls) >= self.limit:
            return True
        self.full_kind = self.board.full() if self.board is not None else None
        return self.full_kind is not None

    def message(self) -> str:
        if self.full_kind is not None:
            return f"all lines are busy ({self.full_kind.describe()}): try again in {self.retry_after} s"
        return f"all lines are busy ({self.limit} calls in progress): try again in {self.retry_after} s"

    @property
    def which(self) -> str:
        """The service that is full: "gateway" (this one), or a kind."""
        return self.full_kind.kind if self.full_kind is not None else "gateway"

    def refuse(self, transport: str) -> str:
        """Count and log one refused call (after ``full`` said yes); returns what to tell the caller."""
        key = f"busy_refused_{transport}"
        self.stats[key] = self.stats.get(key, 0) + 1
        full = f"busy_full_{self.which}"
        self.stats[full] = self.stats.get(full, 0) + 1
        extra = {"transport": transport, "calls": len(self.calls), "max_calls": self.limit, "full": self.which}
        if self.full_kind is not None:
            extra |= {"active": self.full_kind.active, "capacity": self.full_kind.capacity, "replicas": self.full_kind.replicas}
        log.warning("call refused: %s is full", "the gateway" if self.full_kind is None else f"the {self.which} service", extra=extra)
        return self.message()

    def enter(self, session: str) -> None:
        if self.board is not None and session not in self.calls:
            self.board.let_in()
        self.calls.add(session)
        self.stats["calls_active"] = len(self.calls)
        self.stats["calls_peak"] = max(self.stats.get("calls_peak", 0), len(self.calls))

    def leave(self, session: str) -> None:
        self.calls.discard(session)
        self.stats["calls_active"] = len(self.calls)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}
