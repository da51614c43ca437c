"""Keys out at the Twilio transport: SendDigits becomes a REST call update
(``<Play digits>`` then ``<Connect><Stream>`` back to the session), and the
new stream rejoins the same Call. The test plays Twilio by hand: it reads the
update the gateway sent, stops the old stream, and opens the new one with
the TwiML's parameters, as Twilio documents it.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import xml.etree.ElementTree as ET

import pytest

from parley.callers.twilio import TwilioCaller
from parley.contract import DigitsSent, SendDigits, SessionEnded, SessionStarted
from parley.natsd import free_port
from parley_gateway import twilio_media
from parley_gateway.settings import Settings

from test_twilio_media import ACCOUNT, AUTH_TOKEN, Agent, Gateway, TwilioApi, answer, run, tone


@pytest.fixture
def api():
    a = TwilioApi()
    yield a
    a.close()


@pytest.fixture
def gw(nats_server, api):
    port = free_port()
    settings = Settings(nats_url=nats_server.url, http_port=port, public_host=f"127.0.0.1:{port}", twilio_account_sid=ACCOUNT,
                        twilio_auth_token=AUTH_TOKEN, twilio_api_base=api.base)  # fmt: skip
    with Gateway(settings) as g:
        yield g


async def call_in(gw: Gateway, agent: Agent) -> tuple[TwilioCaller, str]:
    call_sid = "CA" + secrets.token_hex(16)
    params = answer(gw, call_sid)
    caller = TwilioCaller(gw.ws, {**params, "test_call": call_sid}, call_sid=call_sid)
    await caller.connect()
    return caller, await agent.session_of(caller)


async def update_of(api: TwilioApi, call_sid: str, timeout: float = 10) -> dict[str, list[str]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in api.requests:
            if call_sid in r["path"] and "Twiml" in r["form"]:
                return r["form"]
        await asyncio.sleep(0.02)
    raise TimeoutError("no call update")


def digits_sent(agent: Agent, session: str) -> list[DigitsSent]:
    return [e for _, e in agent.of(DigitsSent, session)]


def test_keys_replace_the_stream_and_the_new_one_carries_the_same_call(gw, api, nats_server):
    async def scenario():
        async with Agent(nats_server.url) as agent:
            first, session = await call_in(gw, agent)
            await agent.command(SendDigits(session=session, digits="1w2", call_id="k1", run=3))
            form = await update_of(api, first.call_sid)
            twiml = ET.fromstring(form["Twiml"][0])
            play, stream = twiml.find("./Play"), twiml.find("./Connect/Stream")
            params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
            assert digits_sent(agent, session) == []  # not before the stream is back
            await first.hang_up()  # Twilio stops the replaced stream (stop, then close)
            await asyncio.sleep(0.5)  # the keys play on the line
            second = TwilioCaller(gw.ws, params, call_sid=first.call_sid)
            await second.connect()
            await agent.wait(lambda e: isinstance(e, DigitsSent) and e.session == session, 10, "DigitsSent")
            # The call goes on on the new stream: the agent's audio reaches it.
            await agent.speak(session, 4, [tone(440, 0.6, 8000)], rate=8000)
            await second.wait_until(lambda: len(second.played_audio()) >= 2 * 8000 * 0.4, 10, "audio on the new stream")
            await second.hang_up()
            await agent.wait(lambda e: isinstance(e, SessionEnded) and e.session == session, 10, "SessionEnded")
            return play, stream, params, agent, session, first, second

    play, stream, params, agent, session, first, second = run(scenario())
    assert play.get("digits") == "1w2" and stream.get("url") == f"wss://{gw.settings.public_host}/twilio/media"
    assert params["session"] == session and params["rejoin"] == "1" and params["token"]
    assert [(e.digits, e.call_id, e.ok) for e in digits_sent(agent, session)] == [("1w2", "k1", True)]
    assert len(agent.of(SessionStarted, session)) == 1  # one session, never started again
    (_, ended), = agent.of(SessionEnded, session)
    assert ended.reason == "caller hung up" and ended.at > second.started_at  # not ended by the replaced stream
    assert not second.rec.unexpected and second.played_audio()
    assert gw.stats["twilio_rejoins"] == 1 and gw.stats["twilio_digits_pressed"] == 1


def test_a_refused_update_is_the_keys_error_and_the_stream_goes_on(gw, api, nats_server):
    api.statuses = [400]

    async def scenario():
        async with Agent(nats_server.url) as agent:
            caller, session = await call_in(gw, agent)
            try:
                await agent.command(SendDigits(session=session, digits="5", call_id="k2", run=1))
                await agent.wait(lambda e: isinstance(e, DigitsSent) and e.session == session, 10, "DigitsSent")
                await agent.speak(session, 2, [tone(440, 0.4, 8000)], rate=8000)
                await caller.wait_until(lambda: len(caller.played_audio()) >= 2 * 8000 * 0.3, 10, "audio on the same stream")
            finally:
                await caller.hang_up()
            return agent, session

    agent, session = run(scenario())
    (sent,) = digits_sent(agent, session)
    assert not sent.ok and "refused" in sent.error and sent.call_id == "k2"
    assert gw.stats["twilio_digits_failed"] == 1


def test_a_stream_that_does_not_come_back_ends_the_call_and_says_why(gw, api, nats_server, monkeypatch):
    monkeypatch.setattr(twilio_media, "REJOIN_S", 1.0)

    async def scenario():
        async with Agent(nats_server.url) as agent:
            caller, session = await call_in(gw, agent)
            await agent.command(SendDigits(session=session, digits="9", run=-1))
            await update_of(api, caller.call_sid)
            await caller.hang_up()
            await agent.wait(lambda e: isinstance(e, SessionEnded) and e.session == session, 15, "SessionEnded")
            return agent, session, caller

    agent, session, caller = run(scenario())
    (sent,) = digits_sent(agent, session)
    assert not sent.ok and "did not come back" in sent.error and sent.call_id == ""
    (_, ended), = agent.of(SessionEnded, session)
    assert "did not come back" in ended.reason
    hang_ups = [r for r in api.requests if caller.call_sid in r["path"] and r["form"].get("Status") == ["completed"]]
    assert hang_ups and gw.stats["twilio_rejoin_timeouts"] == 1


def test_a_stream_that_claims_to_rejoin_a_call_not_waiting_is_refused(gw, nats_server):
    async def scenario():
        async with Agent(nats_server.url) as agent:
            other_sid = "CA" + secrets.token_hex(16)
            params = answer(gw, other_sid)  # a valid token, for another call
            caller = TwilioCaller(gw.ws, {**params, "session": "outbound-0123456789abcdef", "rejoin": "1"}, call_sid=other_sid)
            await caller.connect()
            await asyncio.wait_for(caller.closed.wait(), 5)
            await asyncio.sleep(0.3)
            return caller, agent

    caller, agent = run(scenario())
    assert caller.close_code == 1008 and gw.stats["twilio_rejoin_refused"] == 1
    assert not agent.of(SessionStarted)


def test_without_rest_credentials_keys_cannot_be_pressed_and_the_reducer_is_told(nats_server):
    settings = Settings(nats_url=nats_server.url, http_port=free_port(), public_host="gw.example.com", twilio_insecure=True)
    with Gateway(settings) as g:

        async def scenario():
            async with Agent(nats_server.url) as agent:
                caller = TwilioCaller(g.ws, {"test_call": secrets.token_hex(6)})
                async with caller:
                    session = await agent.session_of(caller)
                    await agent.command(SendDigits(session=session, digits="1", call_id="k3", run=1))
                    await agent.wait(lambda e: isinstance(e, DigitsSent) and e.session == session, 10, "DigitsSent")
                return agent, session

        agent, session = run(scenario())
    (sent,) = digits_sent(agent, session)
    assert not sent.ok and "TWILIO_ACCOUNT_SID" in sent.error
