"""The Twilio transport on a real nats-server, driven by the Twilio caller.

The gateway app runs under uvicorn in a thread; the test plays the rest of
Parley on the bus (an ASR worker answering claims, the orchestrator and TTS
publishing audio and playback commands) and Twilio's side with
``parley.callers.twilio``. No models: tones stand in for speech, and their
frequency tells which chunk the caller heard.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import http.server
import json
import secrets
import socket
import threading
import time
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs

import httpx
import numpy as np
import pytest
import uvicorn

from parley import bus, contract, subjects
from parley.audio import pcm16_to_ulaw, ulaw_to_pcm16
from parley.contract import Dtmf, EndSession, FlushPlayback, PausePlayback, PlaybackProgress, ResumePlayback, SessionEnded, SessionStarted
from parley.callers.twilio import TwilioCaller
from parley.natsd import free_port
from parley_gateway import twilio_rest
from parley_gateway.app import create_app
from parley_gateway.settings import Settings
from test_webrtc_gateway import announce


AUTH_TOKEN = "test-auth-token-0123456789"
ACCOUNT = "AC" + "1" * 32


class Gateway:
    """The real gateway app, served by uvicorn in a thread of its own."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.app = create_app(settings)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=settings.http_port, log_config=None, lifespan="on", ws_max_size=1 << 20))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "Gateway":
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.settings.http_port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.settings.http_port}/twilio/media"

    @property
    def stats(self) -> dict:
        return self.app.state.parley["stats"]


def marked_caller(ws: str, params: dict, **options) -> TwilioCaller:
    """A Twilio caller whose customParameters carry its own unique
    ``test_call`` (its CallSid), by which ``Agent.session_of`` finds its session."""
    caller = TwilioCaller(ws, params, **options)
    caller.custom_parameters["test_call"] = caller.call_sid
    return caller


