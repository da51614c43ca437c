"""Outbound calls through Twilio: ``POST /api/calls`` and the call's callbacks.

``POST /api/calls`` (``Authorization: Bearer $PARLEY_API_KEY``) with JSON
``{"to": "+15551234567", "from": "+1...", "params": {...},
"voicemail_message": "..."}`` makes a session id, and asks Twilio's REST API
to place the call (``twilio_rest.create_call``) with:

* ``Url``: our voice webhook (``/twilio/voice``) with the session id and the
  agent's parameters in its query: once the callee answers, Twilio requests
  it and the call goes on like an incoming one (``<Connect><Stream>``), in
  that session;
* ``StatusCallback`` (``/twilio/status``) for initiated, ringing, answered,
  completed (and busy, no-answer, failed, canceled);
* asynchronous answering-machine detection that waits for the end of a
  voicemail greeting (``DetectMessageEnd``), reported to ``/twilio/amd``.

Both callbacks carry the session in their URL (Twilio signs the whole URL,
so it is as trustworthy as the body) and become ``CallStatus`` events in the
session's log. This module only translates: what a machine answer means for
the conversation is the reducer's decision.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from urllib.parse import urlencode

import msgspec
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from parley import bus, subjects
from parley.contract import CallStatus

from . import auth
from . import twilio_protocol as tp
from . import twilio_rest
from .settings import Settings
from .twilio_media import OUTBOUND_PREFIX, webhook_fields

log = logging.getLogger("parley.gateway")

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")


class PlaceCall(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    to: str
    from_: str = msgspec.field(default="", name="from")
    params: dict[str, str] = {}
    # What an answering machine hears after the beep ("" = hang up on machines).
    voicemail_message: str = ""


def _count(stats: dict, key: str) -> None:
    stats[key] = stats.get(key, 0) + 1


def _refuse(status: int, error: str) -> JSONResponse:
    return JSONResponse({"error": error}, status_code=status)


def authorized(settings: Settings, header: str | None) -> bool:
    return auth.api_key_ok(settings.api_key, header)


def call_form(settings: Settings, base: str, session: str, req: PlaceCall) -> dict:
    """The Calls.json form for one outbound call (``base``: our public URL)."""
    query = {"session": session, "direction": "outbound", **req.params}
    if req.voicemail_message:
        query["voicemail_message"] = req.voicemail_message
    callback = f"{base}/twilio/status?{urlencode({'session': session})}"
    return {
        "To": req.to,
        "From": req.from_ or settings.twilio_caller_id,
        "Url": f"{base}/twilio/voice?{urlencode(query)}",
        "Method": "POST",
        "StatusCallback": callback,
        "StatusCallbackMethod": "POST",
        "StatusCallbackEvent": list(STATUS_EVENTS),
        "MachineDetection": "DetectMessageEnd",
        "AsyncAmd": "true",
        "AsyncAmdStatusCallback": f"{base}/twilio/amd?{urlencode({'session': session})}",
        "AsyncAmdStatusCallbackMethod": "POST",
    }


def register(app: FastAPI, state: dict, settings: Settings) -> None:
    @app.post("/api/calls")
    async def place_call(request: Request):
        stats = state["stats"]
        if not settings.api_key:
            return _refuse(503, "outbound calls are off: set PARLEY_API_KEY on the gateway")
        if not authorized(settings, request.headers.get("authorization")):
            _count(stats, "api_calls_unauthorized")
            return _refuse(401, "needs Authorization: Bearer <PARLEY_API_KEY>")
        missing = [n for n, v in (("TWILIO_ACCOUNT_SID", settings.twilio_account_sid), ("TWILIO_AUTH_TOKEN", settings.twilio_auth_token)) if not v]
        if missing:
            return _refuse(503, f"outbound calls need {' and '.join(missing)}")
        try:
            req = msgspec.json.decode(await request.body(), type=PlaceCall)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return _refuse(400, f"invalid request: {exc}")
        try:
            # The session's parameters: only what the deployment lets sessions set.
            state["gate"].params({**req.params, **({"voicemail_message": req.voicemail_message} if req.voicemail_message else {})})
        except auth.Refused as refused:
            return _refuse(refused.status, str(refused))
        caller_id = req.from_ or settings.twilio_caller_id
        for name, number in (("to", req.to), ("from", caller_id)):
            if not E164.match(number):
                hint = " (or set TWILIO_CALLER_ID)" if name == "from" and not number else ""
                return _refuse(400, f"'{name}' must be a phone number in E.164 form like +15551234567, not {number!r}{hint}")
        host = tp.normalize_host(settings.public_host)
        base = f"https://{host}" if host else str(request.base_url).rstrip("/")
        session = f"{OUTBOUND_PREFIX}{secrets.token_hex(8)}"
        form = call_form(settings, base, session, req)
        try:
            call = await twilio_rest.create_call(settings.twilio_api_base, settings.twilio_account_sid, settings.twilio_auth_token, form)
        except twilio_rest.TwilioApiError as exc:
            _count(stats, "outbound_refused")
            log.warning("outbound call refused: %s", exc, extra={"session_id": session})
            return _refuse(502, str(exc))
        _count(stats, "outbound_calls")
        log.info("outbound call placed", extra={"session_id": session, "call_sid": call["sid"], "to": req.to})
        await _publish(state, session, call.get("status", "queued"), "", call["sid"])
        return JSONResponse({"session": session, "call_sid": call["sid"], "status": call.get("status", "queued")}, status_code=201)

    @app.post("/twilio/whisper")
    async def whisper(request: Request):
        """What the person taking a warm transfer hears first: the summary."""
        _, refused = await webhook_fields(request, settings, state["stats"])
        if refused is not None:
            return refused
        return Response(tp.twiml_say(request.query_params.get("text", "")[:500]), media_type="text/xml")

    @app.post("/twilio/status")
    async def call_status(request: Request):
        return await _callback(request, state, settings, amd=False)

    @app.post("/twilio/amd")
    async def machine_detection(request: Request):
        return await _callback(request, state, settings, amd=True)


async def _callback(request: Request, state: dict, settings: Settings, amd: bool) -> Response:
    """A status or answering-machine callback -> a CallStatus event."""
    stats = state["stats"]
    fields, refused = await webhook_fields(request, settings, stats)
    if refused is not None:
        return refused
    session = request.query_params.get("session", "")
    try:
        subjects.session_token(session)
    except ValueError:
        return Response("session missing or invalid", status_code=400, media_type="text/plain")
    status = fields.get("CallStatus", "in-progress" if amd else "")
    if not status:
        return Response("CallStatus missing", status_code=400, media_type="text/plain")
    await _publish(state, session, status, fields.get("AnsweredBy", ""), fields.get("CallSid", ""))
    _count(stats, "twilio_amd_callbacks" if amd else "twilio_status_callbacks")
    return Response(status_code=204)


async def _publish(state: dict, session: str, status: str, answered_by: str, call_sid: str) -> None:
    event = CallStatus(session=session, at=time.time(), status=status[:40], answered_by=answered_by[:40], provider_call=call_sid[:64])
    await bus.publish_event(state["nc"], event)
