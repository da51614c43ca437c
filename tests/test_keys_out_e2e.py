"""Keys out, end to end: an outbound call reaches an automated line (an IVR)
and gets through its menu by pressing keys.

The stack places the call through the local stand-in of Twilio's REST API
(``twilio_api.py``), whose callee reads a menu ("for orders, press 2").
Media Streams cannot send keys, so the gateway updates the call through the
REST API with ``<Play digits>`` then ``<Connect><Stream>`` back to the same
session; the stand-in does what Twilio documents: the current stream stops,
the keys are played on the line (it records them), a new stream connects;
the gateway lets it rejoin the session, and the line, having heard its key,
puts a person on ("Orders desk, this is Pat").

Two ways the reducer decides to press:
* the LLM calls ``send_digits`` (an OpenAI-compatible stand-in, ``openai_api.py``,
  plays a model that reads the menu);
* the call's policy has an IVR path (``ivr_path=2``): pressed at the menu,
  the model is not asked until the path is done.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import re

import httpx
import pytest

from parley import contract
from parley_orchestrator.cli import fetch

from openai_api import OpenAIApi
from speech import hear, normalise, say
from stack import Stack
from twilio_api import Callee, TwilioApi, wait_for

pytestmark = pytest.mark.e2e

ACCOUNT = "AC" + "2" * 32
AUTH_TOKEN = "e2e-keys-auth-token"
API_KEY = "e2e-keys-api-key"
IVR_LLM, IVR_PATH = "+15550003001", "+15550003002"
# What Whisper may write for a digit said alone at the end of a short
# fragment ("For orders, press 2." heard as "... press to."), as a model reads it.
WORD_DIGITS = {"one": "1", "won": "1", "two": "2", "to": "2", "too": "2", "three": "3", "four": "4", "for": "4", "zero": "0"}
GREETING_TO_PAT = "Hi Pat, this is Bright Smile Dental, calling about our order of gloves."


def model(messages: list[dict]) -> tuple[str, tuple[str, dict] | None]:
    """A model on an outbound call to a supplier: it presses the key the
    menu gives for orders, says nothing after pressing, and talks to whoever
    speaks once it is past the menu."""
    last = messages[-1]
    if last["role"] == "tool":
        return "", None  # keys pressed: listen to what the line says next
    heard = (last.get("content") or "").lower()
    # The menu may come in more than one turn: read what the line said since the last keys.
    since = []
    for m in reversed(messages):
        if m["role"] == "tool":
            break
        if m["role"] == "user":
            since.insert(0, (m.get("content") or "").lower())
    menu = re.search(r"orders?\W+(?:please\W+)?press (\w+)", " ".join(since))
    if menu and not any(m["role"] == "tool" for m in messages):
        return "", ("send_digits", {"digits": WORD_DIGITS.get(menu.group(1), menu.group(1))})
    if any(m["role"] == "tool" for m in messages) and heard.strip():
        return GREETING_TO_PAT, None  # past the menu: someone to talk to
    return "", None


@pytest.fixture(scope="module")
def llm():
    api = OpenAIApi(model).start()
    yield api
    api.stop()


@pytest.fixture(scope="module")
def twilio():
    menu = say("Thank you for calling Acme Dental Supplies. For orders, press 2. For billing, press 3.", rate=8000)
    pat = say("Orders desk, this is Pat. How can I help you?", rate=8000)
    line = {"2": pat}
    api = TwilioApi(ACCOUNT, AUTH_TOKEN, {IVR_LLM: Callee("human", menu, keys=line), IVR_PATH: Callee("human", menu, keys=line)}).start()
    yield api
    api.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, twilio, llm):
    env = {"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_API_BASE": twilio.base, "TWILIO_CALLER_ID": "+15550001000",
           "PARLEY_API_KEY": API_KEY, "LLM_BASE_URL": llm.base, "LLM_MODEL": "ivr-test-model", "PARLEY_RECORDINGS": "all"}  # fmt: skip
    with Stack(tmp_path_factory.mktemp("stack"), env=env) as s:
        yield s


def place(stack: Stack, to: str, **params: str) -> str:
    r = httpx.post(f"{stack.gateway}/api/calls", json={"to": to, "params": params}, headers={"Authorization": f"Bearer {API_KEY}"}, trust_env=False, timeout=20)
    assert r.status_code == 201, r.text
    return r.json()["session"]


def stuck(stack: Stack, session: str, call) -> str:
    """Why the call never got past the menu: the keys, the reducer's steps with
    what the caller side was heard to say, and the gateway's log."""
    steps, _ = asyncio.run(fetch(session, stack.nats_url))
    trail = [
        (type(s.event).__name__, s.event.text if isinstance(s.event, contract.TranscriptFinal) else "", s.state_to.value, s.note[:80], [type(c).__name__ for c in s.commands])
        for s in steps
        if not isinstance(s.event, (contract.LLMToken, contract.TranscriptPartial))
    ]
    return f"keys {call.digits}, streams {len(call.streams)}, errors {call.errors}; steps {trail}; gateway log: {stack.log('media-gateway')[-3000:]}"


