"""An ASR worker that dies mid-call: the gateway claims the session again
through the queue group and the call goes on (fixed-latency providers)."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import pytest

from parley.callers.pcm import PcmCaller
from speech import say
from stack import Stack

pytestmark = pytest.mark.e2e


def test_the_call_survives_its_asr_worker(tmp_path):
    with Stack(tmp_path, env={"PARLEY_PROVIDERS": "fixed"}) as stack:
        stack.start_service("asr", instance="2")
        stack.wait_healthy()

        async def scenario():
            async with PcmCaller(stack.pcm_url()) as caller:
                await asyncio.sleep(0.5)
                owner = next(k for k in ("asr", "asr2") if caller.session in stack.log(k))
                os.killpg(stack.procs[owner].pid, signal.SIGKILL)
                stack.procs[owner].wait()
                await asyncio.sleep(4.5)  # two liveness rounds
                spoke = await caller.say(say("I'd like to book an appointment tomorrow at three p.m."))
                await caller.wait_for(lambda n: n["type"] == "latency" and n.get("voice_to_voice_ms") is not None, timeout=30, after=spoke)
                return owner

        owner = asyncio.run(scenario())
        survivor = "asr2" if owner == "asr" else "asr"
        stats = httpx.get(f"{stack.gateway}/healthz").json()["stats"]
        assert stats.get("asr_reclaims") == 1
        assert "ASR worker gone" in stack.log("media-gateway")
        assert stack.procs[survivor].poll() is None
        stack.procs.pop(owner)  # already dead: nothing for stop() to do
