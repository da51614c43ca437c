"""The inspector for calls without a page of their own: /?watch=SESSION."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from parley.callers.pcm import PcmCaller
from speech import say
from stack import Stack

pytestmark = pytest.mark.e2e

TOKEN = "watch-token-123456"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with Stack(tmp_path_factory.mktemp("inspect"), env={"PARLEY_PROVIDERS": "fixed", "PARLEY_INSPECT_TOKEN": TOKEN}) as s:
        yield s


def test_a_watcher_sees_the_whole_call_live_and_after_the_fact(stack):
    async def scenario():
        async with PcmCaller(f"{stack.gateway_ws}/ws/pcm") as caller:
            watched: list[dict] = []

            async def watch():
                async with websockets.connect(f"{stack.gateway_ws}/ws/inspect/{caller.session}?token={TOKEN}") as ws:
                    async for msg in ws:
                        watched.append(json.loads(msg))

            watcher = asyncio.create_task(watch())
            spoke = await caller.say(say("I'd like to book an appointment tomorrow at three p.m."))
            await caller.wait_for(lambda n: n["type"] == "latency" and n.get("voice_to_voice_ms") is not None, timeout=30, after=spoke)
            await caller.wait_quiet(quiet=1.0, timeout=30, after=spoke)
            await asyncio.sleep(0.5)
            watcher.cancel()
            # After the fact: the log replays from the start.
            later: list[dict] = []
            async with websockets.connect(f"{stack.gateway_ws}/ws/inspect/{caller.session}?token={TOKEN}") as ws:
                try:
                    while True:
                        later.append(json.loads(await asyncio.wait_for(ws.recv(), timeout=1.5)))
                except asyncio.TimeoutError:
                    pass
            return caller, watched, later

    caller, watched, later = asyncio.run(scenario())
    kinds = {n["type"] for n in watched}
    assert {"session", "step", "state", "transcript", "agent_text", "latency"} <= kinds, kinds
    events = [n["event"] for n in later if n["type"] == "step"]
    assert events[0] == "SessionStarted" and "TranscriptFinal" in events and "PlaybackProgress" in events
    mine = [n for n in caller.notices_of("step")]
    assert [n["event"] for n in mine] == events[: len(mine)]
    assert caller.session in httpx.get(f"{stack.gateway}/api/sessions", params={"token": TOKEN}).json()["sessions"]


def test_an_invalid_session_id_is_refused(stack):
    async def scenario():
        async with websockets.connect(f"{stack.gateway_ws}/ws/inspect/bad.id?token={TOKEN}") as ws:
            return json.loads(await ws.recv())

    assert asyncio.run(scenario())["type"] == "error"


def test_without_the_token_nobody_watches_anybody(stack):
    assert httpx.get(f"{stack.gateway}/api/sessions").status_code == 403
    assert httpx.get(f"{stack.gateway}/api/sessions", params={"token": "guess"}).status_code == 403

    async def scenario():
        async with websockets.connect(f"{stack.gateway_ws}/ws/inspect/pcm-0123456789abcdef?token=guess") as ws:
            first = json.loads(await ws.recv())
            try:
                await ws.recv()
            except websockets.ConnectionClosed as closed:
                return first, closed.rcvd.code if closed.rcvd else None
            return first, None

    first, code = asyncio.run(scenario())
    assert first["type"] == "error" and "PARLEY_INSPECT_TOKEN" in first["error"] and code == 1008