def through_the_menu(stack: Stack, twilio: TwilioApi, to: str, capsys, **params: str):
    """Place the call, let it get through the menu to Pat, hear the agent, hang up."""
    session = place(stack, to, **params)
    call = twilio.wait_call(to)
    try:
        wait_for(lambda: call.said_after_keys or call.errors or call.finished.is_set(), 90, "the line's answer to the keys")
    except TimeoutError:
        pass
    if not call.said_after_keys:
        raise AssertionError(stuck(stack, session, call))
    pat_done = call.said_after_keys[0][1]
    second = call.caller

    async def listen():
        await second.wait_audio(after=pat_done, timeout=40)
        await second.wait_quiet(quiet=1.5, timeout=60, after=pat_done)
        heard = second.played_audio(after=pat_done)
        await second.hang_up()
        return heard

    heard = normalise(hear(twilio.run(listen(), timeout=120), rate=8000))
    wait_for(call.finished.is_set, 30, "call over")
    steps, _ = asyncio.run(fetch(session, stack.nats_url))
    with capsys.disabled():
        trail = [(type(s.event).__name__, s.state_to.value, s.note[:60]) for s in steps if not isinstance(s.event, (contract.LLMToken, contract.TranscriptPartial, contract.PlaybackProgress, contract.TTSChunkStarted, contract.TTSChunkDone))]
        print(f"\n[e2e keys out {to}] keys on the line {call.digits}; streams {len(call.streams)}; the agent said to Pat: {heard!r}\n  steps: {trail}")
    return session, call, steps, heard


def check_rejoined(twilio: TwilioApi, session: str, call, steps, heard: str) -> None:
    # The line got the key once, through a call update that replaced the stream.
    assert call.digits == ["2"], call.digits
    assert len(call.streams) == 2 and call.streams[0].closed.is_set()
    back = call.streams[1].custom_parameters
    assert back["session"] == session and back["rejoin"] == "1" and back["token"] and back["token"] != call.streams[0].custom_parameters["token"]
    updates = [form for sid, form in twilio.updates if sid == call.sid]
    assert len(updates) == 1 and "<Play digits=\"2\"/>" in updates[0]["Twiml"] and "Status" not in updates[0]
    # One session from start to end: never started twice, never ended in between.
    kinds = [type(s.event).__name__ for s in steps]
    assert kinds.count("SessionStarted") == 1
    pressed = [c for s in steps for c in s.commands if isinstance(c, contract.SendDigits)]
    sent = [s.event for s in steps if isinstance(s.event, contract.DigitsSent)]
    assert [c.digits for c in pressed] == ["2"] and [(e.digits, e.ok) for e in sent] == [("2", True)]
    assert kinds.index("DigitsSent") < (kinds.index("SessionEnded") if "SessionEnded" in kinds else len(kinds))
    # The person on the second stream heard the agent.
    assert "bright smile" in heard and sounds_like(GREETING_TO_PAT, heard), heard


def sounds_like(said: str, heard: str) -> bool:
    """`said` is somewhere in `heard`, judged as a whole: Whisper tiny through the phone band may get
    a word wrong ("order of glows")."""
    want, words = normalise(said), heard.split()
    n = len(want.split())
    windows = [" ".join(words[i : i + n]) for i in range(max(1, len(words) - n + 1))]
    return max(difflib.SequenceMatcher(None, want, w).ratio() for w in windows) > 0.75


def test_the_model_presses_the_menus_key_and_the_call_goes_on_to_a_person(stack, twilio, llm, capsys):
    session, call, steps, heard = through_the_menu(stack, twilio, IVR_LLM, capsys)
    check_rejoined(twilio, session, call, steps, heard)
    pressed = next(c for s in steps for c in s.commands if isinstance(c, contract.SendDigits))
    assert pressed.call_id and pressed.run > 0  # the model's tool call, from a live run
    # The model was told the keys were pressed (the tool's result), then heard Pat.
    results = [m for req in llm.requests for m in req["messages"] if m["role"] == "tool" and json.loads(m["content"]).get("sent") == "2"]
    assert results, [r["messages"][-1] for r in llm.requests]
    assert any("send_digits" == t["function"]["name"] for t in llm.requests[0]["tools"])
    # One recording across both streams: the menu and Pat on the left, the agent on the right.
    caller_side, agent_side = recording(stack, session)
    assert "press" in caller_side and "desk" in caller_side, caller_side  # the menu (first stream), then Pat (second)
    assert sounds_like(GREETING_TO_PAT, agent_side), agent_side


def recording(stack: Stack, session: str) -> tuple[str, str]:
    import wave

    import numpy as np

    folder = stack.root / "data" / "recordings"
    wait_for(lambda: (folder / f"{session}.json").exists() and json.loads((folder / f"{session}.json").read_text()).get("finished"), 20, "the recording")
    with wave.open(str(folder / f"{session}.wav")) as w:
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    return normalise(hear(x[:, 0].copy())), normalise(hear(x[:, 1].copy()))


def test_an_ivr_path_presses_the_key_at_the_menu_without_asking_the_model(stack, twilio, llm, capsys):
    asked_before = len(llm.requests)
    session, call, steps, heard = through_the_menu(stack, twilio, IVR_PATH, capsys, ivr_path="2")
    check_rejoined(twilio, session, call, steps, heard)
    pressed_at = next(i for i, s in enumerate(steps) if any(isinstance(c, contract.SendDigits) for c in s.commands))
    assert not any(isinstance(c, contract.StartLLM) for s in steps[:pressed_at] for c in s.commands)
    assert next(c for c in steps[pressed_at].commands if isinstance(c, contract.SendDigits)).call_id == ""
    assert len(llm.requests) > asked_before  # the model spoke to Pat
