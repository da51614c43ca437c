"""The WebRTC transport end to end at the gateway: aiortc on both sides.

The gateway app runs in-process under uvicorn on a free port, against a real
nats-server. The test plays the other services on NATS: it answers the ASR
claim, reads the caller's audio from ``audio_in``, publishes TTS audio and
playback commands, and watches the events the gateway publishes. The caller
is a Python ``RTCPeerConnection`` offering a microphone track (a sine tone)
and the ``events`` data channel, as the browser page does, with no STUN
server anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import time

import av
import httpx
import numpy as np
import pytest
import uvicorn
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from parley import bus, contract, subjects
from parley.natsd import free_port
from parley_gateway import webrtc
from parley_gateway.app import create_app
from parley_gateway.settings import Settings

RATE = 48000
FRAME = 960  # 20 ms at 48 kHz
MIC_HZ = 440.0
AGENT_HZ = 1000.0


def tone(hz: float, seconds: float, rate: int, amplitude: float = 0.3) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * hz * t) * amplitude * 32767).astype("<i2").tobytes()


def dominant_hz(pcm: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.argmax(spectrum) * rate / len(pcm))


def rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) if len(pcm) else 0.0


class ToneMic(MediaStreamTrack):
    """The caller's microphone: a steady sine, paced in real time."""

    kind = "audio"

    def __init__(self, hz: float = MIC_HZ):
        super().__init__()
        self.hz, self.pts, self.t0 = hz, 0, None
        self.stalled = asyncio.Event()  # set: the microphone sends nothing more

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        if self.stalled.is_set():
            await asyncio.Future()  # like a killed tab: no more packets, ever
        if self.t0 is None:
            self.t0 = time.monotonic()
        wait = self.t0 + self.pts / RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        t = (self.pts + np.arange(FRAME)) / RATE
        pcm = (np.sin(2 * np.pi * self.hz * t) * 0.3 * 32767).astype("<i2")
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = RATE, self.pts, fractions.Fraction(1, RATE)
        self.pts += FRAME
        return frame


class Caller:
    """A Python WebRTC caller: mic track, ``events`` channel, received audio."""

    def __init__(self):
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.mic = ToneMic()
        self.pc.addTrack(self.mic)
        self.channel = self.pc.createDataChannel("events")
        self.notices: list[dict] = []
        self.received: list[tuple[float, int, np.ndarray]] = []  # (arrival, pts, mono int16)
        self.channel.on("message", lambda m: self.notices.append(json.loads(m)))
        self.listening: set[asyncio.Task] = set()  # kept: a task nobody holds may be collected mid-call
        self.pc.on("track", self._on_track)
        self.session = ""

    def _on_track(self, track) -> None:
        task = asyncio.create_task(self._listen(track), name="caller-listen")
        self.listening.add(task)
        task.add_done_callback(self.listening.discard)

    async def _listen(self, track) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            pcm = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0]
            self.received.append((time.monotonic(), frame.pts, pcm.copy()))

    async def connect(self, base: str) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with httpx.AsyncClient() as http:
            token = await mint(base, http)
            r = await http.post(f"{base}/webrtc/offer", json={"sdp": self.pc.localDescription.sdp, "type": "offer", "token": token, "params": {"test_call": "t1"}})
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["type"] == "answer" and answer["session"].startswith("webrtc-")
        self.session = answer["session"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))

    def audio_since(self, t: float) -> np.ndarray:
        parts = [pcm for at, _, pcm in self.received if at >= t]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)


