"""Outbound calls end to end: ``POST /api/calls`` -> the gateway asks a local
stand-in of Twilio's REST API (``twilio_api.py``, written from Twilio's docs)
to place the call -> the stand-in plays the callee: signed status callbacks,
the signed voice webhook, a Media Streams caller simulator, async
answering-machine detection.

* a person picks up and says hello: they hear the agent; the call's status
  (ringing, answered, answered by a human, completed) is in the session's log;
* a voicemail greeting and a beep: the agent leaves the configured message
  after the beep, then hangs up through the REST API;
* busy: the log says so and no conversation starts;
* the API key guards ``POST /api/calls``.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from parley_orchestrator.cli import fetch
from parley_orchestrator.replay import replay
from parley import contract

from speech import hear, normalise, say
from stack import Stack
from twilio_api import Callee, TwilioApi, wait_for

pytestmark = pytest.mark.e2e

ACCOUNT = "AC" + "1" * 32
AUTH_TOKEN = "e2e-outbound-auth-token"
API_KEY = "e2e-outbound-api-key"
PERSON, MACHINE, BUSY, MACHINE_NO_AMD = "+15550002001", "+15550002002", "+15550002003", "+15550002004"
DESK = "+15550007777"  # where calls are transferred: the deployment's, never the model's
MESSAGE = "Hi, this is Bright Smile Dental. Please call us back to confirm your appointment. Goodbye."


@pytest.fixture(scope="module")
def twilio():
    api = TwilioApi(ACCOUNT, AUTH_TOKEN, {
        PERSON: Callee("human", say("Hello? Who is this?", rate=8000)),
        MACHINE: Callee("machine", say("Hi, you have reached Sam. I can't take your call right now. Please leave a message after the tone.", rate=8000)),
        BUSY: Callee("busy"),
        MACHINE_NO_AMD: Callee("machine", say("Hello, you have reached the Miller family, we are not able to take your call at the moment, so please leave us a message after the tone.", rate=8000), amd=False),
    }).start()  # fmt: skip
    yield api
    api.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, twilio):
    env = {"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_API_BASE": twilio.base, "TWILIO_CALLER_ID": "+15550001000", "PARLEY_API_KEY": API_KEY,
           "PARLEY_TRANSFER_TO": DESK}
    with Stack(tmp_path_factory.mktemp("stack"), env=env) as s:
        yield s


def place(stack: Stack, to: str, **body) -> httpx.Response:
    return httpx.post(f"{stack.gateway}/api/calls", json={"to": to, **body}, headers={"Authorization": f"Bearer {API_KEY}"}, trust_env=False, timeout=20)


def statuses(stack: Stack, session: str) -> list[tuple[str, str]]:
    steps, _ = asyncio.run(fetch(session, stack.nats_url))
    return [(s.event.status, s.event.answered_by) for s in steps if isinstance(s.event, contract.CallStatus)]


def test_speech_is_no_beep():
    """The gateway's beep detector hears no tone in real speech (Piper)."""
    from parley.audio.tone import ToneDetector

    det = ToneDetector(16000)
    speech = say("Hi, you have reached Sam. I can't take your call right now. Please leave a message after the tone.", rate=16000)
    assert det.feed(speech.astype("<i2").tobytes()) == []


def test_the_api_key_guards_placing_calls(stack):
    url = f"{stack.gateway}/api/calls"
    assert httpx.post(url, json={"to": PERSON}, trust_env=False).status_code == 401
    assert httpx.post(url, json={"to": PERSON}, headers={"Authorization": "Bearer wrong"}, trust_env=False).status_code == 401
    bad = place(stack, "5551234")
    assert bad.status_code == 400 and "E.164" in bad.json()["error"]
    unknown = place(stack, "+15559999999")
    assert unknown.status_code == 502 and "not valid" in unknown.json()["error"]  # Twilio's own message


