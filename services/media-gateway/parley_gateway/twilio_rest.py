"""Twilio's REST API: placing a call, and hanging one up.

Placing a call: ``POST {base}/2010-04-01/Accounts/{AccountSid}/Calls.json``
with ``To``, ``From``, ``Url`` (the voice webhook Twilio requests once the
call is answered), ``StatusCallback`` + ``StatusCallbackEvent`` (initiated,
ringing, answered, completed) and asynchronous answering-machine detection
(``MachineDetection=DetectMessageEnd``, ``AsyncAmd=true``,
``AsyncAmdStatusCallback``): Twilio answers 201 with the Call resource (its
``sid``), then calls the callbacks.

When the agent ends a session (EndSession), closing the media WebSocket would
also end a ``<Connect><Stream>`` call, but only once Twilio notices and runs
out of TwiML. Updating the Call resource with ``Status=completed`` ends it at
once, whatever TwiML follows. This needs TWILIO_ACCOUNT_SID and
TWILIO_AUTH_TOKEN; without them the gateway only closes the socket.

Twilio's API (2010-04-01): ``POST {base}/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json``,
form body ``Status=completed``, HTTP basic auth with the account SID and auth
token. ``base`` is configurable (TWILIO_API_BASE) so tests point it at a local
server speaking the same API.
"""

from __future__ import annotations

import asyncio
import logging
import re

from typing import Mapping, Sequence

import httpx

log = logging.getLogger("parley.gateway")

_SID = re.compile(r"^[A-Za-z0-9]{2,64}$")
RETRY_STATUSES = {429, 500, 502, 503, 504}


def hangup_request(base: str, account_sid: str, call_sid: str) -> tuple[str, dict[str, str]]:
    """(url, form) of the request that completes a call. SIDs go into the
    path, so they must be plain identifiers."""
    for name, sid in (("account SID", account_sid), ("call SID", call_sid)):
        if not _SID.match(sid or ""):
            raise ValueError(f"invalid Twilio {name} {sid!r}")
    return f"{base.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json", {"Status": "completed"}


async def hang_up(base: str, account_sid: str, auth_token: str, call_sid: str, *, timeout: float = 5.0, attempts: int = 2) -> bool:
    """Complete the call; True when Twilio accepted it. Never raises: a failed
    hang-up is logged (the socket is closed anyway, which ends the stream)."""
    try:
        url, form = hangup_request(base, account_sid, call_sid)
    except ValueError as exc:
        log.error("not hanging up: %s", exc, extra={"call_sid": call_sid})
        return False
    # Honour proxy settings for the real API, never for a local one.
    local = httpx.URL(url).host in ("127.0.0.1", "localhost", "::1")
    async with httpx.AsyncClient(timeout=timeout, trust_env=not local) as client:
        for attempt in range(1, attempts + 1):
            try:
                r = await client.post(url, data=form, auth=(account_sid, auth_token))
            except httpx.HTTPError as exc:
                status, detail = None, f"{type(exc).__name__}: {exc}"
            else:
                if r.is_success:
                    log.info("call hung up through the Twilio API", extra={"call_sid": call_sid, "status": r.status_code})
                    return True
                status, detail = r.status_code, r.text[:300]
            retry = attempt < attempts and (status is None or status in RETRY_STATUSES)
            log.warning(
                "Twilio API hang-up failed%s", " (retrying)" if retry else "", extra={"call_sid": call_sid, "status": status, "error": detail}
            )
            if not retry:
                return False
            await asyncio.sleep(0.3 * attempt)
    return False


class TwilioApiError(RuntimeError):
    """Twilio refused a request; the message is Twilio's own (never secrets)."""

    def __init__(self, status: int | None, message: str):
        super().__init__(message)
        self.status = status


def _client(url: str, timeout: float) -> httpx.AsyncClient:
    # Honour proxy settings for the real API, never for a local one.
    local = httpx.URL(url).host in ("127.0.0.1", "localhost", "::1")
    return httpx.AsyncClient(timeout=timeout, trust_env=not local)


async def create_call(base: str, account_sid: str, auth_token: str, form: Mapping[str, str | Sequence[str]], *, timeout: float = 10.0) -> dict:
    """Place a call; returns Twilio's Call resource (``sid``, ``status``...).
    Raises ``TwilioApiError`` with Twilio's message when it refuses."""
    if not _SID.match(account_sid or ""):
        raise TwilioApiError(None, f"invalid Twilio account SID {account_sid!r}")
    url = f"{base.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Calls.json"
    async with _client(url, timeout) as client:
        try:
            r = await client.post(url, data=dict(form), auth=(account_sid, auth_token))
        except httpx.HTTPError as exc:
            raise TwilioApiError(None, f"Twilio API unreachable: {type(exc).__name__}: {exc}") from exc
    try:
        body = r.json()
    except ValueError:
        body = {"message": r.text[:300]}
    if not r.is_success or not isinstance(body, dict) or "sid" not in body:
        message = body.get("message") if isinstance(body, dict) else None
        raise TwilioApiError(r.status_code, f"Twilio refused the call ({r.status_code}): {message or r.text[:300]}")
    return body


async def redirect(base: str, account_sid: str, auth_token: str, call_sid: str, twiml: str, *, timeout: float = 5.0) -> bool:
    """Replace a live call's TwiML (``Twiml=...`` on the Call resource), e.g.
    a ``<Dial>`` for a transfer. True when Twilio accepted it; never raises."""
    try:
        url, _ = hangup_request(base, account_sid, call_sid)
    except ValueError as exc:
        log.error("not redirecting: %s", exc, extra={"call_sid": call_sid})
        return False
    async with _client(url, timeout) as client:
        try:
            r = await client.post(url, data={"Twiml": twiml}, auth=(account_sid, auth_token))
        except httpx.HTTPError as exc:
            log.warning("Twilio API redirect failed", extra={"call_sid": call_sid, "error": f"{type(exc).__name__}: {exc}"})
            return False
    if not r.is_success:
        log.warning("Twilio API redirect refused", extra={"call_sid": call_sid, "status": r.status_code, "error": r.text[:300]})
    return r.is_success
