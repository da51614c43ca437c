"""Call recordings: the timeline, the files (crash, repair, retention), and
the gateway recording real calls over /ws/pcm and the Twilio protocol, with
the rest of Parley played on the bus (no models: tones and noise).

What the agent channel must hold is what the caller heard: on /ws/pcm the
frames that left the playout (the client's received frames, sample for
sample); on Twilio what the caller's echoed marks prove was played (checked
against the caller simulator's ear, which cuts at the clear).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets

from parley import contract
from parley.contract import FlushPlayback, PausePlayback, SessionStarted
from parley.natsd import free_port
from parley_gateway import recording as rec
from parley_gateway.settings import Settings

from test_twilio_media import Agent, Gateway, marked_caller, noise, tone
from test_webrtc_gateway import API_KEY, mint

WATCH = {"Authorization": "Bearer watch-token"}  # the inspector token: a header, never the URL

R = rec.RATE


def read_wav(path: Path) -> tuple[np.ndarray, np.ndarray, wave._wave_params]:
    with wave.open(str(path)) as w:
        params = w.getparams()
        x = np.frombuffer(w.readframes(params.nframes), dtype="<i2").reshape(-1, params.nchannels)
    return x[:, 0], x[:, 1], params


def spans(x: np.ndarray, rate: int = R, win: float = 0.01, floor: float = 300.0) -> list[tuple[float, float]]:
    """(start, end) seconds of sound (10 ms windows above ``floor`` RMS), gaps under 50 ms merged."""
    n = int(rate * win)
    k = len(x) // n
    loud = np.sqrt((x[: k * n].astype(np.float64).reshape(k, n) ** 2).mean(axis=1)) > floor
    out: list[tuple[float, float]] = []
    for i in np.flatnonzero(loud):
        a, b = i * win, (i + 1) * win
        if out and a - out[-1][1] < 0.05:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


# --------------------------------------------------------------------- policy


@pytest.mark.parametrize(
    ("mode", "params", "recorded"),
    [
        ("off", {"recording": "on"}, False),
        ("opt-in", {}, False),
        ("opt-in", {"recording": "on"}, True),
        ("opt-in", {"recording": "yes"}, True),
        ("opt-in", {"recording": "off"}, False),
        ("all", {}, True),
        ("all", {"recording": "off"}, True),  # the deployment records every call
    ],
)
def test_whether_a_call_is_recorded(mode, params, recorded):
    assert rec.wanted(mode, params) is recorded


def test_settings_are_checked_at_start_with_the_variables_name():
    s = Settings.from_env({"PARLEY_RECORDINGS": "opt-in", "PARLEY_RECORDINGS_KEEP_DAYS": "7", "PARLEY_DATA_DIR": "/tmp/x"})
    assert (s.recordings, s.recordings_keep_days, s.data_dir) == ("opt-in", 7.0, Path("/tmp/x"))
    assert Settings.from_env({}).recordings == "off" and Settings.from_env({}).recordings_keep_days == 30.0
    with pytest.raises(ValueError, match="PARLEY_RECORDINGS must be one of"):
        Settings.from_env({"PARLEY_RECORDINGS": "yes"})
    for bad in ("0", "-1", "forever", "nan"):
        with pytest.raises(ValueError, match="PARLEY_RECORDINGS_KEEP_DAYS"):
            Settings.from_env({"PARLEY_RECORDINGS_KEEP_DAYS": bad})


# --------------------------------------------------------------------- timeline


def pcm(value: int, ms: int) -> bytes:
    return np.full(R * ms // 1000, value, dtype="<i2").tobytes()


def test_pieces_land_where_their_time_says_with_silence_between():
    t = rec.Timeline(start=100.0)
    t.put(0, 100.0, pcm(1, 20))
    t.put(1, 100.5, pcm(2, 100))  # the agent, half a second in
    x = np.frombuffer(t.take(), dtype="<i2").reshape(-1, 2)
    assert len(x) == R * 6 // 10
    assert (x[: R // 50, 0] == 1).all() and (x[R // 50 :, 0] == 0).all()
    assert (x[: R // 2, 1] == 0).all() and (x[R // 2 :, 1] == 2).all()


def test_audio_the_client_dropped_at_a_pause_is_taken_back_and_placed_again_where_it_plays():
    t = rec.Timeline(start=0.0)
    t.put(0, 0.0, pcm(1, 200))
    t.put(1, 0.0, pcm(2, 100))  # the agent, 0-100 ms; the caller's client dropped the last 30 ms at the pause
    assert t.take_back(1, R * 30 // 1000) == R * 30 // 1000
    t.put(1, 0.15, pcm(3, 30))  # the same 30 ms, played after the resume
    x = np.frombuffer(t.take(), dtype="<i2").reshape(-1, 2)[:, 1]
    assert (x[: R * 70 // 1000] == 2).all() and (x[R * 70 // 1000 : R * 150 // 1000] == 0).all() and (x[R * 150 // 1000 : R * 180 // 1000] == 3).all() and not x[R * 180 // 1000 :].any()
    assert t.take_back(1, R) == 0  # what was handed out is not taken back


def test_arrival_jitter_neither_gaps_nor_overlaps_a_channel():
    t = rec.Timeline(start=0.0)
    at = 0.0
    for i, jitter in enumerate([0.0, 0.012, -0.008, 0.03, -0.02, 0.005] * 10):
        t.put(0, at + jitter, pcm(i % 100 + 1, 20))
        at += 0.02
    x = np.frombuffer(t.take(), dtype="<i2").reshape(-1, 2)[:, 0]
    assert len(x) == 60 * R // 50 and (x != 0).all()  # 60 frames back to back
    assert list(x[:: R // 50]) == [i % 100 + 1 for i in range(60)]  # in order


def test_a_late_piece_loses_only_what_was_written_already_and_a_runaway_channel_is_bounded():
    t = rec.Timeline(start=0.0)
    t.put(0, 0.0, pcm(1, 1000))
    assert len(t.take(t.sample(0.5))) == R // 2 * 4
    t.put(1, 0.4, pcm(3, 200))  # 0.1 s of it falls before what was written
    assert t.late == R // 10
    x = np.frombuffer(t.take(), dtype="<i2").reshape(-1, 2)
    assert (x[: R // 10, 1] == 3).all() and (x[R // 10 :, 1] == 0).all()
    runaway = rec.Timeline(start=0.0)
    for _ in range(70):  # 70 s of audio "at once": a client far faster than real time
        runaway.put(0, 0.0, pcm(1, 1000))
    assert runaway.dropped == 10 * R and len(runaway.tracks[0]) == 60 * R * 2


# --------------------------------------------------------------------- files


def test_a_crash_mid_call_keeps_the_audio_and_the_next_start_fixes_the_header(tmp_path):
    """A process writing a recording is killed (SIGKILL): the data on disk is
    whole, the header says 0; repair fixes it, and leaves a live one alone."""
    folder = tmp_path / "recordings"
    code = f"""
