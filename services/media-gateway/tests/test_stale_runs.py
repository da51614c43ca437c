"""One message does not silence a call.

The issue's attack: a single 640-byte message on ``parley.tts.audio.<session>.99``
(a run that does not exist) closed every older run of the playout, and the
agent was silent for the rest of the call. The gateway now plays only chunks
the orchestrator announced (their Synthesize steps); anything else is held
briefly, then dropped and counted, and the live run plays on, whole. TTS is
the only service allowed to publish there (tests/test_natsauth.py); this is
the guard against TTS itself.
"""

from __future__ import annotations

import asyncio

import numpy as np

from parley_gateway import call as call_module

from test_webrtc_gateway import announce, gateway, publish_tts, tone, until
from test_ws_pcm import PcmClient, pcm_call, pcm_url

FRAME = 640


def _voiced(frames: list[tuple[float, bytes]]) -> int:
    return sum(1 for _, f in frames if np.abs(np.frombuffer(f, "<i2")).max() > 500)


def test_audio_for_a_run_nobody_asked_for_never_disturbs_the_live_run(nats_server, monkeypatch):
    monkeypatch.setattr(call_module, "UNANNOUNCED_HOLD_S", 0.3)

    async def scenario():
        async with gateway(nats_server.url) as (base, state, nc, seen), pcm_call(base) as client:
            s = client.session
            # The live run: 2 s of agent speech, announced by its step.
            await publish_tts(nc, s, run=1, pcm=tone(440, 2.0, 22050), rate=22050)
            await until(lambda: _voiced(client.frames) >= 10, what="the live run playing")
            # The attack: one frame on a made-up run, and on an unannounced chunk of the live run.
            await publish_tts(nc, s, run=99, pcm=bytes(FRAME), rate=16000, announced=True)
            await publish_tts(nc, s, run=1, pcm=bytes(FRAME), rate=16000, chunk=7, announced=True)
            await asyncio.sleep(2.5)
            live_frames = _voiced(client.frames)
            # The next genuine run still plays.
            await publish_tts(nc, s, run=2, pcm=tone(660, 0.6, 22050), rate=22050)
            await until(lambda: _voiced(client.frames) >= live_frames + 25, what="the next run playing")
            await publish_tts(nc, s, run=5, pcm=tone(660, 0.2, 22050), rate=22050, announced=True)  # still nobody asked
            await asyncio.sleep(0.8)
            await publish_tts(nc, s, run=6, pcm=bytes(FRAME), rate=16000, announced=True)  # triggers the expiry check
            await asyncio.sleep(0.3)
            return live_frames, dict(state["stats"])

    live_frames, stats = asyncio.run(scenario())
    assert live_frames >= 95, live_frames  # all 2 s of the live run (100 frames), none cut
    assert stats["tts_audio_unannounced"] >= 3
    assert stats.get("frames_dropped_stale", 0) == 0


def test_audio_that_arrives_before_its_step_plays_once_the_step_does(nats_server):
    """The step and the audio come on two subscriptions: the audio may win."""

    async def scenario():
        async with gateway(nats_server.url) as (base, state, nc, seen), pcm_call(base) as client:
            s = client.session
            await publish_tts(nc, s, run=1, pcm=tone(440, 0.5, 22050), rate=22050, announced=True)
            await asyncio.sleep(0.3)
            assert _voiced(client.frames) == 0
            await announce(nc, s, 1, [0])
            await until(lambda: _voiced(client.frames) >= 24, what="the held audio")
            return dict(state["stats"])

    stats = asyncio.run(scenario())
    assert stats.get("tts_audio_unannounced", 0) == 0


def test_a_step_of_another_session_announces_nothing(nats_server, monkeypatch):
    monkeypatch.setattr(call_module, "UNANNOUNCED_HOLD_S", 0.2)

    async def scenario():
        async with gateway(nats_server.url) as (base, state, nc, seen):
            a, b = PcmClient(), PcmClient()
            tasks = [asyncio.create_task(a.run(await pcm_url(base))), asyncio.create_task(b.run(await pcm_url(base)))]
            await until(lambda: a.session and b.session, what="sessions")
            # A step on a's subject that claims to be b's: ignored.
            from parley import contract, subjects
            import time

            cmd = contract.Synthesize(session=b.session, run=1, chunk=0, text="")
            event = contract.TimerFired(session=b.session, at=time.time(), name="x", token=0)
            await nc.publish(subjects.observe(a.session), contract.encode(contract.Step(index=0, event=event, state_from="Generating", state_to="Generating", commands=(cmd,))))
            await publish_tts(nc, a.session, run=1, pcm=tone(440, 0.3, 22050), rate=22050, announced=True)
            await asyncio.sleep(0.6)
            await publish_tts(nc, a.session, run=2, pcm=bytes(FRAME), rate=16000, announced=True)
            await asyncio.sleep(0.3)
            for t in tasks:
                t.cancel()
            return _voiced(a.frames), dict(state["stats"])

    voiced, stats = asyncio.run(scenario())
    assert voiced == 0 and stats["steps_foreign"] == 1 and stats["tts_audio_unannounced"] >= 1
