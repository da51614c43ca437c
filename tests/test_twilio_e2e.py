"""End to end over Twilio Media Streams with the real models.

The stack runs as real processes with TWILIO_AUTH_TOKEN set, so the whole
Twilio path is exercised: a signed ``POST /twilio/voice`` returns TwiML whose
``<Stream>`` carries a one-time token, and the Twilio caller
(``parley.callers.twilio``) opens the stream with it. The caller speaks requests
synthesized by Piper as μ-law 8 kHz at real-time pace, plays the agent's
audio in real time, echoes marks as it plays them, and transcribes what it
heard with Whisper. The barge-in test checks that the history holds exactly
the chunks whose marks the caller echoed as played, and every recorded session
replays identically.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
import xml.etree.ElementTree as ET

import httpx
import pytest

from parley import bus, contract, subjects
from parley_orchestrator.cli import fetch
from parley_orchestrator.replay import replay

from speech import hear, normalise, say
from stack import SATURDAY, Stack
from parley.callers.ear import audible_stop
from parley.callers.twilio import TwilioCaller

pytestmark = pytest.mark.e2e

AUTH_TOKEN = "e2e-twilio-auth-token-5f1c"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # A Saturday: "Friday" is next week's.
    with Stack(tmp_path_factory.mktemp("stack"), env={"TWILIO_AUTH_TOKEN": AUTH_TOKEN}, now=SATURDAY) as s:
        yield s


def run(coro):
    return asyncio.run(coro)


def _signature(url: str, form: dict[str, str]) -> str:
    data = url + "".join(k + form[k] for k in sorted(form))
    return base64.b64encode(hmac.new(AUTH_TOKEN.encode(), data.encode(), hashlib.sha1).digest()).decode()


async def dial(stack: Stack, caller_number: str = "+15550009999") -> tuple[TwilioCaller, str]:
    """Twilio's side of an incoming call: the signed webhook, then the stream.
    Returns the connected caller and its Parley session id."""
    marker = secrets.token_hex(8)
    call_sid = "CA" + secrets.token_hex(16)
    url = f"{stack.gateway}/twilio/voice?test_call={marker}"
    form = {"CallSid": call_sid, "AccountSid": "AC" + "0" * 32, "From": caller_number, "To": "+15550001000", "CallStatus": "ringing"}
    async with httpx.AsyncClient(trust_env=False) as client:
        r = await client.post(url, data=form, headers={"X-Twilio-Signature": _signature(url, form)})
    assert r.status_code == 200, r.text
    stream = ET.fromstring(r.text).find("./Connect/Stream")
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert params["token"] and params["test_call"] == marker and params["caller"] == caller_number
    nc = await bus.connect(stack.nats_url)
    found: asyncio.Future = asyncio.get_running_loop().create_future()

    async def on_event(msg):
        e = contract.decode_event(msg.data)
        if isinstance(e, contract.SessionStarted) and e.params.get("test_call") == marker and not found.done():
            found.set_result(e.session)

    await nc.subscribe(subjects.EVENTS_ALL, cb=on_event)
    caller = TwilioCaller(stream.get("url"), params, call_sid=call_sid)
    await caller.connect()
    try:
        session = await asyncio.wait_for(found, 15)
    finally:
        await nc.drain()
    return caller, session


async def settle(caller: TwilioCaller) -> None:
    """Let the greeting play out (the stack's receptionist greets every call)."""
    await caller.wait_greeting()


def test_a_booking_call_over_twilio(stack, capsys):
    request = say("Hi, I'd like to book a cleaning on Friday at ten a.m.", rate=8000)  # before the call: Piper blocks the loop

    async def scenario():
        caller, session = await dial(stack)
        try:
            await settle(caller)
            greeting = caller.played_audio()
            _, spoke_until = await caller.say(request)
            await caller.wait_audio(after=spoke_until, timeout=40)
            await caller.wait_quiet(quiet=2.0, timeout=60, after=spoke_until)
        finally:
            await caller.hang_up()
        return caller, session, greeting, spoke_until

    caller, session, greeting, spoke_until = run(scenario())
    first_media = next(t for t, _ in caller.rec.media if t >= spoke_until)
    first_played = next(t for t, _ in caller.rec.played if t >= spoke_until)
    answer = normalise(hear(caller.played_audio(after=spoke_until), rate=8000))
    hello = normalise(hear(greeting, rate=8000)) if greeting else ""
    with capsys.disabled():
        print(
            f"\n[e2e twilio] voice-to-voice {(first_media - spoke_until) * 1000:.0f} ms to the first media message, "
            f"{(first_played - spoke_until) * 1000:.0f} ms to the caller's ear (60 ms jitter buffer); "
            f"stalls {len(caller.rec.stalls)} (caller's own {len(caller.rec.caller_stalls)}); greeting heard: {hello!r}; answer heard: {answer!r}"
        )
    assert "friday" in answer and "10" in answer.split(), answer
    assert any(w in answer for w in ("book", "booked", "appointment", "confirmed")), answer
    assert caller.rec.unexpected == []
    # Marks: every chunk that played was echoed as played, and no clear happened.
    assert caller.rec.clears == [] and caller.rec.echoes and not any(e.cleared for e in caller.rec.echoes)
    steps, digest = run(fetch(session, stack.nats_url))
    result = replay(steps, digest)
    assert result.ok, result.mismatches[:3]
    assert result.digest_checked
    booked = [json.loads(st.event.result) for st in steps if isinstance(st.event, contract.ToolResult) and st.event.name == "book_appointment"]
    assert [(b["booked"], b["date"], b["time"]) for b in booked] == [(True, "2026-12-04", "10:00")], booked
    history = [m for m in result.final_state.history if m.role == "assistant" and m.content]
    assert history and not any(m.interrupted for m in history)


def test_barge_in_over_twilio_clears_and_history_holds_only_what_was_played(stack, capsys):
    question = say("What are your opening hours?", rate=8000)  # before the call: Piper blocks the loop
    interruption = say("Sorry, stop. Can I book Friday at ten a.m. instead?", rate=8000)

    async def scenario():
        caller, session = await dial(stack)
        try:
            await settle(caller)
            _, spoke_until = await caller.say(question)
            # The answer is two chunks (the hours, then "Would you like to book
            # an appointment?"). Talk over it once the caller has heard the
            # first one to the end: history must keep that one and nothing else.
            await caller.wait_until(lambda: any(e.at > spoke_until and not e.cleared and e.name.endswith(".end") for e in caller.rec.echoes), 40, "first chunk heard")
            # ...and the second is playing (under load its audio may come late: talking
            # into that gap interrupts nothing, and no clear is needed).
            first_end = next(e.at for e in caller.rec.echoes if e.at > spoke_until and not e.cleared and e.name.endswith(".end"))
            await caller.wait_audio(after=first_end, timeout=40)
            await asyncio.sleep(0.2)
            barge = caller.say_later(interruption)
            barge_at = time.monotonic()
            cleared_at = await caller.wait_clear(after=barge_at, timeout=20)
            _, barge_until = await barge
            await caller.wait_audio(after=max(cleared_at, barge_until), timeout=40)
            await caller.wait_quiet(quiet=2.0, timeout=60, after=barge_until)
        finally:
            await caller.hang_up()
        return caller, session, barge_at, cleared_at, barge_until

    caller, session, barge_at, cleared_at, barge_until = run(scenario())
    speech_start = next(first for first, _ in caller.rec.spoken if first >= barge_at - 0.05)
    new_answer = normalise(hear(caller.played_audio(after=barge_until), rate=8000))
    steps, digest = run(fetch(session, stack.nats_url))
    result = replay(steps, digest)
    assert result.ok, result.mismatches[:3]
    # The reducer's view (event times are wall clock; the caller's monotonic).
    offset = time.time() - time.monotonic()
    # The barge-in's flush: the first after the caller began to talk over the
    # answer (under load the greeting or a first answer may have been cut
    # before: talking into a late greeting, a question heard in two pieces).
    flush_step = next(st for st in steps if st.event.at - offset >= barge_at and any(isinstance(c, contract.FlushPlayback) for c in st.commands))
    flush_at = flush_step.event.at
    cut_run = next(c.run for c in flush_step.commands if isinstance(c, contract.FlushPlayback))
    texts = {c.chunk: c.text for s in steps for c in s.commands if isinstance(c, contract.Synthesize) and c.run == cut_run}
    # Chunk-end marks (".end") the caller echoed as played: the chunks it heard to the end.
    played = sorted(int(e.name.split(".")[1]) for e in caller.rec.echoes if not e.cleared and e.name.endswith(".end") and int(e.name.split(".")[0]) == cut_run)
    cleared = [e.name for e in caller.rec.echoes if e.cleared]
    after_clear = [t for t, _ in caller.rec.media if cleared_at < t < barge_until]
    last_before_clear = max(t for t, _ in caller.rec.media if t < cleared_at)
    utterance = next(u for u in caller.rec.utterances if u.first >= barge_at - 0.05)
    stop = audible_stop(caller.rec.played, 8000, utterance.onset)
    next_answer = min((t for t, n in caller.rec.marks if int(n.split(".")[0]) > cut_run), default=float("inf"))
    timeline = [
        f"{type(st.event).__name__}@{(st.event.at - offset - speech_start) * 1000:+.0f}ms"
        + "".join(f" {type(c).__name__}" for c in st.commands if isinstance(c, (contract.PausePlayback, contract.FlushPlayback, contract.ResumePlayback)))
        for st in steps
        if isinstance(st.event, (contract.SpeechOnset, contract.SpeechStarted, contract.TranscriptPartial, contract.TranscriptFinal, contract.TimerFired))
        and st.event.at - offset >= speech_start - 1
    ][:10]
    with capsys.disabled():
        print(f"\n[e2e twilio] barge-in timeline from caller speech start: {timeline}")
        print(
            f"\n[e2e twilio] barge-in: audible stop {stop * 1000 if stop is not None else float('nan'):.0f} ms (caller's onset -> last agent sample heard); "
            f"caller speech start -> last agent media {(last_before_clear - speech_start) * 1000:.0f} ms (pause), "
            f"-> clear {(cleared_at - speech_start) * 1000:.0f} ms; "
            f"cut run {cut_run}: {len(texts)} chunks synthesized, {played} played, marks echoed by the clear {cleared}; "
            f"media after the clear before the caller stopped talking: {len(after_clear)}; new answer heard: {new_answer!r}"
        )
    assert len(caller.rec.clears) >= 1
    # The pause cleared Twilio's buffer before the run was cancelled: the caller
    # heard the agent stop when playback paused, not when the words confirmed it.
    assert cleared_at + offset < flush_at, timeline
    # After the clear, nothing more reached the caller's ears until the next answer.
    assert stop is not None and caller.ear.audio(after=cleared_at, until=next_answer) == b""
    # No stale frame: whatever reached the caller after the barge-in's clear (the last
    # before the flush; a sound judged a noise may have resumed the run after an
    # earlier one, unheard as the ear check above proves) belongs to a newer run.
    barge_clear = max(t for t in caller.rec.clears if t + offset < flush_at)
    marks_after_barge = [n for t, n in caller.rec.marks if t > barge_clear]
    assert marks_after_barge and all(int(n.split(".")[0]) > cut_run for n in marks_after_barge), marks_after_barge
    assert "friday" in new_answer, new_answer
    # History: the interrupted reply holds exactly the chunks the caller heard to the end.
    heard = " ".join(texts[i] for i in played)
    assert played and played == list(range(len(played))), played  # heard in order, from the first
    assert len(played) < len(texts), (played, texts)  # and not all of it
    # (One barge-in in this session: the interrupted messages are the cut run's.)
    cut = [m.content for m in result.final_state.history if m.role == "assistant" and m.interrupted]
    assert cut == ([heard] if played else []), (cut, heard)
    # What was not heard never reached a later prompt as part of the cut reply.
    later = [c for s in steps for c in s.commands if isinstance(c, contract.StartLLM) and c.run > cut_run]
    assert later
    for cmd in later:
        replies = [m.content for m in cmd.messages if m.role == "assistant" and m.interrupted]
        assert replies == ([heard] if played else []), replies