async def until(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


API_KEY = "test-api-key-0123456789"


async def mint(base: str, http: httpx.AsyncClient | None = None, **params: str) -> str:
    """A one-time session token from the gateway (POST /api/sessions)."""
    async with contextlib.AsyncExitStack() as stack:
        if http is None:
            http = await stack.enter_async_context(httpx.AsyncClient(trust_env=False))
        r = await http.post(f"{base}/api/sessions", json={"params": params}, headers={"Authorization": f"Bearer {API_KEY}"})
        assert r.status_code == 201, r.text
        return r.json()["token"]


async def pcm_url(base: str, **params: str) -> str:
    return base.replace("http", "ws") + f"/ws/pcm?token={await mint(base, **params)}"


@contextlib.asynccontextmanager
async def gateway(nats_url: str, **settings):
    """The gateway in-process, plus the test's NATS side: ASR claims, audio in, events."""
    nc = await bus.connect(nats_url, name="test")
    seen: dict = {"claims": [], "audio": {}, "events": []}

    async def on_claim(msg):
        claim = contract.decode(msg.data, contract.AsrClaim)
        seen["claims"].append(claim.session)
        await msg.respond(contract.encode(contract.AsrClaimed(session=claim.session, worker="test")))

    async def on_audio(msg):
        seen["audio"].setdefault(subjects.session_of(msg.subject), []).append((msg.headers, msg.data))

    async def on_event(msg):
        seen["events"].append(contract.decode_event(msg.data))

    async def on_alive(msg):  # the "test" worker is alive: no re-claim by the call's watcher
        await msg.respond(b"")

    seen["claim_sub"] = await nc.subscribe(subjects.ASR_CLAIM, cb=on_claim)
    await nc.subscribe(subjects.asr_alive("test"), cb=on_alive)
    await nc.subscribe(f"{subjects.PREFIX}.audio.in.*", cb=on_audio)
    await nc.subscribe(subjects.EVENTS_ALL, cb=on_event)
    port = free_port()
    app = create_app(Settings(nats_url=nats_url, http_port=port, **{"api_key": API_KEY, **settings}))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    serving = asyncio.create_task(server.serve())
    await until(lambda: server.started, what="uvicorn")

    async def shutdown():
        server.should_exit = True
        await serving

    seen["shutdown"] = shutdown
    seen["server"] = server
    try:
        yield f"http://127.0.0.1:{port}", app.state.parley, nc, seen
    finally:
        await shutdown()
        await nc.drain()


@contextlib.asynccontextmanager
async def one_call(nats_url: str, **settings):
    """``gateway`` with one WebRTC caller on it, ICE/DTLS up; hung up at the end."""
    async with gateway(nats_url, **settings) as (base, state, nc, seen):
        caller = Caller()
        await caller.connect(base)
        try:
            await until(lambda: caller.pc.connectionState == "connected", what="ICE/DTLS")
            yield caller, base, state, nc, seen
        finally:
            await caller.pc.close()


async def announce(nc, session: str, run: int, chunks) -> None:
    """What the orchestrator does before TTS speaks: the reducer step carrying
    the Synthesize commands (the gateway plays only announced chunks)."""
    cmds = tuple(contract.Synthesize(session=session, run=run, chunk=c, text="") for c in chunks)
    event = contract.TimerFired(session=session, at=time.time(), name="test", token=0)
    await nc.publish(subjects.observe(session), contract.encode(contract.Step(index=0, event=event, state_from="Generating", state_to="Generating", commands=cmds)))
    await nc.flush()


async def publish_tts(nc, session: str, run: int, pcm: bytes, rate: int, chunk: int = 0, last: bool = True, announced: bool = False) -> None:
    if not announced:
        await announce(nc, session, run, [chunk])
    step = rate // 50 * 2 * 5  # 100 ms pieces, as a streaming TTS would send
    pieces = [pcm[i : i + step] for i in range(0, len(pcm), step)]
    for i, piece in enumerate(pieces):
        headers = bus.audio_headers(i, rate, chunk=chunk, last=last and i == len(pieces) - 1)
        await nc.publish(subjects.tts_audio(session, run), piece, headers=headers)


async def command(nc, session: str, cmd) -> None:
    await nc.publish(subjects.playback(session), contract.encode(cmd))


def test_audio_flows_both_ways_and_playback_is_reported(nats_server):
    async def scenario():
        async with one_call(nats_server.url) as (caller, base, state, nc, seen):
            s = caller.session
            await until(lambda: any(n["type"] == "session" for n in caller.notices), what="the session notice")
            assert seen["claims"] == [s]
            started = [e for e in seen["events"] if isinstance(e, contract.SessionStarted)]
            assert [(e.session, e.transport, e.params) for e in started] == [(s, "webrtc", {"test_call": "t1"})]

            # Inbound: the mic tone reaches audio_in as 16 kHz mono, in order.
            await until(lambda: sum(len(d) for _, d in seen["audio"].get(s, [])) >= 16000 * 2, what="1 s of caller audio")
            msgs = seen["audio"][s]
            assert [int(h[subjects.H_SEQ]) for h, _ in msgs] == list(range(len(msgs)))
            assert {h[subjects.H_RATE] for h, _ in msgs} == {"16000"}
            assert all(320 <= len(d) <= 4000 for _, d in msgs)  # batched ~40 ms, never one huge message
            inbound = np.frombuffer(b"".join(d for _, d in msgs), dtype="<i2")[-16000:]
            assert abs(dominant_hz(inbound, 16000) - MIC_HZ) < 10
            assert rms(inbound) > 0.1 * 0.3 * 32767

            # Outbound: 1.5 s of agent audio at Piper's 22 050 Hz arrives as the same tone.
            t_sent = time.monotonic()
            await publish_tts(nc, s, run=1, pcm=tone(AGENT_HZ, 1.5, 22050), rate=22050)
            finished = lambda: [e for e in seen["events"] if isinstance(e, contract.PlaybackProgress) and e.finished]  # noqa: E731
            await until(lambda: finished(), what="the chunk's finished mark")
            await asyncio.sleep(0.3)  # the jitter buffer's tail
            heard = caller.audio_since(t_sent)
            loud = np.flatnonzero(np.abs(heard) > 0.1 * 0.3 * 32767)
            assert len(loud), "no agent audio reached the caller"
            voiced = heard[loud[0] : loud[-1]]
            assert 1.3 * RATE < len(voiced) < 1.7 * RATE  # the whole 1.5 s, not a fragment or a loop
            assert abs(dominant_hz(voiced, RATE) - AGENT_HZ) < 10
            progress = [e for e in seen["events"] if isinstance(e, contract.PlaybackProgress)]
            assert [(e.run, e.chunk, e.finished) for e in progress] == [(1, 0, False), (1, 0, True)]
            assert abs(progress[-1].played_ms - 1500) <= 20

            # The transport's outbound track ran the whole time, voiced only for the chunk.
            track = state["webrtc"][s].track
            assert 74 <= track.voiced <= 76

            await caller.pc.close()
            await until(lambda: s not in state["webrtc"], what="the gateway to drop the call")
            await until(lambda: any(isinstance(e, contract.SessionEnded) for e in seen["events"]), what="SessionEnded")

    asyncio.run(scenario())


def test_idle_track_keeps_a_steady_20ms_cadence(nats_server):
    async def scenario():
        async with one_call(nats_server.url) as (caller, base, state, nc, seen):
            await until(lambda: len(caller.received) >= 10, what="the first frames")
            track = state["webrtc"][caller.session].track
            n0, t0, k0 = track.frames, time.monotonic(), len(caller.received)
            # Silence keeps flowing (a second of it comes), each frame 20 ms on from
            # the last and never faster than real time. How soon the second comes is
            # the machine's: a loop stalled under load sends late, or skips (resync);
            # a fixed window's count failed at load 14 (31 frames in 1.06 s).
            await until(lambda: track.frames - n0 >= 50, what="a second of frames")
            sent, elapsed = track.frames - n0, time.monotonic() - t0
            assert sent <= 1.4 * elapsed * 50 + 2, (sent, elapsed)
            # Every frame sent in the window reaches the caller (its receiving side
            # may run a few frames behind on a loaded machine).
            await until(lambda: len(caller.received) - k0 >= sent, what=f"the {sent} frames sent in the window")
            got = caller.received[k0 : k0 + sent]
            steps = np.diff([pts for _, pts, _ in got])
            assert (steps > 0).all(), "received frames out of order"
            assert np.median(steps) == FRAME
            assert track.voiced == 0 and all(rms(p) < 50 for _, _, p in got)

    asyncio.run(scenario())


def test_flush_stops_the_run_within_one_frame(nats_server):
    async def scenario():
        async with one_call(nats_server.url) as (caller, base, state, nc, seen):
            s = caller.session
            transport = state["webrtc"][s]
            call, track = transport.call, transport.track
            # Record every frame the outbound track pulls, and whether run 3 was
            # already flushed when it did.
            pulls: list[tuple[bool, bytes | None]] = []

            def observed():
                flushed = 3 in call.flushed_runs
                frame = call.next_frame()
                pulls.append((flushed, frame))
                return frame

            track.next_frame = observed
            await publish_tts(nc, s, run=3, pcm=tone(AGENT_HZ, 5.0, 24000), rate=24000)
            await until(lambda: track.voiced >= 25, what="half a second of the answer")
            t_flush = time.monotonic()
            await command(nc, s, contract.FlushPlayback(session=s, run=3))
            await until(lambda: 3 in call.flushed_runs, what="the flush")
            # Late audio of the flushed run is dropped and counted, never played.
            await publish_tts(nc, s, run=3, pcm=tone(AGENT_HZ, 1.0, 24000), rate=24000, chunk=1)
            await asyncio.sleep(1.2)

            after = [frame for flushed, frame in pulls if flushed]
            before = [frame for flushed, frame in pulls if not flushed]
            assert len(after) >= 25
            assert all(frame is None for frame in after), "a frame of the flushed run left after the flush"
            assert sum(frame is not None for frame in before) >= 25
            assert state["stats"].get("frames_flushed", 0) > 150  # most of the 5 s was still queued
            assert state["stats"].get("frames_dropped_stale", 0) >= 1

            # The caller hears the tone stop: nothing loud half a second after the flush
            # (the margin is for the receiver's jitter buffer), while 4 s of it were left.
            tail = caller.audio_since(t_flush + 0.5)
            assert len(tail) > 0.4 * RATE and rms(tail) < 100

    asyncio.run(scenario())


def test_data_channel_dtmf_hangup_and_end_session(nats_server):
    async def scenario():
        async with gateway(nats_server.url) as (base, state, nc, seen):
            a, b = Caller(), Caller()
            await a.connect(base)
            await b.connect(base)
            await until(lambda: a.channel.readyState == "open" and b.channel.readyState == "open", what="the data channels")
            a.channel.send(json.dumps({"type": "dtmf", "digit": "7"}))
            a.channel.send("not json")
            a.channel.send(json.dumps({"type": "dance"}))
            await until(lambda: any(isinstance(e, contract.Dtmf) for e in seen["events"]), what="the DTMF event")
            assert [(e.session, e.digit) for e in seen["events"] if isinstance(e, contract.Dtmf)] == [(a.session, "7")]
            await until(lambda: len([n for n in a.notices if n["type"] == "error"]) == 2, what="two error notices")

            # The page hangs up over the channel: its call ends, the other one doesn't.
            a.channel.send(json.dumps({"type": "hangup"}))
            await until(lambda: a.session not in state["webrtc"], what="the hang-up")
            ended = [e for e in seen["events"] if isinstance(e, contract.SessionEnded)]
            assert [(e.session, e.reason) for e in ended] == [(a.session, "client hung up")]
            await until(lambda: a.pc.connectionState == "closed" or a.channel.readyState == "closed", what="a's connection to close")
            assert b.session in state["webrtc"] and b.pc.connectionState == "connected"

            # The agent ends b's session: b gets the "end" notice, then the gateway hangs up.
            await command(nc, b.session, contract.EndSession(session=b.session, reason="goodbye"))
            await until(lambda: b.session not in state["webrtc"], what="EndSession to close the call")
            assert {"type": "end", "reason": "goodbye"} in b.notices
            # The agent ended it: the gateway does not announce a caller hang-up.
            assert not [e for e in seen["events"] if isinstance(e, contract.SessionEnded) and e.session == b.session]
            await a.pc.close()
            await b.pc.close()

    asyncio.run(scenario())


def test_bad_offers_get_400_and_leave_nothing_behind(nats_server):
    async def scenario():
        async with gateway(nats_server.url) as (base, state, nc, seen):
            live = Caller()
            await live.connect(base)
            no_audio = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            no_audio.createDataChannel("events")
            await no_audio.setLocalDescription(await no_audio.createOffer())
            bad = [
                ("not json", b"{nope"),
                ("not an object", b"[1, 2]"),
                ("wrong type", json.dumps({"sdp": live.pc.localDescription.sdp, "type": "answer"}).encode()),
                ("no sdp", json.dumps({"type": "offer"}).encode()),
                ("garbage sdp", json.dumps({"sdp": "hello", "type": "offer"}).encode()),
                ("sdp without audio", json.dumps({"sdp": no_audio.localDescription.sdp, "type": "offer"}).encode()),
                ("bad params", json.dumps({"sdp": live.pc.localDescription.sdp, "type": "offer", "params": {"a": 1}}).encode()),
                ("huge", json.dumps({"sdp": "v=0\r\n" + "a=x\r\n" * 40000, "type": "offer"}).encode()),
            ]
            async with httpx.AsyncClient() as http:
                for name, body in bad:
                    r = await http.post(f"{base}/webrtc/offer", content=body, headers={"content-type": "application/json"})
                    assert r.status_code == 400, (name, r.status_code, r.text)
                    assert r.json()["error"], name
            await no_audio.close()
            # Only the live call was ever started, and it still works.
            assert seen["claims"] == [live.session]
            assert list(state["webrtc"]) == [live.session]
            assert [e.session for e in seen["events"] if isinstance(e, contract.SessionStarted)] == [live.session]
            await until(lambda: live.pc.connectionState == "connected", what="the live call")
            await live.pc.close()

    asyncio.run(scenario())


def test_no_asr_worker_is_a_clear_503(nats_server):
    async def scenario():
        async with gateway(nats_server.url) as (base, state, nc, seen):
            await seen["claim_sub"].unsubscribe()  # nobody answers the ASR claim now
            caller = Caller()
            await caller.pc.setLocalDescription(await caller.pc.createOffer())
            async with httpx.AsyncClient(timeout=15) as http:
                r = await http.post(f"{base}/webrtc/offer", json={"sdp": caller.pc.localDescription.sdp, "type": "offer", "token": await mint(base, http)})
            assert r.status_code == 503 and "speech recognizer" in r.json()["error"]
            assert state["webrtc"] == {}
            await caller.pc.close()

    asyncio.run(scenario())


def test_gateway_shutdown_hangs_up_its_calls(nats_server):
    async def scenario():
        async with one_call(nats_server.url) as (caller, base, state, nc, seen):
            await seen["shutdown"]()
            assert state["webrtc"] == {}
            await until(lambda: any(isinstance(e, contract.SessionEnded) for e in seen["events"]), what="SessionEnded")
            ended = [e for e in seen["events"] if isinstance(e, contract.SessionEnded)]
            assert [(e.session, e.reason) for e in ended] == [(caller.session, "gateway shutting down")]
            await until(lambda: caller.channel.readyState == "closed", what="the caller to see the hang-up")

    asyncio.run(scenario())


def test_a_caller_that_goes_silent_on_the_wire_is_hung_up(nats_server, monkeypatch):
    monkeypatch.setattr(webrtc, "INBOUND_TIMEOUT", 2.0)

    async def scenario():
        async with one_call(nats_server.url) as (caller, base, state, nc, seen):
            await until(lambda: caller.session in seen["audio"], what="caller audio")
            caller.mic.stalled.set()
            await until(lambda: caller.session not in state["webrtc"], timeout=10, what="the gateway to give up")
            ended = [e for e in seen["events"] if isinstance(e, contract.SessionEnded)]
            assert [(e.session, e.reason) for e in ended] == [(caller.session, "no audio from the caller for 2 s")]

    asyncio.run(scenario())


def test_pause_holds_the_run_tells_the_page_and_resume_loses_nothing(nats_server):
    async def scenario():
        async with one_call(nats_server.url) as (caller, base, state, nc, seen):
            s = caller.session
            track = state["webrtc"][s].track
            await publish_tts(nc, s, run=2, pcm=tone(AGENT_HZ, 2.0, 16000), rate=16000)
            await until(lambda: track.voiced >= 20, what="the answer to start")
            await command(nc, s, contract.PausePlayback(session=s, run=2))
            await asyncio.sleep(0.1)
            held = track.voiced
            frames_at_hold = track.frames
            await asyncio.sleep(0.6)
            # Held: the track kept sending (silence), but none of the run.
            assert track.voiced == held and track.frames - frames_at_hold >= 15
            await command(nc, s, contract.ResumePlayback(session=s, run=2))
            await until(lambda: any(isinstance(e, contract.PlaybackProgress) and e.finished for e in seen["events"]), what="the end of the run")
            assert track.voiced == 100  # every frame of the 2 s played, none lost to the pause
            done = [e for e in seen["events"] if isinstance(e, contract.PlaybackProgress) and e.finished]
            assert [(e.run, e.played_ms) for e in done] == [(2, 2000)]
            # The page heard of both at once (it silences its jitter buffer on "pause"), in order.
            playback = [n for n in caller.notices if n.get("type") in ("pause", "resume")]
            assert playback == [{"type": "pause", "run": 2}, {"type": "resume", "run": 2}]

    asyncio.run(scenario())


@pytest.mark.browser
def test_the_page_says_what_it_silenced_at_a_pause_and_the_gateway_plays_it_again(nats_server, tmp_path):
    """Chromium on the gateway's page: at a pause it silences what its jitter
    buffer still holds and says how much (``paused``); the gateway takes that
    much back and plays it again on resume. (How exactly the caller then hears
    the answer again is measured by bench/resume_error.py, BENCHMARKS 6: a
    page's playout under load conceals and stretches too much for a test.)"""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
    import browser

    if browser.executable() is None:
        pytest.skip("chromium is not installed")
    mic = browser.write_wav(tmp_path / "quiet.wav", np.zeros(48000 * 20, np.int16))

    async def scenario():
        async with gateway(nats_server.url, demo="local") as (base, state, nc, seen):
            with browser.Chromium(mic, tmp_path / "chromium") as chromium:
                page = await chromium.page()
                try:
                    await page.goto(f"{base}/?processing=0")
                    await page.eval("document.getElementById('start').click()")
                    await page.wait_for("window.parley.connected && window.parley.session || window.parley.errors.length", timeout=30)
                    assert not await page.eval("window.parley.errors")
                    s = await page.eval("window.parley.session")
                    await until(lambda: state["webrtc"][s].track is not None and state["webrtc"][s].track.frames > 10, what="the track")
                    track = state["webrtc"][s].track
                    await publish_tts(nc, s, run=1, pcm=tone(AGENT_HZ, 2.0, 16000), rate=16000)
                    await until(lambda: track.voiced >= 40, what="the answer to play")
                    await command(nc, s, contract.PausePlayback(session=s, run=1))
                    await page.wait_for("window.parley.playback.some((p) => p.type === 'paused')", timeout=10)
                    await command(nc, s, contract.ResumePlayback(session=s, run=1))
                    await until(lambda: any(isinstance(e, contract.PlaybackProgress) and e.finished for e in seen["events"]), what="the end of the answer")
                    playback = await page.eval("window.parley.playback")
                finally:
                    await page.close()
            return playback, dict(state["stats"]), track.voiced

    playback, stats, voiced = asyncio.run(scenario())
    answers = [p for p in playback if p["type"] == "paused"]
    assert len(answers) == 1 and 30 <= answers[0]["unplayed_ms"] <= 500, playback  # Chromium's jitter buffer and playout, ~60-150 ms
    assert stats.get("playback_rewinds") == 1 and stats.get("playback_rewound_ms") == answers[0]["unplayed_ms"], stats
    # The 2 s answer left whole, plus again what the page had silenced (a frame of padding at most).
    again = answers[0]["unplayed_ms"] // 20
    assert 100 + again <= voiced <= 100 + again + 2, (voiced, answers)