def test_a_person_answers_and_gets_the_agent(stack, twilio, capsys):
    r = place(stack, PERSON, voicemail_message=MESSAGE)
    assert r.status_code == 201, r.text
    session = r.json()["session"]
    call = twilio.wait_call(PERSON)
    assert call.sid == r.json()["call_sid"] and call.one("MachineDetection") == "DetectMessageEnd" and call.one("AsyncAmd") == "true"
    wait_for(lambda: call.amd == ["human"] and call.caller is not None, 30, "answered by a human")

    async def listen():
        await call.caller.wait_audio(after=call.spoke_until, timeout=40)
        await call.caller.wait_quiet(quiet=2.0, timeout=60, after=call.spoke_until)
        return call.caller.played_audio()

    heard = normalise(hear(twilio.run(listen(), timeout=120), rate=8000))
    twilio.run(call.caller.hang_up())
    wait_for(call.finished.is_set, 30, "call over")
    with capsys.disabled():
        print(f"\n[e2e outbound] the person heard: {heard!r}; statuses sent: {call.statuses}")
    assert call.errors == []
    assert "bright smile" in heard and "leave" not in heard, heard
    wait_for(lambda: ("completed", "") in statuses(stack, session), 20, "completed in the log")
    logged = statuses(stack, session)
    assert [s for s, _ in logged][:3] == ["queued", "initiated", "ringing"], logged
    assert ("in-progress", "human") in logged and ("in-progress", "") in logged
    steps, digest = asyncio.run(fetch(session, stack.nats_url))
    assert any(isinstance(s.event, contract.SessionStarted) and s.event.caller == PERSON for s in steps)
    assert replay(steps, digest).ok


def test_a_machine_gets_the_message_after_the_beep(stack, twilio, capsys):
    r = place(stack, MACHINE, voicemail_message=MESSAGE)
    assert r.status_code == 201, r.text
    session = r.json()["session"]
    call = twilio.wait_call(MACHINE)
    wait_for(call.finished.is_set, 120, "the agent hung up")
    after_beep = normalise(hear(call.caller.played_audio(after=call.beep_end), rate=8000))
    steps, _ = asyncio.run(fetch(session, stack.nats_url))
    trail = [(type(s.event).__name__, s.state_from, s.state_to, s.note) for s in steps if not isinstance(s.event, (contract.LLMToken, contract.TranscriptPartial))]
    with capsys.disabled():
        print(f"\n[e2e outbound] the machine recorded after the beep: {after_beep!r}; hung up by {call.hung_up_by}")
        print(f"[e2e outbound] machine call steps: {trail}")
    assert call.errors == [] and call.amd == ["machine_end_beep"]
    assert "call us back" in after_beep and "confirm" in after_beep, after_beep
    assert call.hung_up_by == "api"
    ends = [c.reason for s in steps for c in s.commands if isinstance(c, contract.EndSession)]
    assert ends == ["voicemail left"]


def test_without_the_providers_detection_parley_hears_the_greeting_and_the_beep_itself(stack, twilio, capsys):
    r = place(stack, MACHINE_NO_AMD, voicemail_message=MESSAGE)
    assert r.status_code == 201, r.text
    session = r.json()["session"]
    call = twilio.wait_call(MACHINE_NO_AMD)
    wait_for(call.finished.is_set, 120, "the agent hung up")
    after_beep = normalise(hear(call.caller.played_audio(after=call.beep_end), rate=8000))
    steps, _ = asyncio.run(fetch(session, stack.nats_url))
    tones = [(s.event.hz, s.event.ms, s.note) for s in steps if isinstance(s.event, contract.ToneHeard)]
    talk = [s.event.speech_ms for s in steps if isinstance(s.event, contract.SpeechStopped)]
    with capsys.disabled():
        print(f"\n[e2e outbound] no AMD: tones {tones}; utterances (ms) {talk}; after the beep: {after_beep!r}")
    assert call.amd == [] and call.errors == []
    assert tones and all(900 <= hz <= 1100 for hz, _, _ in tones)
    assert "call us back" in after_beep and "confirm" in after_beep, after_beep
    assert call.hung_up_by == "api"
    assert [c.reason for s in steps for c in s.commands if isinstance(c, contract.EndSession)] == ["voicemail left"]


def test_busy_is_logged_and_no_conversation_starts(stack, twilio, monkeypatch, capsys):
    """Placed with the command line this time: ``parley call``."""
    from parley_orchestrator.cli import main

    monkeypatch.setenv("PARLEY_API_KEY", API_KEY)
    assert main(["call", BUSY, "--gateway", stack.gateway, "--param", "greeting=Hello there."]) == 0
    printed = capsys.readouterr().out
    session = printed.split("session ", 1)[1].split()[0]
    call = twilio.wait_call(BUSY)
    wait_for(call.finished.is_set, 20, "busy")
    wait_for(lambda: ("busy", "") in statuses(stack, session), 20, "busy in the log")
    steps, _ = asyncio.run(fetch(session, stack.nats_url))
    assert not any(isinstance(s.event, contract.SessionStarted) for s in steps)


