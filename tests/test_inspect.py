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
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with Stack(tmp_path_factory.mktemp("inspect"), env={"PARLEY_PROVIDERS": "fixed", "PARLEY_INSPECT_TOKEN": TOKEN}) as s:
        yield s


def test_a_watcher_sees_the_whole_call_live_and_after_the_fact(stack):
    async def scenario():
        async with PcmCaller(stack.pcm_url()) as caller:
            watched: list[dict] = []

            async def watch():
                async with websockets.connect(f"{stack.gateway_ws}/ws/inspect/{caller.session}", additional_headers=BEARER) as ws:
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
            async with websockets.connect(f"{stack.gateway_ws}/ws/inspect/{caller.session}", additional_headers=BEARER) as ws:
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
    assert caller.session in httpx.get(f"{stack.gateway}/api/sessions", headers=BEARER).json()["sessions"]
    # Who watched which call is on record.
    assert f'"session_id": "{caller.session}"' in stack.log("media-gateway") and "inspector watching" in stack.log("media-gateway")


def test_an_invalid_session_id_is_refused(stack):
    async def scenario():
        async with websockets.connect(f"{stack.gateway_ws}/ws/inspect/bad.id", additional_headers=BEARER) as ws:
            return json.loads(await ws.recv())

    assert asyncio.run(scenario())["type"] == "error"


def test_without_the_token_nobody_watches_anybody(stack):
    assert httpx.get(f"{stack.gateway}/api/sessions").status_code == 403
    assert httpx.get(f"{stack.gateway}/api/sessions", headers={"Authorization": "Bearer guess"}).status_code == 403
    # The token in the URL (where proxy logs and browser history keep it) is not taken.
    assert httpx.get(f"{stack.gateway}/api/sessions", params={"token": TOKEN}).status_code == 403
    assert httpx.get(f"{stack.gateway}/api/callbacks", params={"token": TOKEN}).status_code == 403

    async def scenario():
        async with websockets.connect(f"{stack.gateway_ws}/ws/inspect/pcm-0123456789abcdef?token={TOKEN}") as ws:
            first = json.loads(await ws.recv())
            try:
                await ws.recv()
            except websockets.ConnectionClosed as closed:
                return first, closed.rcvd.code if closed.rcvd else None
            return first, None

    first, code = asyncio.run(scenario())
    assert first["type"] == "error" and "PARLEY_INSPECT_TOKEN" in first["error"] and code == 1008


def test_the_page_logs_in_once_and_keeps_an_httponly_cookie(stack):
    with httpx.Client(base_url=stack.gateway, trust_env=False) as page:
        refused = page.post("/api/inspect/login", json={"token": "guess"})
        assert refused.status_code == 403 and "parley_inspect" not in page.cookies
        r = page.post("/api/inspect/login", json={"token": TOKEN})
        assert r.status_code == 200
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and TOKEN.lower() not in cookie
        assert page.get("/api/sessions").status_code == 200  # the cookie does it
        page.post("/api/inspect/logout")
        page.cookies.clear()
        assert page.get("/api/sessions").status_code == 403

    async def watch_with_cookie():
        with httpx.Client(base_url=stack.gateway, trust_env=False) as page:
            page.post("/api/inspect/login", json={"token": TOKEN})
            cookie = f"parley_inspect={page.cookies['parley_inspect']}"
        async with websockets.connect(f"{stack.gateway_ws}/ws/inspect/pcm-0123456789abcdef", additional_headers={"Cookie": cookie}) as ws:
            return json.loads(await ws.recv())

    assert asyncio.run(watch_with_cookie())["type"] == "session"