import os, signal, numpy as np
from pathlib import Path
from parley_gateway.recording import WavFile
f = WavFile(Path({str(folder / 'crashed.wav')!r}), {{"session": "crashed", "started_at": 1.0}})
f.append(np.full((16000, 2), 7, dtype="<i2").tobytes())
f.append(b"\\x01\\x00\\x02")  # a frame cut mid-write
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", code])
    assert proc.returncode == -signal.SIGKILL
    live = rec.WavFile(folder / "live.wav", {"session": "live"})
    live.append(np.zeros((800, 2), dtype="<i2").tobytes())
    assert rec.repair(folder) == ["crashed"]
    caller, agent, params = read_wav(folder / "crashed.wav")
    assert (params.nchannels, params.framerate, params.sampwidth, params.nframes) == (2, R, 2, 16000)
    assert (caller == 7).all() and (agent == 7).all()
    meta = json.loads((folder / "crashed.json").read_text())
    assert meta["recovered"] and meta["finished"] and meta["seconds"] == 1.0
    assert (folder / "live.wav").stat().st_size == rec.HEADER + 3200 and not json.loads((folder / "live.json").read_text())["finished"]
    assert rec.repair(folder) == []  # idempotent
    live.finish({"end_reason": "hangup"})
    assert read_wav(folder / "live.wav")[2].nframes == 800


