"""Bad input on /ws/pcm gets a clear error, and never harms another session.

Runs the real stack with the fixed-latency providers (real VAD, canned
transcript, LLM and voice), so it is about the plumbing, not the models.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from nats.js.errors import KeyNotFoundError

from parley import bus, subjects
from parley_orchestrator.runtime import decode_stored

from parley.callers.pcm import PcmCaller
from speech import say
from stack import Stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with Stack(tmp_path_factory.mktemp("badinput"), env={"PARLEY_PROVIDERS": "fixed"}) as s:
        yield s


async def _phase(nats_url: str, session: str) -> str:
    nc = await bus.connect(nats_url)
    try:
        kv = await nc.jetstream().key_value(subjects.SESSIONS_BUCKET)
        for _ in range(100):
            try:
                return decode_stored((await kv.get(session)).value).state.phase
            except KeyNotFoundError:
                await asyncio.sleep(0.05)
        raise AssertionError("no state")
    finally:
        await nc.close()


def test_bad_messages_get_errors_and_a_dropped_socket_ends_only_its_session(stack):
    async def scenario():
        request = say("I'd like to book an appointment tomorrow at three p.m.")
        async with PcmCaller(stack.pcm_url()) as good, PcmCaller(stack.pcm_url()) as bad:
            # The bad client misbehaves in every way it can.
            await bad.ws.send("{not json")
            await bad.ws.send(json.dumps({"type": "teleport"}))
            await bad.ws.send(json.dumps(["no", "type"]))
            await bad.ws.send(b"\x01\x02\x03")  # odd byte count
            await bad.ws.send(b"\x00" * 200_000)  # far too large for one message
            errors = []
            for _ in range(100):
                errors = bad.notices_of("error")
                if len(errors) >= 5:
                    break
                await asyncio.sleep(0.05)
            # Both talk; the bad one hangs up while the agent answers it.
            good_spoke = good.say_later(request)
            await bad.say(request)
            await bad.wait_for(lambda n: n["type"] == "agent_text", timeout=30)
            await bad.ws.close()
            spoke_until = await good_spoke
            await good.wait_for(lambda n: n["type"] == "latency" and n.get("voice_to_voice_ms") is not None, timeout=30, after=spoke_until)
            await good.wait_quiet(quiet=1.0, timeout=30, after=spoke_until)
            phases = (await _phase(stack.nats_url, bad.session), await _phase(stack.nats_url, good.session))
            return errors, good, bad, phases

    errors, good, bad, (bad_phase, good_phase) = asyncio.run(scenario())
    texts = " | ".join(e["error"] for e in errors)
    assert len(errors) >= 5, texts
    assert "JSON" in texts and "teleport" in texts and "even number of bytes" in texts and "too large" in texts, texts
    # The well-behaved session got its whole answer.
    assert good.audio_after(0) and good.notices_of("agent_text")
    assert not good.notices_of("error")
    assert bad_phase == "Ended"  # the dropped socket ended its own session...
    assert good_phase == "Listening"  # ...and only that one
