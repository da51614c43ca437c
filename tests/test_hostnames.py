"""The stack under host names that are not plain tokens.

A Mac is called ``Johns-MacBook-Pro.local``; a host name may be upper case or
not ASCII. Worker ids are built from the host name and end up in NATS
subjects, so each service here runs under such a name (its own UTS namespace)
and one call goes through the whole stack (fixed-latency providers): the ASR
worker claims the session and answers its liveness checks, TTS speaks.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from parley.callers.pcm import PcmCaller

from speech import say
from stack import Stack, can_rename_host

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not can_rename_host(), reason="needs root and unshare(1) to run a process under another host name"),
]

HOSTNAMES = {
    "asr": "Johns-MacBook-Pro.local",
    "tts": "BUILD.EXAMPLE.COM",
    "media-gateway": "jöhns-mäcbook.local",
    "orchestrator": "ops.parley.internal",
}


def test_a_call_goes_through_when_every_host_name_has_dots_capitals_or_accents(tmp_path):
    with Stack(tmp_path, env={"PARLEY_PROVIDERS": "fixed"}, hostnames=HOSTNAMES) as stack:

        async def scenario():
            async with PcmCaller(stack.pcm_url()) as caller:
                await asyncio.sleep(0.5)
                spoke = await caller.say(say("I'd like to book an appointment tomorrow at three p.m."))
                await caller.wait_for(lambda n: n["type"] == "latency" and n.get("voice_to_voice_ms") is not None, timeout=30, after=spoke)
                # Two of the gateway's liveness checks of its ASR worker (every 2 s).
                await asyncio.sleep(4.5)
                return caller

        caller = asyncio.run(scenario())
        assert caller.audio_after(0) and caller.notices_of("agent_text") and not caller.notices_of("error")  # TTS spoke
        asr_log = stack.log("asr")
        worker = re.search(r'"worker": "(asr-[^"]+)"', asr_log)
        assert worker and worker.group(1).startswith("asr-johns-macbook-pro-local-"), asr_log[-2000:]
        assert caller.session in asr_log  # this worker claimed the call
        assert "ASR worker gone" not in stack.log("media-gateway")  # its liveness subject answered