def test_retention_deletes_old_recordings_and_never_a_live_one(tmp_path):
    now = time.time()
    old, recent = rec.WavFile(tmp_path / "old.wav", {}), rec.WavFile(tmp_path / "recent.wav", {})
    for f in (old, recent):
        f.finish({})
    held = rec.WavFile(tmp_path / "held.wav", {})  # still being written
    for name, age_days in (("old", 31), ("recent", 29), ("held", 40)):
        for suffix in (".wav", ".json"):
            os.utime(tmp_path / f"{name}{suffix}", (now - age_days * 86400, now - age_days * 86400))
    assert rec.sweep(tmp_path, 30, now) == ["old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["held.json", "held.wav", "recent.json", "recent.wav"]
    held.finish({})


def test_a_recorder_writes_both_channels_through_the_writer_thread(tmp_path):
    stats: dict = {}
    recordings = rec.Recordings(tmp_path, "all", 30, stats)
    recordings.open()
    t0 = 1000.0
    r = recordings.start("s1", {}, "twilio", t0)
    for i in range(100):  # 2 s of caller audio, 20 ms at a time
        r.caller(t0 + 0.02 * (i + 1), pcm(5, 20))
    # Twilio: 0.5 s of μ-law heard, proven by an echo at t0 + 1.5
    r.agent_ulaw(t0 + 1.5, bytes([0x80]) * 4000)  # μ-law 0x80: a loud constant
    r.flush(t0 + 1.2)
    r.close(t0 + 2.0, "caller hung up")
    recordings.close()
    caller, agent, params = read_wav(tmp_path / "s1.wav")
    assert params.nchannels == 2 and params.framerate == R
    assert len(caller) == 2 * R and (caller == 5).all()
    (a, b), = spans(agent, floor=1000)
    assert abs(a - 1.0) < 0.01 and abs(b - 1.5) < 0.01
    meta = json.loads((tmp_path / "s1.json").read_text())
    assert meta["finished"] and meta["end_reason"] == "caller hung up" and meta["transport"] == "twilio" and meta["started_at"] == t0
    assert stats.get("recording_errors", 0) == 0


def test_a_recording_that_cannot_be_written_is_loud_and_the_call_goes_on(tmp_path):
    stats: dict = {}
    (tmp_path / "s2.wav").write_bytes(b"someone else's file")
    recordings = rec.Recordings(tmp_path, "all", 30, stats)
    recordings.open()
    r = recordings.start("s2", {}, "pcm", 0.0)
    r.caller(0.02, pcm(1, 20))
    r.flush(5.0)
    r.close(6.0, "hangup")
    recordings.close()
    assert r.failed.startswith("FileExistsError") and stats["recording_errors"] >= 1
    assert (tmp_path / "s2.wav").read_bytes() == b"someone else's file"


# --------------------------------------------------------------------- the gateway


@pytest.fixture(scope="module")
def recording_gateway(nats_server, tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    # No Twilio auth token: the insecure development mode (the tests play Twilio directly).
    settings = Settings(nats_url=nats_server.url, http_port=free_port(), public_host="gw.example.com", data_dir=data, recordings="opt-in",
                        inspect_token="watch-token", twilio_insecure=True, api_key=API_KEY)
    with Gateway(settings) as gw:
        yield gw


def finished(gw: Gateway, session: str, timeout: float = 10.0) -> Path:
    path = gw.settings.data_dir / "recordings" / f"{session}.wav"
    deadline = time.monotonic() + timeout
    while not (path.with_suffix(".json").exists() and json.loads(path.with_suffix(".json").read_text()).get("finished")):
        assert time.monotonic() < deadline, f"{path} not finished"
        time.sleep(0.05)
    return path


def test_twilio_the_agent_channel_is_what_the_marks_prove_the_caller_heard(recording_gateway, nats_server, caplog):
    """The agent speaks 2 s; the caller talks over it at ~0.6 s; the gateway
    pauses (clear) then flushes. The recording's agent channel is exactly
    what the echoed marks proved heard at the clear, never more than the
    caller's ear heard, holds nothing of the unheard rest, and the caller's
    words sit beside it on the same clock."""
    caplog.set_level("INFO", logger="parley.gateway")
    gw = recording_gateway
    answer = noise(2.0, 7)
    words = tone(400, 0.8, 8000)

    async def scenario():
        async with Agent(nats_server.url) as agent:
            caller = marked_caller(gw.ws, {"recording": "on"}, playout_delay=0.06)
            async with caller:
                session = await agent.session_of(caller)
                await agent.speak(session, 1, [answer], rate=8000)
                await caller.wait_until(lambda: len(caller.played_audio()) >= 2 * 8000 * 0.5, 10, "half a second heard")
                said = caller.say_later(words)
                await asyncio.sleep(0.1)
                await agent.command(PausePlayback(session=session, run=1))
                cleared_at = await caller.wait_clear(timeout=5)
                await asyncio.sleep(0.3)
                await agent.command(FlushPlayback(session=session, run=1))
                await said
                await asyncio.sleep(0.5)
            return caller, agent, session, cleared_at

    caller, agent, session, cleared_at = asyncio.run(scenario())
    (_, started), = [(t, e) for t, e in agent.of(SessionStarted, session)]
    assert started.recorded
    left, right, params = read_wav(finished(gw, session))
    assert params.nchannels == 2 and params.framerate == R
    heard_s = sum(len(p) for _, p in caller.rec.played) / 2 / 8000
    agent_spans = spans(right)
    recorded_s = sum(b - a for a, b in agent_spans)
    # What the marks proved at the clear: everything Twilio was sent before it
    # (the caller got it all before the clear: one ordered socket) less what
    # the gateway could not prove heard (sent after the last echo it had read;
    # how much that is depends on its loop's speed: a fixed allowance for it
    # failed under load).
    (clear,) = [r for r in caplog.records if r.getMessage() == "twilio clear sent (pause)"]
    sent_s = sum(len(u) for t, u in caller.rec.media if t < cleared_at) / 8000
    proven_s = sent_s - clear.unheard_ms / 1000
    print(
        f"\n[recording] twilio: the caller heard {heard_s * 1000:.0f} ms of the answer, the recording holds {recorded_s * 1000:.0f} ms; "
        f"sent before the clear {sent_s * 1000:.0f} ms, unproven at it {clear.unheard_ms} ms"
    )
    assert abs(recorded_s - proven_s) <= 0.02, (recorded_s, proven_s, sent_s, clear.unheard_ms, agent_spans)
    assert recorded_s <= heard_s + 0.02, (recorded_s, heard_s)  # never what the caller did not hear
    assert heard_s < 1.2 and len(agent_spans) == 1  # nothing of the unheard 0.8+ s
    # One clock: the caller's words start in the recording where they started
    # relative to the cut at the caller's ear.
    (w0, w1), = spans(left)
    onset = caller.rec.utterances[0].first
    cut_at_ear = caller.ear.last_heard_at()
    print(f"[recording] twilio: caller onset - cut: {(onset - cut_at_ear) * 1000:.0f} ms at the caller, {(w0 - agent_spans[0][1]) * 1000:.0f} ms in the recording")
    # The recording's cut is early by exactly what it could not prove heard.
    assert abs((w0 - agent_spans[0][1]) - (onset - cut_at_ear) - (heard_s - recorded_s)) < 0.06, (w0, agent_spans, onset - cut_at_ear, heard_s - recorded_s)
    assert abs((w1 - w0) - 0.8) < 0.05


def test_pcm_the_agent_channel_is_every_frame_that_left_the_playout(recording_gateway, nats_server):
    gw = recording_gateway
    base = gw.http.replace("http", "ws")

    async def scenario():
        async with Agent(nats_server.url) as agent:
            frames: list[bytes] = []
            notices: list[dict] = []
            async with websockets.connect(f"{base}/ws/pcm?token={await mint(gw.http)}&recording=on") as ws:

                async def mic():
                    hum = tone(300, 0.02, R).astype("<i2").tobytes()
                    while True:
                        await ws.send(hum)
                        await asyncio.sleep(0.02)

                async def ear():
                    async for m in ws:
                        (frames.append(m) if isinstance(m, bytes) else notices.append(json.loads(m)))

                tasks = [asyncio.create_task(mic()), asyncio.create_task(ear())]
                while not any(n["type"] == "session" for n in notices):
                    await asyncio.sleep(0.01)
                session = next(n["session"] for n in notices if n["type"] == "session")
                await asyncio.sleep(0.3)
                await agent.speak(session, 1, [noise(1.5, 3, R)], rate=R)
                while len(frames) < 40:
                    await asyncio.sleep(0.01)
                await agent.command(FlushPlayback(session=session, run=1))
                await asyncio.sleep(0.5)
                await ws.send(json.dumps({"type": "hangup"}))
                await asyncio.sleep(0.3)
                for t in tasks:
                    t.cancel()
            return session, b"".join(frames)

    session, received = asyncio.run(scenario())
    left, right, _ = read_wav(finished(gw, session))
    sent = np.frombuffer(received, dtype="<i2")
    (a, b), = spans(right)
    start = int(np.flatnonzero(right)[0])
    assert np.array_equal(right[start : start + len(sent)], sent)  # sample for sample, in one stretch
    assert not right[start + len(sent) :].any() and not right[:start].any()
    assert 39 <= len(sent) / 320 <= 60  # the flush cut the 1.5 s answer
    assert spans(left)[0][0] < 0.1 and spans(left)[-1][1] > a + len(sent) / R  # the hum, all along


def test_a_call_that_did_not_opt_in_is_not_recorded(recording_gateway, nats_server):
    gw = recording_gateway

    async def scenario():
        async with Agent(nats_server.url) as agent:
            caller = marked_caller(gw.ws, {})
            async with caller:
                session = await agent.session_of(caller)
                await asyncio.sleep(0.3)
            return agent, session

    agent, session = asyncio.run(scenario())
    assert not agent.of(SessionStarted, session)[0][1].recorded
    assert not (gw.settings.data_dir / "recordings" / f"{session}.wav").exists()


def test_the_inspector_serves_recordings_to_the_token_holder_only(recording_gateway, nats_server):
    gw = recording_gateway

    async def scenario():
        async with Agent(nats_server.url) as agent:
            caller = marked_caller(gw.ws, {"recording": "on"})
            async with caller:
                session = await agent.session_of(caller)
                await asyncio.sleep(1.5)  # written so far: ~1 s
                async with httpx.AsyncClient(base_url=gw.http, trust_env=False) as http:
                    live = await http.get(f"/api/recordings/{session}.wav", headers=WATCH)
            return session, live

    session, live = asyncio.run(scenario())
    assert live.status_code == 200 and live.headers["content-type"] == "audio/wav"
    assert live.content[:4] == b"RIFF" and int.from_bytes(live.content[40:44], "little") == len(live.content) - rec.HEADER > 0
    finished(gw, session)
    with httpx.Client(base_url=gw.http, trust_env=False) as http:
        for url in ("/api/recordings", f"/api/recordings/{session}", f"/api/recordings/{session}.wav"):
            assert http.get(url).status_code == 403
            assert http.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 403
        listed = http.get("/api/recordings", headers=WATCH).json()
        assert session in [r["session"] for r in listed["recordings"]] and listed["mode"] == "opt-in"
        meta = http.get(f"/api/recordings/{session}", headers=WATCH).json()
        assert meta["finished"] and meta["transport"] == "twilio" and meta["audio"] == f"/api/recordings/{session}.wav"
        wav = http.get(f"/api/recordings/{session}.wav", headers=WATCH)
        assert wav.status_code == 200 and wav.content[:4] == b"RIFF"
        assert http.get("/api/recordings/nope", headers=WATCH).status_code == 404
        assert http.get("/api/recordings/..%2Fsecrets.wav", headers=WATCH).status_code in (400, 404)


def test_webrtc_the_agent_channel_is_what_left_the_playout_at_16_khz(nats_server, tmp_path):
    """WebRTC plays 48 kHz: what left the playout is recorded at 16 kHz."""
    from test_webrtc_gateway import MIC_HZ, Caller, dominant_hz, gateway, publish_tts, until

    async def scenario():
        async with gateway(nats_server.url, data_dir=tmp_path, recordings="all") as (base, state, nc, seen):
            caller = Caller()
            await caller.connect(base)
            await until(lambda: caller.pc.connectionState == "connected", what="ICE/DTLS")
            await asyncio.sleep(0.5)
            await publish_tts(nc, caller.session, run=1, pcm=tone(660, 1.0, 22050).astype("<i2").tobytes(), rate=22050)
            await until(lambda: sum(len(p) for _, _, p in caller.received if np.abs(p).max() > 1000) >= 48000 * 0.9, what="the answer heard")
            await asyncio.sleep(0.3)
            await caller.pc.close()
            await until(lambda: any(isinstance(e, contract.SessionEnded) for e in seen["events"]), what="SessionEnded")
            return caller.session

    session = asyncio.run(scenario())
    path = tmp_path / "recordings" / f"{session}.wav"
    deadline = time.monotonic() + 10
    while not json.loads(path.with_suffix(".json").read_text()).get("finished"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    left, right, params = read_wav(path)
    (a, b), = spans(right)
    assert abs((b - a) - 1.0) < 0.05 and abs(dominant_hz(right[int(a * R) : int(b * R)], R) - 660) < 10
    assert abs(dominant_hz(left[int(a * R) : int(b * R)], R) - MIC_HZ) < 10  # the caller's microphone, all along
