"""End to end over /ws/pcm with the real models: speech in, spoken answer out.

Starts nats-server and the four services as processes, speaks a request
synthesized by Piper at real-time pace, transcribes the agent's answer with
Whisper, and replays the recorded session through the reducer.

"Tomorrow" depends on the day, so the booking conversation runs on a pinned
Saturday (tomorrow the clinic is closed), Sunday and Wednesday, and checks the
answer that is right on each.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from parley_orchestrator.cli import fetch
from parley_orchestrator.replay import replay

from parley.callers.pcm import PcmCaller
from speech import barge_in_over_an_answer, hear, normalise, say, silence
from stack import SATURDAY, SUNDAY, WEEKDAY, Stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with Stack(tmp_path_factory.mktemp("stack")) as s:
        yield s


def run(coro):
    return asyncio.run(coro)


async def _settle(caller: PcmCaller) -> None:
    """Let the greeting (if any) play out."""
    await asyncio.sleep(1.0)
    await caller.wait_quiet(quiet=1.2, timeout=40)


# The day pinned -> the booking "tomorrow at three p.m." asks for, whether it
# can be made, and words the spoken answer must have.
TOMORROW_AT_3 = {
    "saturday": (SATURDAY, "2026-11-29", False, ("closed", "sunday", "monday")),  # closed Sundays: Monday 9 a.m. offered
    "sunday": (SUNDAY, "2026-11-30", True, ("monday", "3", "pm")),
    "weekday": (WEEKDAY, "2026-11-26", True, ("thursday", "3", "pm")),  # a Wednesday
}


@pytest.mark.parametrize("day", TOMORROW_AT_3)
def test_booking_conversation_end_to_end(stack, day, capsys):
    now, date, bookable, words = TOMORROW_AT_3[day]
    stack.pin(now)

    async def scenario():
        async with PcmCaller(stack.pcm_url()) as caller:
            await _settle(caller)
            request = say("I'd like to book an appointment tomorrow at three p.m.")
            spoke_until = await caller.say(request)
            await caller.wait_for(lambda n: n["type"] == "tool_call", timeout=40, after=spoke_until - 5)
            await caller.wait_quiet(quiet=1.5, timeout=60, after=spoke_until)
            answer = caller.audio_after(spoke_until)
            first = next(t for t, _ in caller.frames if t >= spoke_until)
            return caller, answer, first - spoke_until

    caller, answer, v2v = run(scenario())
    heard = normalise(hear(answer))
    tools = caller.notices_of("tool_call")
    with capsys.disabled():
        print(f"\n[e2e /ws/pcm {day}] voice-to-voice {v2v * 1000:.0f} ms (end of user speech -> first agent frame); agent said: {heard!r}")
    assert [json.loads(t["arguments"]) for t in tools if t["name"] == "book_appointment"] == [{"date": date, "time": "15:00"}], tools
    (result,) = [json.loads(r["result"]) for r in caller.notices_of("tool_result") if r["name"] == "book_appointment"]
    assert result["booked"] is bookable and (bookable or result["reason"] == "closed"), result
    words_heard = heard.replace("sundays", "sunday").split()
    assert all(w in words_heard for w in words), (words, heard)
    assert "book" in heard, heard  # "you're booked" (Whisper may write "your book"), or "shall I book that?"
    # The recorded session replays to the same commands.
    steps, digest = run(fetch(caller.session, stack.nats_url))
    result = replay(steps, digest)
    assert result.ok, result.mismatches[:3]
    assert result.digest_checked


def test_barge_in_stops_the_answer_and_forgets_the_unheard_rest(stack):
    stack.pin(SUNDAY)

    async def scenario():
        async with PcmCaller(stack.pcm_url()) as caller:
            await _settle(caller)
            return caller, *await barge_in_over_an_answer(caller)

    caller, cut_run, cut_at = run(scenario())
    # Nothing of the cancelled run is said after the cut: later text is from newer runs.
    later_texts = [n for t, n in caller.notices if t > cut_at and n["type"] == "agent_text"]
    assert later_texts and all(n["run"] > cut_run for n in later_texts)
    steps, digest = run(fetch(caller.session, stack.nats_url))
    result = replay(steps, digest)
    assert result.ok, result.mismatches[:3]
    state = result.final_state
    spoken = {n["chunk"]: n["text"] for n in caller.notices_of("agent_text") if n["run"] == cut_run}
    chunks = [spoken[i] for i in sorted(spoken)]
    strict_prefixes = {" ".join(chunks[:k]) for k in range(len(chunks))}
    cut_messages = [m for m in state.history if m.role == "assistant" and m.interrupted]
    # An interrupted reply is stored truncated to the chunks that were played.
    for m in cut_messages:
        assert m.content in strict_prefixes, (m.content, chunks)
    heard = cut_messages[-1].content if cut_messages else ""
    unheard = [c for c in chunks if c not in heard]
    # Nothing unheard is in history, nor in any later prompt.
    for m in state.history:
        if m.role == "assistant":
            assert not any(rest in m.content for rest in unheard), (m.content, unheard)
    for step in steps:
        for cmd in step.commands:
            if type(cmd).__name__ == "StartLLM" and cmd.run > cut_run:
                assert not any(rest in msg.content for msg in cmd.messages if msg.role == "assistant" for rest in unheard)
