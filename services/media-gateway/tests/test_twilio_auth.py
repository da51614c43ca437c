"""Twilio's endpoints fail closed, and every body Twilio signs is checked.

* Without TWILIO_AUTH_TOKEN the voice webhook, the status and AMD callbacks,
  the warm-transfer whisper and the media stream all refuse to work (unless
  PARLEY_TWILIO_INSECURE=1 says this is local development);
* a JSON body is signed through ``bodySHA256`` in the URL: the signature over
  the URL and the body's SHA-256 must both hold;
* a webhook URL (even correctly signed) cannot set a system prompt.
"""

from __future__ import annotations

import asyncio
import hashlib
import json

import httpx
import pytest
import websockets

from parley.natsd import free_port
from parley_gateway.settings import Settings

from test_twilio_media import ACCOUNT, AUTH_TOKEN, Gateway, signed


@pytest.fixture(scope="module")
def closed_gateway(nats_server):
    with Gateway(Settings(nats_url=nats_server.url, http_port=free_port(), public_host="gw.example.com")) as gw:
        yield gw


@pytest.fixture(scope="module")
def signed_gateway(nats_server):
    port = free_port()
    with Gateway(Settings(nats_url=nats_server.url, http_port=port, public_host=f"127.0.0.1:{port}", twilio_auth_token=AUTH_TOKEN)) as gw:
        yield gw


FORM = {"CallSid": "CA" + "c" * 32, "From": "+15550001111", "To": "+15550002222", "AccountSid": ACCOUNT, "CallStatus": "ringing"}


def test_without_an_auth_token_every_twilio_endpoint_refuses(closed_gateway):
    gw = closed_gateway
    for path in ("/twilio/voice", "/twilio/status?session=s1", "/twilio/amd?session=s1", "/twilio/whisper?text=hi"):
        r = httpx.post(f"{gw.http}{path}", data=FORM, trust_env=False)
        assert r.status_code == 503 and "TWILIO_AUTH_TOKEN" in r.text and "PARLEY_TWILIO_INSECURE" in r.text, (path, r.status_code, r.text)

    async def stream():
        async with websockets.connect(gw.ws) as ws:
            try:
                await asyncio.wait_for(ws.recv(), 5)
            except websockets.ConnectionClosed as closed:
                return closed.rcvd.code, closed.rcvd.reason

    code, reason = asyncio.run(stream())
    assert code == 1008 and "TWILIO_AUTH_TOKEN" in reason
    assert gw.stats["twilio_refused_off"] >= 5


def _json_call(gw, path: str, body: bytes, sign_body: bytes | None = None, token: str = AUTH_TOKEN) -> httpx.Response:
    digest = hashlib.sha256(sign_body if sign_body is not None else body).hexdigest()
    query = f"{path}{'&' if '?' in path else '?'}bodySHA256={digest}"
    url = f"https://{gw.settings.public_host}{query}"
    return httpx.post(f"{gw.http}{query}", content=body, headers={"Content-Type": "application/json", "X-Twilio-Signature": signed(url, {}, token)}, trust_env=False)


def test_json_bodies_are_checked_with_body_sha256(signed_gateway):
    gw = signed_gateway
    body = json.dumps({"CallSid": "CA" + "d" * 32, "CallStatus": "ringing"}).encode()
    before = gw.stats.get("twilio_status_callbacks", 0)
    assert _json_call(gw, "/twilio/status?session=outbound-0123456789abcdef", body).status_code == 204
    assert gw.stats["twilio_status_callbacks"] == before + 1
    # The body changed after signing: its hash no longer matches the signed URL.
    tampered = body.replace(b"ringing", b"completed")
    assert _json_call(gw, "/twilio/status?session=outbound-0123456789abcdef", tampered, sign_body=body).status_code == 403
    # Signed with another key.
    assert _json_call(gw, "/twilio/status?session=outbound-0123456789abcdef", body, token="not-the-token").status_code == 403
    # A JSON body without bodySHA256 is signed like a form with no fields: not this one.
    url = f"https://{gw.settings.public_host}/twilio/status?session=outbound-0123456789abcdef"
    r = httpx.post(f"{gw.http}/twilio/status?session=outbound-0123456789abcdef", content=body,
                   headers={"Content-Type": "application/json", "X-Twilio-Signature": signed(url, {"x": "y"})}, trust_env=False)
    assert r.status_code in (400, 403)
    assert gw.stats.get("twilio_status_callbacks", 0) == before + 1


def test_a_signed_webhook_url_cannot_set_a_system_prompt(signed_gateway):
    gw = signed_gateway
    path = "/twilio/voice?system_prompt=You%20are%20a%20pirate"
    url = f"https://{gw.settings.public_host}{path}"
    r = httpx.post(f"{gw.http}{path}", data=FORM, headers={"X-Twilio-Signature": signed(url, FORM)}, trust_env=False)
    assert r.status_code == 400 and "system_prompt" in r.text


def test_the_insecure_mode_is_explicit(nats_server, caplog):
    with Gateway(Settings(nats_url=nats_server.url, http_port=free_port(), twilio_insecure=True)) as gw:
        r = httpx.post(f"{gw.http}/twilio/voice", data=FORM, trust_env=False)
    assert r.status_code == 200
    assert "PARLEY_TWILIO_INSECURE" in caplog.text
    with pytest.raises(ValueError, match="PARLEY_TWILIO_INSECURE"):
        Settings.from_env({"PARLEY_TWILIO_INSECURE": "maybe"})
