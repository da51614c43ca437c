"""Idle handling end to end over /ws/pcm: a caller who says nothing is
reminded after the configured time, in the configured words, and after the
configured number of reminders hears the goodbye and is hung up on. The
deployment sets the policy (``PARLEY_POLICY_*`` on the orchestrator); a
session's own parameters override it. The reducer decides; the real stack
speaks (Piper) and the test listens (Whisper)."""

from __future__ import annotations

import asyncio
import time

import pytest

from parley.callers.pcm import PcmCaller
from speech import hear, normalise
from stack import Stack

pytestmark = pytest.mark.e2e

POLICY = {
    "PARLEY_POLICY_REPROMPT_AFTER": "2",
    "PARLEY_POLICY_REPROMPT_TEXT": "Hello, are you still with me?",
    "PARLEY_POLICY_MAX_REPROMPTS": "1",
    "PARLEY_POLICY_GOODBYE_TEXT": "I will let you go now. Goodbye.",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with Stack(tmp_path_factory.mktemp("stack"), env=POLICY) as s:
        yield s


async def silent_call(url: str) -> tuple[str, dict, list[float]]:
    """Say nothing; return what was heard, the end notice, and when each
    stretch of agent audio began."""
    async with PcmCaller(url) as caller:
        end = await caller.wait_for(lambda n: n["type"] == "end", timeout=60)
        await asyncio.sleep(0.3)
        starts, last = [], -10.0
        for t, _ in caller.frames:
            if t - last > 1.0:
                starts.append(t)
            last = t
        return normalise(hear(caller.audio_after(0.0), rate=16000)), end, starts


def test_the_deployments_reminder_then_goodbye_then_hang_up(stack, capsys):
    began = time.monotonic()
    heard, end, starts = asyncio.run(silent_call(stack.pcm_url()))
    with capsys.disabled():
        print(f"\n[e2e idle] heard {heard!r}; speech began at {[round(s - began, 1) for s in starts]} s; end {end}")
    assert end["reason"] == "caller silent"
    reminder, goodbye = heard.find("still with me"), heard.find("let you go now")
    assert 0 <= reminder < goodbye, heard
    assert heard.count("still with me") == 1  # max_reprompts = 1
    assert len(starts) == 3  # greeting, one reminder, goodbye: each after a silence


def test_a_sessions_own_words_and_count_override_the_deployment(stack):
    url = stack.pcm_url("reprompt_text=Anybody%20there%3F&max_reprompts=2&goodbye_text=Bye%20for%20now.")
    heard, end, _ = asyncio.run(silent_call(url))
    assert end["reason"] == "caller silent"
    assert heard.count("anybody there") == 2 and "still with me" not in heard and heard.rstrip().endswith("bye for now"), heard