class TwilioApi:
    """A local HTTP server speaking the one Twilio REST call the gateway makes."""

    def __init__(self, statuses: list[int] | None = None):
        self.requests: list[dict] = []
        self.statuses = list(statuses or [])
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                api.requests.append({"at": time.monotonic(), "path": self.path, "form": parse_qs(body), "auth": self.headers.get("Authorization")})
                status = api.statuses.pop(0) if api.statuses else 200
                out = json.dumps({"sid": self.path.rsplit("/", 1)[-1][:-5], "status": "completed"} if status == 200 else {"code": 20003, "message": "nope"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def gateway(nats_server):
    # No auth token: only in the insecure development mode (the secure one is below).
    # A mark after every frame: these tests check the marks frame by frame (the default is coarser).
    with Gateway(Settings(nats_url=nats_server.url, http_port=free_port(), public_host="gw.example.com", twilio_insecure=True, twilio_mark_ms=20)) as gw:
        yield gw


@pytest.fixture(scope="module")
def twilio_api():
    api = TwilioApi()
    yield api
    api.close()


@pytest.fixture(scope="module")
def secure_gateway(nats_server, twilio_api):
    """TWILIO_AUTH_TOKEN set: signatures and stream tokens are enforced."""
    port = free_port()
    settings = Settings(
        nats_url=nats_server.url,
        http_port=port,
        public_host=f"127.0.0.1:{port}",
        twilio_account_sid=ACCOUNT,
        twilio_auth_token=AUTH_TOKEN,
        twilio_api_base=twilio_api.base,
    )
    with Gateway(settings) as gw:
        yield gw


class Agent:
    """The rest of Parley, as the gateway sees it on the bus."""

    def __init__(self, url: str):
        self.url = url
        self.events: list[tuple[float, contract.Event]] = []
        self.audio_in: dict[str, bytearray] = {}
        self.controls: list[str] = []
        self.native: list[str] = []

    async def __aenter__(self) -> "Agent":
        self.nc = await bus.connect(self.url)

        async def on_claim(msg):
            claim = contract.decode(msg.data, contract.AsrClaim)
            await msg.respond(contract.encode(contract.AsrClaimed(session=claim.session, worker="test")))

        async def on_alive(msg):  # the "test" worker is alive: no re-claim by the call's watcher
            await msg.respond(b"")

        async def on_event(msg):
            self.events.append((time.monotonic(), contract.decode_event(msg.data)))

        async def on_audio(msg):
            self.audio_in.setdefault(subjects.session_of(msg.subject), bytearray()).extend(msg.data)

        async def on_control(msg):
            self.controls.append(subjects.session_of(msg.subject))

        async def on_native(msg):  # only for a worker that asked (AsrClaimed.native); this one never does
            self.native.append(msg.subject)

        self.subs = [
            await self.nc.subscribe(subjects.ASR_CLAIM, queue=subjects.ASR_GROUP, cb=on_claim),
            await self.nc.subscribe(subjects.asr_alive("test"), cb=on_alive),
            await self.nc.subscribe(subjects.EVENTS_ALL, cb=on_event),
            await self.nc.subscribe(f"{subjects.PREFIX}.audio.in.*", cb=on_audio),
            await self.nc.subscribe(subjects.CONTROL_ALL, cb=on_control),
            await self.nc.subscribe(f"{subjects.PREFIX}.audio.native.*", cb=on_native),
        ]
        await self.nc.flush()  # the server has the subscriptions before any call starts
        return self

    async def __aexit__(self, *exc) -> None:
        await self.nc.drain()

    def of(self, kind, session: str | None = None) -> list[tuple[float, contract.Event]]:
        return [(t, e) for t, e in self.events if isinstance(e, kind) and (session is None or e.session == session)]

    async def wait(self, predicate, timeout: float = 10.0, what: str = "event"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, e in self.events:
                if predicate(e):
                    return t, e
            await asyncio.sleep(0.01)
        raise TimeoutError(f"no {what} in {timeout}s; got {[type(e).__name__ for _, e in self.events[-10:]]}")

    async def session_of(self, caller: TwilioCaller, timeout: float = 10.0) -> str:
        """The session of the caller whose customParameters carry a unique ``test_call``."""
        marker = caller.custom_parameters["test_call"]
        _, e = await self.wait(lambda e: isinstance(e, SessionStarted) and e.params.get("test_call") == marker, timeout, "SessionStarted")
        return e.session

    async def speak(self, session: str, run: int, chunks: list[np.ndarray], rate: int = 22050, first_chunk: int = 0) -> None:
        """Publish TTS audio the way the TTS service does: 20 ms pieces, then an empty last
        (after the reducer step that asked for it, as the orchestrator does)."""
        await announce(self.nc, session, run, range(first_chunk, first_chunk + len(chunks)))
        seq = 0
        piece = rate // 50
        for i, pcm in enumerate(chunks, start=first_chunk):
            data = pcm.astype("<i2").tobytes()
            for k in range(0, len(data), piece * 2):
                await self.nc.publish(subjects.tts_audio(session, run), data[k : k + piece * 2], headers=bus.audio_headers(seq, rate, i, False))
                seq += 1
            await self.nc.publish(subjects.tts_audio(session, run), b"", headers=bus.audio_headers(seq, rate, i, True))
            seq += 1
        await self.nc.flush()

    async def command(self, cmd: contract.Command) -> float:
        """Publish a playback command; returns when it was published."""
        at = time.monotonic()
        await self.nc.publish(subjects.playback(cmd.session), contract.encode(cmd))
        await self.nc.flush()
        return at

    def progress(self, session: str, run: int) -> list[tuple[int, bool]]:
        return [(e.chunk, e.finished) for _, e in self.of(PlaybackProgress, session) if e.run == run]


def tone(freq: float, seconds: float, rate: int, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * amp * 32767).astype(np.int16)


def dominant(pcm16: bytes, rate: int) -> float:
    x = np.frombuffer(pcm16, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


def run(coro):
    return asyncio.run(coro)


def signed(url: str, params: dict[str, str], token: str = AUTH_TOKEN) -> str:
    """X-Twilio-Signature computed here, independently of the gateway's code."""
    data = url + "".join(k + params[k] for k in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def twiml_stream(xml: str) -> tuple[str, dict[str, str]]:
    stream = ET.fromstring(xml).find("./Connect/Stream")
    return stream.get("url"), {p.get("name"): p.get("value") for p in stream.findall("Parameter")}


# --------------------------------------------------------------------- webhook


def test_webhook_answers_connect_stream_with_the_session_parameters(gateway):
    form = {"CallSid": "CA" + "a" * 32, "From": "+15550001111", "To": "+15550002222", "AccountSid": ACCOUNT}
    r = httpx.post(f"{gateway.http}/twilio/voice?greeting=Hello%20there&reprompt_after=7", data=form)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/xml")
    url, params = twiml_stream(r.text)
    assert url == "wss://gw.example.com/twilio/media"
    assert params == {"greeting": "Hello there", "reprompt_after": "7", "caller": "+15550001111"}  # no token: no auth token set


def test_webhook_checks_the_signature_when_an_auth_token_is_set(secure_gateway):
    gw = secure_gateway
    url = f"https://{gw.settings.public_host}/twilio/voice?greeting=Hi"
    form = {"CallSid": "CA" + "b" * 32, "From": "+15550001111", "AccountSid": ACCOUNT}
    before = gw.stats.get("twilio_bad_signature", 0)
    assert httpx.post(f"{gw.http}/twilio/voice?greeting=Hi", data=form).status_code == 403  # unsigned
    bad = signed(url, {**form, "From": "+19999999999"})
    assert httpx.post(f"{gw.http}/twilio/voice?greeting=Hi", data=form, headers={"X-Twilio-Signature": bad}).status_code == 403
    other_key = signed(url, form, token="not-the-token")
    assert httpx.post(f"{gw.http}/twilio/voice?greeting=Hi", data=form, headers={"X-Twilio-Signature": other_key}).status_code == 403
    assert gw.stats["twilio_bad_signature"] == before + 3
    r = httpx.post(f"{gw.http}/twilio/voice?greeting=Hi", data=form, headers={"X-Twilio-Signature": signed(url, form)})
    assert r.status_code == 200
    stream_url, params = twiml_stream(r.text)
    assert stream_url == f"wss://{gw.settings.public_host}/twilio/media"
    assert params["greeting"] == "Hi" and params["caller"] == "+15550001111" and params["token"]


# --------------------------------------------------------------------- a call


def test_a_call_audio_both_ways_marks_dtmf_and_stop(gateway, nats_server):
    async def scenario():
        async with Agent(nats_server.url) as agent:
            caller = marked_caller(gateway.ws, {"test_call": "", "caller": "+15550003333", "greeting": "hi"})
            async with caller:
                session = await agent.session_of(caller)
                _, started = agent.of(SessionStarted, session)[0]
                # Inbound: a 440 Hz tone at 8 kHz μ-law arrives as 16 kHz PCM16.
                first, last = await caller.say(tone(440, 0.6, 8000))
                await asyncio.sleep(0.3)
                sent_ms = caller.sent_ms
                await asyncio.sleep(0.1)  # what is in flight arrives
                inbound = bytes(agent.audio_in[session])[: sent_ms * 32]
                # Outbound: two chunks at Piper's rate, different tones.
                await agent.speak(session, 1, [tone(600, 0.4, 22050), tone(1000, 0.4, 22050)])
                await agent.wait(lambda e: isinstance(e, PlaybackProgress) and e.session == session and e.chunk == 1 and e.finished, 10, "chunk 1 heard")
                await caller.dtmf("7")
                await agent.wait(lambda e: isinstance(e, Dtmf) and e.session == session, 5, "Dtmf")
            _, ended = await agent.wait(lambda e: isinstance(e, SessionEnded) and e.session == session, 5, "SessionEnded")
            await asyncio.sleep(0.1)
            return caller, agent, session, started, inbound, sent_ms, ended

    caller, agent, session, started, inbound, sent_ms, ended = run(scenario())
    assert started.transport == "twilio" and started.caller == "+15550003333"
    assert started.params == {"test_call": caller.call_sid, "caller": "+15550003333", "greeting": "hi"}
    # Inbound audio: 16 kHz, the tone where the caller spoke it.
    assert sent_ms - len(inbound) / 32 <= 5, (len(inbound) / 32, sent_ms)  # bytes/32 = ms at 16 kHz; the filter holds back ~1 ms
    assert abs(dominant(inbound, 16000) - 440) < 5
    assert agent.native == []  # the worker asked for PCM only: no μ-law copy is published
    # Outbound: a mark after every frame (PARLEY_TWILIO_MARK_MS=20), named
    # run.chunk.seq.generation, each echoed once its audio has played.
    names = [n for _, n in caller.rec.marks]
    fields = [tuple(int(x) for x in n.split(".")[:4]) for n in names]
    assert {(run, gen) for run, _, _, gen in fields} == {(1, 0)}
    assert [seq for _, _, seq, _ in fields] == list(range(1, len(fields) + 1))
    assert len(names) == len(caller.rec.media) == 40  # 0.8 s of 20 ms frames
    # The last mark of chunk 0 follows exactly its audio: 0.4 s at 8 kHz, nothing of chunk 1.
    end0 = max(i for i, (_, chunk, _, _) in enumerate(fields) if chunk == 0)
    assert [i for i, n in enumerate(names) if n.endswith(".end")] == [end0, len(names) - 1]
    before_end0 = sum(len(m) for t, m in caller.rec.media if t <= caller.rec.marks[end0][0])
    assert before_end0 == 3200, before_end0
    assert [(e.name, e.cleared) for e in caller.rec.echoes] == [(n, False) for n in names]
    mark_at = {"1.0.0": caller.rec.marks[end0][0], "1.1.0": caller.rec.marks[-1][0]}
    # Chunk 1 starts leaving before chunk 0 is heard (Twilio holds a little).
    progress = agent.progress(session, 1)
    assert sorted(progress) == [(0, False), (0, True), (1, False), (1, True)]
    assert progress.index((0, False)) < progress.index((0, True)) < progress.index((1, True))
    assert progress.index((1, False)) < progress.index((1, True))
    echoed = {e.name: e.at for e in caller.rec.echoes}
    finished_at = {e.chunk: t for t, e in agent.of(PlaybackProgress, session) if e.finished}
    assert finished_at[0] >= echoed[names[end0]] and finished_at[1] >= echoed[names[-1]]
    # What the caller heard: 600 Hz, then 1000 Hz.
    heard = caller.played_audio()
    assert abs(dominant(heard[: 3000 * 2], 8000) - 600) < 10
    assert abs(dominant(heard[3400 * 2 : 6200 * 2], 8000) - 1000) < 10
    assert ended.reason == "caller hung up" and session in agent.controls
    assert caller.rec.unexpected == []


def test_barge_in_clears_and_a_mark_echoed_by_the_clear_is_not_heard(gateway, nats_server):
    async def scenario():
        async with Agent(nats_server.url) as agent:
            # A deep jitter buffer: the first chunk's mark is still queued at the
            # caller when the flush comes, so the clear echoes it.
            caller = marked_caller(gateway.ws, {}, playout_delay=1.0)
            async with caller:
                session = await agent.session_of(caller)
                await agent.speak(session, 1, [tone(600, 0.2, 22050), tone(1000, 3.0, 22050)])
                await caller.wait_until(lambda: caller.rec.marks, 5, "mark of chunk 0")
                await asyncio.sleep(0.2)
                flushed_at = await agent.command(FlushPlayback(session=session, run=1))
                cleared_at = await caller.wait_clear(timeout=5)
                # TTS audio of the flushed run that arrives late never leaves the gateway.
                stale_before = gateway.stats.get("frames_dropped_stale", 0)
                await agent.speak(session, 1, [tone(1000, 0.5, 22050)], first_chunk=2)
                await asyncio.sleep(0.5)
                stale_after = gateway.stats.get("frames_dropped_stale", 0)
                # The next run plays, and its mark counts.
                resumed_at = time.monotonic()
                await agent.speak(session, 2, [tone(800, 0.3, 22050)])
                await agent.wait(lambda e: isinstance(e, PlaybackProgress) and e.session == session and e.run == 2 and e.finished, 10, "run 2 heard")
            return caller, agent, session, flushed_at, cleared_at, resumed_at, stale_before, stale_after

    caller, agent, session, flushed_at, cleared_at, resumed_at, stale_before, stale_after = run(scenario())
    print(f"\n[twilio] FlushPlayback published -> clear at the caller: {(cleared_at - flushed_at) * 1000:.1f} ms")
    assert len(caller.rec.clears) == 1
    # Every mark of run 1 was still queued behind the deep buffer: the clear echoed them all.
    run1 = [e for e in caller.rec.echoes if e.name.startswith("1.")]
    run2 = [e for e in caller.rec.echoes if e.name.startswith("2.")]
    assert run1 and all(e.cleared for e in run1) and all(e.at >= cleared_at for e in run1)
    assert run2 and not any(e.cleared for e in run2)
    assert {e.name.split(".")[3] for e in run2} == {"1"}  # the generation after the clear
    # Nothing of run 1 counted as heard: its echoed marks came from the clear.
    assert all(not finished for _, finished in agent.progress(session, 1))
    assert agent.progress(session, 2) == [(0, False), (0, True)]
    # No frame after the clear until the next run, and nothing heard after the clear.
    assert not [t for t, _ in caller.rec.media if cleared_at < t < resumed_at]
    assert not [t for t, _ in caller.rec.played if cleared_at < t < resumed_at]
    assert stale_after > stale_before
    assert caller.rec.marks[-1][1].startswith("2.0.")
    assert gateway.stats["twilio_marks_cleared"] >= 1


# --------------------------------------------------------------------- pause and resume


def noise(seconds: float, seed: int, rate: int = 8000) -> np.ndarray:
    """Loud noise: every 16 samples of it, through μ-law, are found once in it."""
    return (np.random.default_rng(seed).uniform(-0.6, 0.6, int(seconds * rate)) * 32767).astype(np.int16)


def locate(heard: list[tuple[float, bytes]], source: np.ndarray) -> list[tuple[float, int, int]]:
    """(play time, offset in source, samples) of each piece the caller heard."""
    expected = np.frombuffer(ulaw_to_pcm16(pcm16_to_ulaw(source.astype("<i2").tobytes())), dtype="<i2")
    index = {expected[i : i + 16].tobytes(): i for i in range(len(expected) - 15)}
    out = []
    for t, pcm in heard:
        x = np.frombuffer(pcm, dtype="<i2")
        if len(x) < 16:
            continue  # a sliver cut by a clear: too short to place
        at = index[x[:16].tobytes()]
        assert np.array_equal(x, expected[at : at + len(x)]), "heard audio that is not the source"
        out.append((t, at, len(x)))
    return out


def test_frames_between_marks_go_in_one_media_message_and_the_marks_stay_where_they_were(nats_server):
    """PARLEY_TWILIO_MARK_MS=60: the frames between two marks leave as one
    media message (Twilio takes any size), so a mark interval of audio costs
    two messages instead of four; the marks still follow exactly the audio
    they name, and the caller hears the same sound."""
    settings = Settings(nats_url=nats_server.url, http_port=free_port(), public_host="gw.example.com", twilio_insecure=True, twilio_mark_ms=60)

    async def scenario(gw):
        async with Agent(nats_server.url) as agent:
            caller = marked_caller(gw.ws, {})
            async with caller:
                session = await agent.session_of(caller)
                await agent.speak(session, 1, [tone(600, 0.4, 22050), tone(1000, 0.4, 22050)])
                await agent.wait(lambda e: isinstance(e, PlaybackProgress) and e.session == session and e.chunk == 1 and e.finished, 10, "chunk 1 heard")
            return caller

    with Gateway(settings) as gw:
        caller = run(scenario(gw))
    sizes = [len(m) for _, m in caller.rec.media]
    assert sum(sizes) == 6400 and max(sizes) == 480  # 0.8 s; never more than a mark interval in one message
    assert len(sizes) <= 40 // 2  # (one frame each before: 40)
    names = [n for _, n in caller.rec.marks]
    end0 = next(i for i, n in enumerate(names) if n.endswith(".end"))
    before_end0 = sum(len(m) for t, m in caller.rec.media if t <= caller.rec.marks[end0][0])
    assert before_end0 == 3200, before_end0  # chunk 0's end mark follows exactly its audio
    assert len(names) == 2 * 7  # per 0.4 s chunk: after frames 3, 6, ... 18 and its last (20)
    assert [(e.name, e.cleared) for e in caller.rec.echoes] == [(n, False) for n in names]
    heard = caller.played_audio()
    assert abs(dominant(heard[: 3000 * 2], 8000) - 600) < 10
    assert abs(dominant(heard[3400 * 2 : 6200 * 2], 8000) - 1000) < 10
    assert caller.rec.unexpected == []


def test_pause_clears_twilio_and_resume_replays_from_the_last_echoed_mark(gateway, nats_server):
    """A pause must not let Twilio's buffer play on (a deep one here: 0.3 s),
    and a resume must pick up where the caller's marks say playback stopped:
    nothing skipped, and nothing repeated from before the last echoed mark."""
    chunks = [noise(1.0, 1), noise(1.0, 2)]
    source = np.concatenate(chunks)

    async def scenario():
        async with Agent(nats_server.url) as agent:
            caller = marked_caller(gateway.ws, {}, playout_delay=0.3)
            async with caller:
                session = await agent.session_of(caller)
                await agent.speak(session, 1, chunks, rate=8000)
                await caller.wait_until(lambda: len(caller.played_audio()) >= 2 * 8000 * 0.5, 10, "half a second heard")
                await agent.command(PausePlayback(session=session, run=1))
                cleared_at = await caller.wait_clear(timeout=5)
                await asyncio.sleep(0.8)  # the pause: nothing may be heard
                resumed_at = await agent.command(ResumePlayback(session=session, run=1))
                await agent.wait(lambda e: isinstance(e, PlaybackProgress) and e.session == session and e.chunk == 1 and e.finished, 10, "chunk 1 heard")
            return caller, agent, session, cleared_at, resumed_at

    caller, agent, session, cleared_at, resumed_at = run(scenario())
    pieces = locate(caller.rec.played, source)
    before = [(t, at, n) for t, at, n in pieces if t < cleared_at]
    after = [(t, at, n) for t, at, n in pieces if t > resumed_at]
    assert len(caller.rec.clears) == 1
    # Silence from the clear to the resume: the pause was heard as a pause.
    assert caller.ear.last_heard_at() > resumed_at
    assert not [t for t, _ in caller.rec.played if cleared_at <= t < resumed_at]
    heard_to = max(at + n for _, at, n in before)  # where the sound stopped, in the source
    replay_from = after[0][1]
    # Nothing skipped: the replay starts at or before where the caller stopped hearing...
    assert replay_from <= heard_to
    # ...at a mark the caller echoed as played before the clear (a frame boundary
    # no later than the last such mark: an echo in flight during the clear counts
    # as cleared at the gateway, so it may be one or two marks earlier).
    played_marks = [e for e in caller.rec.echoes if not e.cleared and e.at <= cleared_at]
    assert replay_from % 160 == 0 and replay_from <= 160 * len(played_marks)
    # ...and from there on, everything once, in order, to the end.
    offsets = [at for _, at, _ in after]
    assert offsets == list(range(replay_from, len(source), 160)), offsets[:5]
    # Progress stayed truthful: the position reported at the pause was heard.
    paused = [e for _, e in agent.of(PlaybackProgress, session) if not e.finished and e.played_ms > 0]
    assert paused and paused[0].chunk == 0 and paused[0].played_ms * 8 <= heard_to
    assert [c for c, f in agent.progress(session, 1) if f] == [0, 1]
    print(
        f"\n[twilio] pause: clear {len(caller.rec.clears)}; heard to {heard_to / 8:.0f} ms of the answer, "
        f"replayed from {replay_from / 8:.0f} ms ({(heard_to - replay_from) / 8:.0f} ms heard twice); reported at the pause {paused[0].played_ms} ms"
    )
    assert gateway.stats["twilio_pause_clears"] >= 1 and gateway.stats["twilio_frames_replayed"] >= 1


def test_a_pause_then_a_flush_is_one_clear_and_silence(gateway, nats_server):
    async def scenario():
        async with Agent(nats_server.url) as agent:
            caller = marked_caller(gateway.ws, {}, playout_delay=0.3)
            async with caller:
                session = await agent.session_of(caller)
                await agent.speak(session, 1, [tone(600, 3.0, 8000)], rate=8000)
                await caller.wait_audio(timeout=5)
                await asyncio.sleep(0.3)
                await agent.command(PausePlayback(session=session, run=1))
                cleared_at = await caller.wait_clear(timeout=5)
                await asyncio.sleep(0.3)
                await agent.command(FlushPlayback(session=session, run=1))
                await asyncio.sleep(0.5)
                second_at = time.monotonic()
                await agent.speak(session, 2, [tone(800, 0.3, 8000)], rate=8000)
                await agent.wait(lambda e: isinstance(e, PlaybackProgress) and e.session == session and e.run == 2 and e.finished, 10, "run 2 heard")
            return caller, cleared_at, second_at

    caller, cleared_at, second_at = run(scenario())
    assert len(caller.rec.clears) == 1  # the flush found nothing left at Twilio
    assert not [t for t, _ in caller.rec.played if cleared_at <= t < second_at]
    assert abs(dominant(caller.played_audio(after=second_at), 8000) - 800) < 10


def tiny_buffer_socket(url: str) -> socket.socket:
    """A connected TCP socket with a receive buffer of a few kB."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    host, port = url.split("//")[1].split("/")[0].split(":")
    sock.connect((host, int(port)))
    sock.setblocking(False)
    return sock


def shrink_send_buffers(server: uvicorn.Server) -> None:
    """Small kernel send buffers on the gateway's side of every connection
    (loopback otherwise buffers megabytes): a peer that stops reading backs
    the gateway up within seconds instead of minutes."""
    for proto in list(server.server_state.connections):
        sock = proto.transport.get_extra_info("socket") if getattr(proto, "transport", None) else None
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)


def test_twilio_that_stops_reading_is_closed_with_a_reason_and_the_call_ends(gateway, nats_server, monkeypatch):
    from parley_gateway import twilio_media

    monkeypatch.setattr(twilio_media, "BACKLOG_FRAMES", 25)

    async def scenario():
        async with Agent(nats_server.url) as agent:
            caller = marked_caller(gateway.ws, {}, connect_options={"sock": tiny_buffer_socket(gateway.ws), "max_queue": 1})
            await caller.connect()
            session = await agent.session_of(caller)
            shrink_send_buffers(gateway.server)
            before = gateway.stats.get("twilio_error_backlog", 0)
            await agent.speak(session, 1, [tone(500, 30.0, 8000)], rate=8000)
            await caller.wait_audio(timeout=5)
            receiving = caller._tasks[0]
            receiving.cancel()  # Twilio stops reading; its microphone goes on
            _, ended = await agent.wait(lambda e: isinstance(e, SessionEnded) and e.session == session, 30, "SessionEnded")
            counted = gateway.stats.get("twilio_error_backlog", 0) - before
            caller.drop()  # a peer this stuck is gone: reset the connection
            return ended, counted, caller

    ended, counted, caller = run(scenario())
    assert counted == 1
    assert ended.reason.startswith("error: Twilio is not reading"), ended.reason


# --------------------------------------------------------------------- tokens and hang-up


def answer(gw: Gateway, call_sid: str, query: str = "") -> dict[str, str]:
    """Play Twilio's webhook request; returns the stream's parameters."""
    url = f"https://{gw.settings.public_host}/twilio/voice{query}"
    form = {"CallSid": call_sid, "From": "+15550004444", "AccountSid": ACCOUNT}
    r = httpx.post(f"{gw.http}/twilio/voice{query}", data=form, headers={"X-Twilio-Signature": signed(url, form)})
    assert r.status_code == 200, r.text
    return twiml_stream(r.text)[1]


def test_stream_tokens_are_required_bound_to_the_call_and_single_use(secure_gateway, nats_server):
    gw = secure_gateway

    async def attempt(agent: Agent, call_sid: str, params: dict[str, str]) -> tuple[TwilioCaller, bool]:
        caller = TwilioCaller(gw.ws, {**params, "test_call": secrets.token_hex(8)}, call_sid=call_sid)
        await caller.connect()
        try:
            await agent.session_of(caller, timeout=1.5)
            ok = True
        except TimeoutError:
            ok = False
        await asyncio.wait_for(caller.closed.wait(), 5) if not ok else await caller.hang_up()
        return caller, ok

    async def scenario():
        async with Agent(nats_server.url) as agent:
            refused_before = gw.stats.get("twilio_token_refused", 0)
            a, b = "CA" + "c" * 32, "CA" + "d" * 32
            params_a = answer(gw, a)
            no_token, ok0 = await attempt(agent, a, {k: v for k, v in params_a.items() if k != "token"})
            other_call, ok1 = await attempt(agent, b, params_a)
            first, ok2 = await attempt(agent, a, params_a)
            again, ok3 = await attempt(agent, a, params_a)
            return (ok0, ok1, ok2, ok3), (no_token, other_call, again), gw.stats["twilio_token_refused"] - refused_before

    oks, refused, count = run(scenario())
    assert oks == (False, False, True, False)
    assert all(c.close_code == 1008 for c in refused), [c.close_code for c in refused]
    assert count == 3


def test_the_agent_hanging_up_completes_the_call_through_the_rest_api(secure_gateway, nats_server, twilio_api):
    gw = secure_gateway

    async def scenario():
        async with Agent(nats_server.url) as agent:
            call_sid = "CA" + "e" * 32
            params = answer(gw, call_sid)
            caller = TwilioCaller(gw.ws, {**params, "test_call": call_sid}, call_sid=call_sid)
            async with caller:
                session = await agent.session_of(caller)
                _, started = agent.of(SessionStarted, session)[0]
                await agent.command(EndSession(session=session, reason="goodbye said"))
                await asyncio.wait_for(caller.closed.wait(), 10)
                closed_at = time.monotonic()
            for _ in range(100):  # the release reaches the bus a moment later (more under load)
                if session in agent.controls:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            return caller, agent, session, started, closed_at

    caller, agent, session, started, closed_at = run(scenario())
    assert "token" not in started.params and started.caller == "+15550004444"
    (req,) = [r for r in twilio_api.requests if caller.call_sid in r["path"]]
    assert req["path"] == f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{caller.call_sid}.json"
    assert req["form"] == {"Status": ["completed"]}
    assert req["auth"] == "Basic " + base64.b64encode(f"{ACCOUNT}:{AUTH_TOKEN}".encode()).decode()
    assert req["at"] <= closed_at and caller.close_code == 1000
    # The agent ended it: the gateway releases the session but does not report a hang-up.
    assert session in agent.controls
    assert not agent.of(SessionEnded, session)


# --------------------------------------------------------------------- bad input


async def _bad(gw: Gateway, agent: Agent, send, handshake: bool = True) -> tuple[TwilioCaller, str | None]:
    caller = marked_caller(gw.ws, {}, handshake=handshake)
    await caller.connect()
    session = await agent.session_of(caller) if handshake else None
    await send(caller)
    await asyncio.wait_for(caller.closed.wait(), 5)
    return caller, session


def test_bad_input_tears_down_only_its_own_session(gateway, nats_server):
    media = lambda c, payload: json.dumps({"event": "media", "sequenceNumber": "9", "streamSid": c.stream_sid, "media": {"track": "inbound", "chunk": "9", "timestamp": "160", "payload": payload}})  # noqa: E731
    cases = {
        "malformed_json": (True, lambda c: c.send_raw('{"event": "media", "media": ')),
        "unknown_event": (True, lambda c: c.send_raw(json.dumps({"event": "hello", "streamSid": c.stream_sid}))),
        "bad_base64": (True, lambda c: c.send_raw(media(c, "not*base64!"))),
        "oversized": (True, lambda c: c.send_raw(media(c, "A" * 80_000))),
        "invalid_message": (True, lambda c: c.send_raw(b"\x00\x01binary")),
        "out_of_order": (False, lambda c: c.send_raw(media(c, "//8="))),  # media before start
    }

    async def scenario():
        async with Agent(nats_server.url) as agent:
            healthy = marked_caller(gateway.ws, {})
            async with healthy:
                session = await agent.session_of(healthy)
                await agent.speak(session, 1, [tone(500, 6.0, 22050)])
                first_played = await healthy.wait_audio(timeout=5)
                results = {}
                for kind, (handshake, send) in cases.items():
                    before = gateway.stats.get(f"twilio_error_{kind}", 0)
                    caller, bad_session = await _bad(gateway, agent, send, handshake)
                    ended = None
                    if bad_session:
                        _, ended = await agent.wait(lambda e: isinstance(e, SessionEnded) and e.session == bad_session, 5, "SessionEnded")
                    results[kind] = (caller.close_code, gateway.stats.get(f"twilio_error_{kind}", 0) - before, ended)
                # A socket dropped mid-answer.
                dropping = marked_caller(gateway.ws, {})
                await dropping.connect()
                dropped_session = await agent.session_of(dropping)
                await agent.speak(dropped_session, 1, [tone(700, 3.0, 22050)])
                await dropping.wait_audio(timeout=5)
                dropping.drop()
                _, dropped_end = await agent.wait(lambda e: isinstance(e, SessionEnded) and e.session == dropped_session, 5, "SessionEnded")
                # The healthy call played on through all of it, and still works.
                healthy_ended = agent.of(SessionEnded, session)
                await asyncio.sleep(0.5)
                played_ms = len(healthy.played_audio()) // 16  # 16 bytes per ms at 8 kHz
                expected_ms = (time.monotonic() - first_played) * 1000
                await agent.command(FlushPlayback(session=session, run=1))
                await healthy.wait_clear(timeout=5)
                await agent.speak(session, 2, [tone(800, 0.3, 22050)])
                await agent.wait(lambda e: isinstance(e, PlaybackProgress) and e.session == session and e.run == 2 and e.finished, 10, "run 2 heard")
            return results, dropped_end, healthy, healthy_ended, played_ms, expected_ms

    results, dropped_end, healthy, healthy_ended, played_ms, expected_ms = run(scenario())
    for kind, (code, counted, ended) in results.items():
        assert code == (1009 if kind == "oversized" else 1008), (kind, code)
        assert counted == 1, kind
        if ended is not None:
            assert ended.reason == f"protocol error: {kind}", (kind, ended.reason)
    assert dropped_end.reason == "twilio stream dropped"
    assert healthy_ended == []
    # It kept playing through all of it (gaps are reported, not asserted: a
    # loaded machine may stall any process for a moment).
    print(f"\n[twilio] healthy call during the bad input: played {played_ms} of {expected_ms:.0f} ms, {len(healthy.rec.stalls)} stalls")
    assert played_ms >= expected_ms / 2, (played_ms, expected_ms)
    assert healthy.rec.unexpected == []
    assert healthy.rec.echoes[-1].name.startswith("2.0.") and not healthy.rec.echoes[-1].cleared


# --------------------------------------------------------------------- REST


def test_hangup_request_is_twilios_call_update():
    url, form = twilio_rest.hangup_request("https://api.twilio.com/", ACCOUNT, "CA" + "f" * 32)
    assert url == f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Calls/CA{'f' * 32}.json"
    assert form == {"Status": "completed"}
    for bad in ("", "CA/../x", "CA?x=1"):
        with pytest.raises(ValueError):
            twilio_rest.hangup_request("https://api.twilio.com", ACCOUNT, bad)


def test_hang_up_retries_a_server_error_and_gives_up_on_a_refusal():
    api = TwilioApi(statuses=[503, 200, 401])
    try:
        ok = run(twilio_rest.hang_up(api.base, ACCOUNT, AUTH_TOKEN, "CA" + "1" * 32))
        refused = run(twilio_rest.hang_up(api.base, ACCOUNT, AUTH_TOKEN, "CA" + "2" * 32))
    finally:
        api.close()
    assert ok and not refused
    assert len(api.requests) == 3  # 503 retried once; 401 not retried
    unreachable = run(twilio_rest.hang_up(f"http://127.0.0.1:{free_port()}", ACCOUNT, AUTH_TOKEN, "CA" + "3" * 32, attempts=1))
    assert unreachable is False