def test_asking_for_a_person_puts_the_caller_through_with_a_summary_first(stack, twilio, capsys):
    """Inbound this time: the caller asks for a person; the agent says so, and
    once that was heard the call is redirected to <Dial> the desk through the
    REST API (no hang-up); the desk hears the summary before the caller."""
    import secrets
    import xml.etree.ElementTree as ET

    from parley.callers.twilio import TwilioCaller
    from twilio_api import signature

    request = say("Hi, can I speak to a real person please?", rate=8000)
    call_sid = "CA" + secrets.token_hex(16)

    async def scenario():
        url = f"{stack.gateway}/twilio/voice"
        form = {"CallSid": call_sid, "AccountSid": ACCOUNT, "From": "+15550003030", "To": "+15550001000", "CallStatus": "ringing", "Direction": "inbound"}
        async with httpx.AsyncClient(trust_env=False) as http:
            r = await http.post(url, data=form, headers={"X-Twilio-Signature": signature(AUTH_TOKEN, url, form)})
        stream = ET.fromstring(r.text).find("./Connect/Stream")
        caller = TwilioCaller(stream.get("url"), {p.get("name"): p.get("value") for p in stream.findall("Parameter")}, call_sid=call_sid)
        await caller.connect()
        await caller.wait_greeting()
        _, spoke_until = await caller.say(request)
        await caller.wait_audio(after=spoke_until, timeout=40)
        await asyncio.wait_for(caller.closed.wait(), 60)  # the gateway lets go of the stream
        return normalise(hear(caller.played_audio(after=spoke_until), rate=8000))

    heard = asyncio.run(scenario())
    wait_for(lambda: call_sid in twilio.whispers, 20, "the desk heard the summary")
    updates = [form for sid, form in twilio.updates if sid == call_sid]
    with capsys.disabled():
        print(f"\n[e2e transfer] caller heard {heard!r}; updates {updates}; desk heard {twilio.whispers[call_sid]!r}")
    assert "putting you through" in heard, heard
    assert len(updates) == 1 and "Status" not in updates[0]  # redirected, never hung up
    dial = ET.fromstring(updates[0]["Twiml"]).find("./Dial/Number")
    assert dial.text == DESK
    assert "real person" in twilio.whispers[call_sid].lower()


def test_keypad_entry_over_twilio_reaches_the_agent_as_one_turn(stack):
    """Digits in: the caller types 1 2 3 4 # (Twilio dtmf messages); with
    dtmf_wait set for the session they are one entry, one turn."""
    import secrets
    import xml.etree.ElementTree as ET

    from parley.callers.twilio import TwilioCaller
    from twilio_api import signature

    call_sid = "CA" + secrets.token_hex(16)

    async def scenario():
        url = f"{stack.gateway}/twilio/voice?dtmf_wait=3&greeting=Please%20type%20your%20number."
        form = {"CallSid": call_sid, "AccountSid": ACCOUNT, "From": "+15550004040", "To": "+15550001000", "CallStatus": "ringing", "Direction": "inbound"}
        async with httpx.AsyncClient(trust_env=False) as http:
            r = await http.post(url, data=form, headers={"X-Twilio-Signature": signature(AUTH_TOKEN, url, form)})
        stream = ET.fromstring(r.text).find("./Connect/Stream")
        params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
        caller = TwilioCaller(stream.get("url"), params, call_sid=call_sid)
        await caller.connect()
        await caller.wait_greeting()
        for digit in "1234#":
            await caller.dtmf(digit)
            await asyncio.sleep(0.3)
        await caller.wait_audio(after=time.monotonic(), timeout=40)
        await caller.hang_up()

    asyncio.run(scenario())
    sessions = [s for s in asyncio.run(_sessions(stack)) if s.startswith("twilio-")]
    for session in sessions:
        steps, _ = asyncio.run(fetch(session, stack.nats_url))
        if any(isinstance(s.event, contract.SessionStarted) and s.event.caller == "+15550004040" for s in steps):
            break
    else:
        raise AssertionError("session not found")
    turns = [m.content for s in steps for x in s.commands if isinstance(x, contract.StartLLM) for m in x.messages[-1:] if m.role == "user"]
    assert turns == ["(entered 1234 on the keypad)"], turns


async def _sessions(stack):
    from parley_orchestrator.cli import list_sessions

    return await list_sessions(stack.nats_url)
