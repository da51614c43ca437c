"""Admission: a full gateway refuses new calls with an answer each transport
understands, and the calls it carries go on untouched.

The gateway runs in-process on a real nats-server, with PARLEY_MAX_CALLS=2;
the test plays the other services on the bus (test_webrtc_gateway.gateway).
"""

from __future__ import annotations

import asyncio
import json

import httpx
import websockets

from parley import contract, subjects
from parley_gateway.admission import CLOSE_TRY_AGAIN

from test_webrtc_gateway import API_KEY, gateway, mint, publish_tts, tone, until
from test_ws_pcm import PcmClient


def twilio_start(call_sid: str) -> list[str]:
    """What Twilio sends first on a media stream (its documented messages)."""
    return [
        json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
        json.dumps({
            "event": "start", "sequenceNumber": "1", "streamSid": "MZ" + call_sid[2:],
            "start": {
                "streamSid": "MZ" + call_sid[2:], "accountSid": "AC" + "0" * 32, "callSid": call_sid, "tracks": ["inbound"],
                "customParameters": {}, "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }),
    ]  # fmt: skip


def test_a_full_gateway_refuses_new_calls_on_every_transport_and_the_calls_it_carries_go_on(nats_server):
    async def scenario():
        async with gateway(nats_server.url, max_calls=2, busy_retry_after=7, twilio_insecure=True) as (base, state, nc, seen):
            spare = await mint(base)  # minted while there is room
            clients = [PcmClient(), PcmClient()]
            tasks = [asyncio.create_task(c.run(f"{base.replace('http', 'ws')}/ws/pcm?token={await mint(base)}")) for c in clients]
            await until(lambda: all(c.session for c in clients), what="two calls")
            out: dict = {}
            # /ws/pcm: an error message, then "try again later".
            async with websockets.connect(f"{base.replace('http', 'ws')}/ws/pcm?token={spare}") as ws:
                out["pcm_message"] = json.loads(await ws.recv())
                try:
                    await ws.recv()
                except websockets.ConnectionClosed as closed:
                    out["pcm_close"] = closed.rcvd.code if closed.rcvd else None
            async with httpx.AsyncClient(trust_env=False) as http:
                # Twilio's webhook: TwiML that rejects the call as busy.
                out["webhook"] = await http.post(f"{base}/twilio/voice", data={"CallSid": "CA" + "1" * 32, "From": "+15550100", "To": "+15550199"})
                out["mint"] = await http.post(f"{base}/api/sessions", json={}, headers={"Authorization": f"Bearer {API_KEY}"})
                out["webrtc"] = await http.post(f"{base}/webrtc/offer", json={"sdp": "v=0", "type": "offer", "token": "x"})
            # A Twilio media stream that comes anyway (no webhook in front).
            async with websockets.connect(f"{base.replace('http', 'ws')}/twilio/media") as ws:
                for m in twilio_start("CA" + "2" * 32):
                    await ws.send(m)
                try:
                    while True:
                        await ws.recv()
                except websockets.ConnectionClosed as closed:
                    out["twilio_close"] = closed.rcvd.code if closed.rcvd else None
            # The calls in progress are untouched: an answer still plays on the first.
            s = clients[0].session
            before = len(clients[0].frames)
            await publish_tts(nc, s, run=1, pcm=tone(440, 0.5, 16000), rate=16000)
            await until(lambda: len(clients[0].frames) >= before + 20, what="the first call's answer")
            # A call ends: there is room again.
            tasks[1].cancel()
            await until(lambda: state["admission"].calls == {s}, what="the second call's end")
            third = PcmClient()
            tasks.append(asyncio.create_task(third.run(f"{base.replace('http', 'ws')}/ws/pcm?token={await mint(base)}")))
            await until(lambda: third.session, what="a new call once there is room")
            for t in tasks:
                t.cancel()
            out["stats"] = dict(state["stats"])
            return out

    out = asyncio.run(scenario())
    assert out["pcm_message"]["type"] == "error" and out["pcm_message"]["status"] == 503 and out["pcm_message"]["retry_after"] == 7
    assert "busy" in out["pcm_message"]["error"]
    assert out["pcm_close"] == CLOSE_TRY_AGAIN
    webhook = out["webhook"]
    assert webhook.status_code == 200 and webhook.headers["content-type"].startswith("text/xml")  # Twilio needs TwiML, not a 503
    assert '<Reject reason="busy"/>' in webhook.text and "<Connect>" not in webhook.text
    for r in (out["mint"], out["webrtc"]):
        assert r.status_code == 503 and r.headers["retry-after"] == "7" and "busy" in r.json()["error"]
    assert out["twilio_close"] == CLOSE_TRY_AGAIN
    stats = out["stats"]
    assert stats["calls_peak"] == 2
    assert {k: v for k, v in stats.items() if k.startswith("busy_refused_")} == {
        "busy_refused_pcm": 1, "busy_refused_twilio": 2, "busy_refused_api": 1, "busy_refused_webrtc": 1,
    }  # fmt: skip


def test_the_gateway_refuses_a_call_when_another_service_is_full_and_says_which(nats_server):
    """Stack-wide admission (parley.load): the test plays two ASR replicas'
    load reports on the bus. Full together: a new call is refused, naming the
    ASR; a third replica with room: let in; that replica stops reporting: its
    capacity goes with it after the TTL, and calls are refused again."""

    async def scenario():
        async with gateway(nats_server.url, max_calls=50, busy_retry_after=7, twilio_insecure=True) as (base, state, nc, seen):
            board = state["admission"].board
            board.ttl = 1.0  # shorter than the default 3.5 s, for the test's pace
            load = {"asr-a": (2, 2), "asr-b": (2, 2)}  # instance -> (active, capacity), reported every 0.2 s
            first = await mint(base)  # tokens are not minted while the stack is full

            async def reporting():
                while True:
                    for inst, (active, cap) in list(load.items()):
                        await nc.publish(subjects.load("asr", inst), contract.encode(contract.LoadReport(kind="asr", instance=inst, active=active, capacity=cap)))
                    await asyncio.sleep(0.2)

            reporter = asyncio.create_task(reporting())
            await until(lambda: board.totals().get("asr") and board.totals()["asr"].replicas == 2, what="two ASR replicas' reports")
            out: dict = {}
            ws_url = base.replace("http", "ws")
            async with websockets.connect(f"{ws_url}/ws/pcm?token={first}") as ws:
                out["pcm_message"] = json.loads(await ws.recv())
                try:
                    await ws.recv()
                except websockets.ConnectionClosed as closed:
                    out["pcm_close"] = (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else None
            async with httpx.AsyncClient(trust_env=False) as http:
                out["webhook"] = await http.post(f"{base}/twilio/voice", data={"CallSid": "CA" + "3" * 32, "From": "+15550100", "To": "+15550199"})
                out["webrtc"] = await http.post(f"{base}/webrtc/offer", json={"sdp": "v=0", "type": "offer", "token": "x"})
                # A third replica with room: calls get in.
                load["asr-c"] = (0, 3)
                await until(lambda: board.full() is None, what="room on the new replica")
                client = PcmClient()
                task = asyncio.create_task(client.run(f"{ws_url}/ws/pcm?token={await mint(base)}"))
                await until(lambda: client.session, what="a call let in")
                out["healthz"] = (await http.get(f"{base}/healthz")).json()["load"]
                # It dies (its reports stop): after the TTL its places are gone.
                del load["asr-c"]
                await until(lambda: board.full() is not None, timeout=5, what="the dead replica forgotten")
                out["after_death"] = board.full()
                out["mint"] = await http.post(f"{base}/api/sessions", json={}, headers={"Authorization": f"Bearer {API_KEY}"})
            task.cancel()
            reporter.cancel()
            out["stats"] = dict(state["stats"])
            return out

    out = asyncio.run(scenario())
    msg = out["pcm_message"]
    assert msg["type"] == "error" and msg["status"] == 503 and msg["full"] == "asr" and "asr" in msg["error"] and "4 of 4" in msg["error"], msg
    assert out["pcm_close"] == (CLOSE_TRY_AGAIN, "all lines are busy: asr full")
    assert '<Reject reason="busy"/>' in out["webhook"].text
    assert out["webrtc"].status_code == 503 and out["webrtc"].json()["full"] == "asr"
    assert out["healthz"]["asr"]["replicas"] == 3 and out["healthz"]["asr"]["capacity"] == 7
    assert out["after_death"].kind == "asr" and out["after_death"].replicas == 2
    assert out["mint"].status_code == 503 and out["mint"].json()["full"] == "asr"
    stats = out["stats"]
    assert stats["busy_full_asr"] == 4 and stats.get("busy_full_gateway", 0) == 0
