"""Who may start a session, place a call, or watch one: the gateway's checks.

One module for every HTTP and WebSocket entry point, so they all ask the same
questions the same way:

* **The API key** (``PARLEY_API_KEY``, ``Authorization: Bearer``): a
  deployer's backend mints session tokens (``POST /api/sessions``) and places
  calls (``POST /api/calls``). Unset, both are off.
* **Session grants**: a session starts only with a token from
  ``POST /api/sessions`` (or, in the local demo mode ``make run`` uses, from
  ``POST /api/demo/session`` for the page itself). A token is random, lives
  ``PARLEY_SESSION_TOKEN_TTL`` seconds and is accepted once; parameters given
  when it was minted belong to it. Grants live in a NATS KV bucket
  (``SharedGrants``: single use by compare-and-set, the bucket's TTL forgets
  them), so any gateway replica admits a token another minted, once; a
  deployer's backend revokes an unused one (``DELETE /api/sessions/{id}``).
  ``Grants`` is the same in process memory (unit tests, fuzzing).
* **Origin**: a browser says which page opened a WebSocket or posted an
  offer. The gateway's own page (same origin as the Host) and the origins in
  ``PARLEY_ALLOWED_ORIGINS`` may; any other site may not, even with a token.
  Clients that are not browsers send no Origin and are judged by the token.
* **Rate**: new sessions (and demo tokens, and inspector log-ins) per client
  address, ``PARLEY_SESSION_RATE`` = N per S seconds; past it a clear error
  says when to try again.
* **The inspector token** (``PARLEY_INSPECT_TOKEN``): in an
  ``Authorization: Bearer`` header, or the HttpOnly cookie that
  ``POST /api/inspect/login`` sets; never in a URL (proxy logs, browser
  history).

Everything here is plain data and functions; the routes call them.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Mapping, NamedTuple
from urllib.parse import urlsplit

from parley.session_params import Allowed

INSPECT_COOKIE = "parley_inspect"


class Refused(Exception):
    """A request refused: ``status`` (HTTP), ``close`` (WebSocket close code),
    and a message that says what to do."""

    def __init__(self, status: int, message: str, close: int = 1008, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.close = close
        self.retry_after = retry_after


# ------------------------------------------------------------------ API key


def bearer(header: str | None) -> str:
    scheme, _, value = (header or "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def api_key_ok(api_key: str, authorization: str | None) -> bool:
    """``Authorization: Bearer <PARLEY_API_KEY>``, compared in constant time;
    never true when no key is configured."""
    given = bearer(authorization)
    return bool(api_key) and bool(given) and hmac.compare_digest(given.encode(), api_key.encode())


# ------------------------------------------------------------------ grants


@dataclass(frozen=True)
class Grant:
    params: dict[str, str]
    expires_at: float
    origin: str = ""  # who asked ("api", "demo")


@dataclass
class Grants:
    """Single-use session tokens (see the module doc)."""

    ttl: float = 60.0
    limit: int = 100_000  # tokens outstanding at once; the oldest go first
    pending: "OrderedDict[str, Grant]" = field(default_factory=OrderedDict)

    def mint(self, params: dict[str, str], now: float, origin: str = "api") -> tuple[str, Grant]:
        self._expire(now)
        while len(self.pending) >= self.limit:
            self.pending.popitem(last=False)
        token = secrets.token_urlsafe(24)
        grant = Grant(params=dict(params), expires_at=now + self.ttl, origin=origin)
        self.pending[_key(token)] = grant
        return token, grant

    def redeem(self, token: str | None, now: float) -> Grant:
        """The grant, once; Refused(401) for a missing, unknown, used or
        expired token."""
        if not token:
            raise Refused(401, "a session needs a token: get one from POST /api/sessions (Authorization: Bearer $PARLEY_API_KEY) and pass it once as ?token= (or \"token\" in the WebRTC offer)")
        grant = self.pending.pop(_key(token), None) if isinstance(token, str) and len(token) < 200 else None
        if grant is None:
            raise Refused(401, "invalid session token: unknown, already used, or expired (a token is good for one session)")
        if grant.expires_at < now:
            raise Refused(401, "session token expired: mint a new one just before connecting")
        return grant

    def _expire(self, now: float) -> None:
        while self.pending:
            key, grant = next(iter(self.pending.items()))
            if grant.expires_at >= now:
                break
            del self.pending[key]


    def revoke(self, grant_id: str, now: float) -> str:
        """"revoked", or "unknown" (never minted, used, or expired)."""
        self._expire(now)
        return "revoked" if self.pending.pop(grant_id, None) is not None else "unknown"


class SharedGrants:
    """Grants in a NATS KV bucket (``subjects.GRANTS_BUCKET``), shared by every
    gateway replica: the key is the token's SHA-256 (the grant's ``id``; the
    token itself is never stored), the value the grant and its state
    (fresh, used, revoked). Redeeming is a compare-and-set from fresh to used
    on the entry's revision, so of two replicas given the same token at once
    exactly one admits it. The bucket's TTL drops entries after the token's
    lifetime; the expiry in the value is checked too."""

    def __init__(self, kv, ttl: float = 60.0):
        self.kv = kv
        self.ttl = ttl

    async def mint(self, params: dict[str, str], now: float, origin: str = "api") -> tuple[str, Grant]:
        token = secrets.token_urlsafe(24)
        grant = Grant(params=dict(params), expires_at=now + self.ttl, origin=origin)
        await self.kv.create(_key(token), _encode(grant, "fresh"))
        return token, grant

    async def redeem(self, token: str | None, now: float) -> Grant:
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

        if not token:
            raise Refused(401, _NO_TOKEN)
        if not isinstance(token, str) or len(token) >= 200:
            raise Refused(401, _UNKNOWN_TOKEN)
        key = _key(token)
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:  # KeyDeletedError is one too
            raise Refused(401, _UNKNOWN_TOKEN) from None
        grant, state = _decode(entry.value)
        if state == "used":
            raise Refused(401, _UNKNOWN_TOKEN)
        if state == "revoked":
            raise Refused(401, "session token revoked by the service that minted it")
        if grant.expires_at < now:
            raise Refused(401, "session token expired: mint a new one just before connecting")
        try:
            await self.kv.update(key, _encode(grant, "used"), last=entry.revision)
        except KeyWrongLastSequenceError:  # another replica took it (or it was revoked) just now
            raise Refused(401, _UNKNOWN_TOKEN) from None
        return grant

    async def revoke(self, grant_id: str, now: float) -> str:
        """"revoked", "used" (too late: the session started), or "unknown"."""
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

        if len(grant_id) != 64 or any(c not in "0123456789abcdef" for c in grant_id):
            return "unknown"
        for _ in range(3):
            try:
                entry = await self.kv.get(grant_id)
            except KeyNotFoundError:
                return "unknown"
            grant, state = _decode(entry.value)
            if state != "fresh" or grant.expires_at < now:
                return "used" if state == "used" else "unknown" if state == "fresh" else state
            try:
                await self.kv.update(grant_id, _encode(grant, "revoked"), last=entry.revision)
                return "revoked"
            except KeyWrongLastSequenceError:
                continue
        return "unknown"


_NO_TOKEN = "a session needs a token: get one from POST /api/sessions (Authorization: Bearer $PARLEY_API_KEY) and pass it once as ?token= (or \"token\" in the WebRTC offer)"
_UNKNOWN_TOKEN = "invalid session token: unknown, already used, or expired (a token is good for one session)"


def _encode(grant: Grant, state: str) -> bytes:
    return json.dumps({"params": grant.params, "expires_at": grant.expires_at, "origin": grant.origin, "state": state}).encode()


def _decode(data: bytes) -> tuple[Grant, str]:
    d = json.loads(data)
    return Grant(params=dict(d["params"]), expires_at=float(d["expires_at"]), origin=str(d.get("origin", ""))), str(d["state"])


def grant_id(token: str) -> str:
    """The grant's public id (what revoking names): the token's SHA-256."""
    return _key(token)


def _key(token: str) -> str:
    # Only a hash is kept: a memory dump or a log of the table shows no usable token.
    return hashlib.sha256(token.encode()).hexdigest()


# ------------------------------------------------------------------ rate


@dataclass
class RateLimit:
    """At most ``n`` new sessions per ``per`` seconds per client address (a
    token bucket: a burst of ``n``, then one every ``per / n`` s)."""

    n: int = 20
    per: float = 60.0
    buckets: "OrderedDict[str, tuple[float, float]]" = field(default_factory=OrderedDict)  # addr -> (tokens, at)
    limit: int = 100_000  # addresses remembered

    def take(self, addr: str, now: float) -> None:
        if self.n <= 0:
            return
        rate = self.n / self.per
        tokens, at = self.buckets.pop(addr, (float(self.n), now))
        tokens = min(float(self.n), tokens + (now - at) * rate)
        if tokens < 1:
            self.buckets[addr] = (tokens, now)
            wait = (1 - tokens) / rate
            raise Refused(
                429,
                f"too many new sessions from {addr}: at most {self.n} every {self.per:g} s; try again in {wait:.0f} s",
                close=1013,
                retry_after=wait,
            )
        self.buckets[addr] = (tokens - 1, now)
        while len(self.buckets) > self.limit:
            self.buckets.popitem(last=False)


class Rate(NamedTuple):
    """N new sessions per S seconds per client address (0: no limit)."""

    count: int
    per: float

    def __str__(self) -> str:
        return "0" if self.count == 0 else f"{self.count}/{self.per:g}"


def parse_rate(value: str) -> Rate:
    """``"N/S"``: N new sessions per S seconds per address (``0`` = no limit)."""
    text = value.strip()
    if text == "0":
        return Rate(0, 1.0)
    n, sep, per = text.partition("/")
    try:
        count, seconds = int(n), float(per) if sep else 60.0
    except ValueError:
        count, seconds = -1, 0.0
    if count < 1 or not 0 < seconds <= 86400:
        raise ValueError(f"{value!r} is not N/SECONDS or 0")
    return Rate(count, seconds)


# ------------------------------------------------------------------ origin


def origin_ok(origin: str | None, host: str | None, allowed: tuple[str, ...]) -> bool:
    """A browser's Origin header against the Host it called and the allowed
    origins. No Origin: not a browser (a token still has to be shown)."""
    if origin is None:
        return True
    origin = origin.strip().lower()
    if origin in (a.lower().rstrip("/") for a in allowed):
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False  # "null" (a sandboxed frame, a file:// page) and the like
    return bool(host) and parts.netloc == host.strip().lower()


def check_origin(headers: Mapping[str, str], allowed: tuple[str, ...]) -> None:
    if not origin_ok(headers.get("origin"), headers.get("host"), allowed):
        raise Refused(403, f"origin {headers.get('origin', '')[:80]!r} may not open sessions here (the gateway's own page may; others need PARLEY_ALLOWED_ORIGINS)")


def parse_origins(value: str) -> tuple[str, ...]:
    out = []
    for item in filter(None, (v.strip() for v in value.split(","))):
        parts = urlsplit(item)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ValueError(f"{item!r} is not an origin like https://app.example.com")
        out.append(f"{parts.scheme}://{parts.netloc}".lower())
    return tuple(out)


# ------------------------------------------------------------------ demo mode

def demo_allows(mode: str, client: str | None) -> bool:
    """Whether the page may get a token without a key: never when off; in
    "local" only for a client on this machine (loopback; behind a local proxy
    or tunnel, the address it forwards); in "open" for anyone."""
    if mode == "open":
        return True
    if mode != "local" or not client:
        return False
    try:
        return ipaddress.ip_address(client).is_loopback
    except ValueError:
        return False


# ------------------------------------------------------------------ inspector


def inspect_cookie(token: str) -> str:
    """The cookie's value: derived from the token (so the token itself is not
    stored in the browser), checked without server state."""
    return hmac.new(token.encode(), b"parley inspector cookie", hashlib.sha256).hexdigest()


def inspector_ok(token: str, headers: Mapping[str, str], cookies: Mapping[str, str]) -> bool:
    """The inspector token in ``Authorization: Bearer``, or the cookie."""
    if not token:
        return False
    given = bearer(headers.get("authorization"))
    if given:
        return hmac.compare_digest(given.encode(), token.encode())
    cookie = cookies.get(INSPECT_COOKIE, "")
    return bool(cookie) and hmac.compare_digest(cookie.encode(), inspect_cookie(token).encode())


# ------------------------------------------------------------------ sessions


@dataclass
class Gate:
    """What the entry points share: grants, the rate limit, the rules."""

    grants: Grants
    rate: RateLimit
    allowed_params: Allowed
    allowed_origins: tuple[str, ...] = ()
    clock: object = time.time
    shared: SharedGrants | None = None  # set once the bus is up: then grants live there

    def now(self) -> float:
        return self.clock()  # type: ignore[operator]

    async def mint(self, params: dict[str, str], origin: str = "api") -> tuple[str, Grant]:
        if self.shared is not None:
            return await self.shared.mint(params, self.now(), origin)
        return self.grants.mint(params, self.now(), origin)

    async def redeem(self, token: str | None) -> Grant:
        if self.shared is not None:
            return await self.shared.redeem(token, self.now())
        return self.grants.redeem(token, self.now())

    async def revoke(self, grant_id: str) -> str:
        if self.shared is not None:
            return await self.shared.revoke(grant_id, self.now())
        return self.grants.revoke(grant_id, self.now())

    async def admit(self, headers: Mapping[str, str], client: str | None, token: str | None, url_params: Mapping[str, str]) -> dict[str, str]:
        """A new browser/pcm/WebRTC session: origin, rate, token, parameters
        (the grant's, then the URL's on top, both checked against the
        deployment's allow-list). Returns the session's parameters, or
        raises Refused."""
        check_origin(headers, self.allowed_origins)
        self.rate.take(client or "unknown", self.now())
        extra = self.params(url_params)  # before the token is spent
        grant = await self.redeem(token)
        return {**grant.params, **extra}

    def params(self, params: Mapping[str, str]) -> dict[str, str]:
        try:
            return self.allowed_params.validate(params)
        except ValueError as exc:
            raise Refused(400, str(exc)) from None
