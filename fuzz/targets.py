"""Coverage-guided fuzz targets (atheris) for every parser that takes outside input.

    uv run python fuzz/targets.py TARGET [libFuzzer flags, e.g. -runs=100000]
    uv run python fuzz/targets.py --list

Each target takes arbitrary bytes and feeds them to the code a stranger (or a
broken service) can reach, then checks what must hold whatever the input:

* ``twilio``: a Twilio media stream, one JSON message per line, through the
  gateway's real ``TwilioSocket`` and ``Call`` (``twilio_protocol.parse``,
  start/media/mark/dtmf/stop handling, mark echoes);
* ``pcm``: ``/ws/pcm`` frames, binary and text, through the real ``Call``;
* ``sdp``: the ``/webrtc/offer`` body (JSON, then aiortc's SDP parser);
* ``webhook``: a Twilio webhook (form or JSON body, ``bodySHA256``, the
  signature check) and its query string as session parameters;
* ``bus``: every bus message type: events (decoded, then reduced by the
  reducer from a live state), commands, steps, the ASR claim and progress
  messages, TTS audio headers, and what the gateway does with each of them;
* ``params``: session parameters and the deployment's allow-list spec;
* ``asr``: the ASR worker's bus input (claims, audio frames with their
  headers, session control, liveness probes) through the real ``Worker``
  (fixed mode, with Silero VAD), a victim session claimed beside;
* ``tts``: the TTS worker's bus input (Synthesize requests, cancels, session
  control) through the real ``Worker`` (the canned voice), a victim run held;
* ``intake``: what the orchestrator does with a stored event (subject and
  bytes): the runtime's producer check and decoding, then the reducer.

Allowed outcomes are the documented errors (``ProtocolError``, ``OfferError``,
``ParamError``, msgspec's ``DecodeError``/``ValidationError``...). Anything
else raised is a crash; an input that runs longer than libFuzzer's
``-timeout`` is a hang. **Cross-session effects**: the gateway targets run
two calls on one in-process bus (``LocalBus``, which routes by subject as
NATS does): the fuzzed one and a victim. Any message the fuzzed session
causes on another session's subject, or any change in the victim's state,
fails the target.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parent.parent
for extra in ("services/media-gateway", "services/orchestrator", "services/asr", "services/tts"):
    sys.path.insert(0, str(ROOT / extra))

with atheris.instrument_imports(include=["parley", "parley_gateway", "parley_orchestrator", "parley_asr", "parley_tts"]):
    import msgspec

    from parley import bus, contract, natsauth, session_params, subjects, telemetry
    from parley.audio.playout import Playout
    from parley_gateway import auth, call, twilio_media, webrtc, ws_pcm
    from parley_gateway import twilio_protocol as tp
    from parley_gateway.settings import Settings
    from parley_orchestrator import reducer
    from parley_orchestrator import runtime as orchestrator_runtime
    from parley_asr import worker as asr_worker
    from parley_asr.settings import Settings as AsrSettings
    from parley_tts import worker as tts_worker
    from parley_tts.settings import Settings as TtsSettings


# ------------------------------------------------------------------ the bus


class Msg:
    def __init__(self, subject: str, data: bytes, headers: dict | None = None, reply: str = ""):
        self.subject, self.data, self.headers, self.reply = subject, data, headers, reply

    async def respond(self, data: bytes) -> None:
        pass


class Sub:
    def __init__(self, bus_: "LocalBus", subject: str, cb):
        self.bus, self.subject, self.cb = bus_, subject, cb

    async def unsubscribe(self) -> None:
        if self in self.bus.subs:
            self.bus.subs.remove(self)


class LocalBus:
    """Just enough of a nats-py client: subjects routed to subscribers as the
    server would, requests answered as JetStream and ASR would, and every
    publish recorded (subject, data)."""

    def __init__(self):
        self.subs: list[Sub] = []
        self.published: list[tuple[str, bytes]] = []
        self.is_connected = True

    async def subscribe(self, subject: str, cb=None, **_):
        sub = Sub(self, subject, cb)
        self.subs.append(sub)
        return sub

    async def publish(self, subject: str, data: bytes = b"", headers: dict | None = None, reply: str = "") -> None:
        self.published.append((subject, data))
        for sub in list(self.subs):
            if natsauth.matches(sub.subject, subject):
                await sub.cb(Msg(subject, data, headers))

    async def request(self, subject: str, data: bytes = b"", timeout: float = 1.0, headers: dict | None = None):
        if subject == subjects.ASR_CLAIM:
            claim = contract.decode(data, contract.AsrClaim)
            return Msg("", contract.encode(contract.AsrClaimed(session=claim.session, worker="w1")))
        await self.publish(subject, data, headers)
        return Msg("", b'{"stream": "PARLEY_EVENTS", "seq": 1}')

    async def flush(self, timeout: float = 1.0) -> None:
        pass


class Quiet:
    """A transport that records what it was told (the victim's, and the /ws/pcm one's)."""

    kind, rate, reports_playback = "pcm", 16000, False

    def __init__(self):
        self.told: list = []

    async def send_notice(self, notice):
        self.told.append(notice)

    def on_pause(self, run):
        self.told.append(("pause", run))

    def on_resume(self, run):
        self.told.append(("resume", run))

    async def on_flush(self, run):
        self.told.append(("flush", run))

    async def close(self, reason):
        self.told.append(("close", reason))

    def fail(self, reason, kind):
        self.told.append(("fail", reason))


VICTIM = "pcm-victim0000000001"


def _board(nc: LocalBus) -> call.Switchboard:
    return call.Switchboard(nc, {}, telemetry.current())


async def _started(nc: LocalBus, session: str) -> tuple[call.Call, Quiet]:
    t = Quiet()
    c = call.Call(_board(nc), t, session=session)
    await c.start(params={})
    return c, t


def _victim_state(c: call.Call, t: Quiet) -> tuple:
    return (c.closed, c.playout.buffered_ms, c.playout.current_run, len(t.told), c.seq, dict(c.announced), len(c.unannounced))


@contextlib.asynccontextmanager
async def _beside_a_victim():
    """A bus with a victim call on it, for the fuzzed one to share: the
    victim must come out of the block as it went in."""
    nc = LocalBus()
    victim, vt = await _started(nc, VICTIM)
    victim.tasks.cancel()
    before = _victim_state(victim, vt)
    yield nc
    if _victim_state(victim, vt) != before:
        raise AssertionError("the victim call changed")


def _own_subjects_only(nc: LocalBus, since: int, own: set[str]) -> None:
    """Every per-session subject published since ``since`` belongs to ``own``."""
    for subject, _ in nc.published[since:]:
        parts = subject.split(".")
        if parts[0] != subjects.PREFIX or len(parts) < 3:
            continue
        try:
            session = subjects.session_of(subject)
        except ValueError:
            continue
        if subject in (subjects.ASR_CLAIM,) or parts[1] in ("asr", "orchestrator", "tts", "llm", "beat"):
            continue
        if session not in own:
            raise AssertionError(f"cross-session effect: {subject} published for a fuzzed session {sorted(own)}")


LOOP = asyncio.new_event_loop()
asyncio.set_event_loop(LOOP)


def _run(coro):
    return LOOP.run_until_complete(coro)


def _settle() -> None:
    """Let the calls' background tasks (reports) finish their turn."""
    for t in asyncio.all_tasks(LOOP):
        t.cancel()
    LOOP.run_until_complete(asyncio.sleep(0))


# ------------------------------------------------------------------ targets


class _Ticker:
    def add(self, _):
        pass

    def remove(self, _):
        pass


class _WS:
    """The Twilio side of a stream: what the gateway sends is recorded."""

    headers: dict = {}
    client = None

    def __init__(self):
        self.sent: list[str] = []

    async def send_text(self, text: str) -> None:
        self.sent.append(text)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.sent.append(f"close {code}")


GATE = auth.Gate(grants=auth.Grants(), rate=auth.RateLimit(0), allowed_params=session_params.Allowed.everything())
SETTINGS = Settings(twilio_insecure=True)


def twilio(data: bytes) -> None:
    async def go():
        async with _beside_a_victim() as nc:
            sock = twilio_media.TwilioSocket(_WS(), _board(nc), _Ticker(), SETTINGS, None, gate=GATE)
            mark = len(nc.published)
            try:
                for line in data.split(b"\n")[:64]:
                    try:
                        m = tp.parse(line)
                    except tp.ProtocolError:
                        continue
                    if not await sock.handle(m):
                        break
                    if sock.call is not None:
                        sock.tick()
            except tp.ProtocolError:
                pass
            if sock.call is not None:
                if sock.call.session == VICTIM:
                    raise AssertionError("a stream took over another session")
                _own_subjects_only(nc, mark, {sock.call.session})
                await sock.call.end("fuzz")

    _run(go())
    _settle()


def pcm(data: bytes) -> None:
    async def go():
        async with _beside_a_victim() as nc:
            c, _ = await _started(nc, "pcm-fuzzed0000000001")
            mark = len(nc.published)
            fdp = atheris.FuzzedDataProvider(data)
            sock = ws_pcm.PcmSocket(None)
            sock.call = c
            for _ in range(fdp.ConsumeIntInRange(0, 16)):
                if fdp.ConsumeBool():
                    try:
                        await c.feed(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 70_000)))
                    except ValueError:
                        pass
                else:
                    await ws_pcm._on_text(c, sock, fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 200)))
            _own_subjects_only(nc, mark, {c.session})
            await c.end("fuzz")

    _run(go())
    _settle()


def sdp(data: bytes) -> None:
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        fdp = atheris.FuzzedDataProvider(data)
        body = {"type": "offer", "sdp": "v=0\r\n" + fdp.ConsumeUnicodeNoSurrogates(4000), "token": "t"}
    try:
        sdp_text, params = webrtc.parse_offer(body)
        webrtc.check_audio(sdp_text)
    except webrtc.OfferError:
        return
    try:
        GATE.params(params)
    except auth.Refused:
        pass


TOKEN = "fuzz-auth-token"


def webhook(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    query = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 200))
    body = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 4000))
    signature = fdp.ConsumeUnicodeNoSurrogates(40) if fdp.ConsumeBool() else tp.compute_signature(TOKEN, "https://gw.example.com/twilio/voice?" + query)
    url = "https://gw.example.com/twilio/voice?" + query
    try:
        form = tp.verify_webhook(TOKEN, url, body, signature)
    except ValueError:
        form = None
    if form is not None and tp.body_sha256(url) is not None:
        import hashlib

        claimed = tp.body_sha256(url) or ""
        if claimed.lower() != hashlib.sha256(body).hexdigest():
            raise AssertionError("a JSON body whose hash does not match was accepted")
    from urllib.parse import parse_qsl

    try:
        params = dict(parse_qsl(query, keep_blank_values=True))
        twilio_media._session_params(GATE, params)
    except (auth.Refused, ValueError):
        pass


def _live_state() -> reducer.SessionState:
    state = reducer.initial_state()
    for e in (
        contract.SessionStarted(session="s1", at=1.0, transport="pcm", params={"greeting": "Hello"}),
        contract.TranscriptFinal(session="s1", at=2.0, utterance=0, text="I'd like to book"),
    ):
        state, _, _ = reducer.reduce(state, e)
    return state


LIVE = _live_state()
_TYPES = (contract.AsrClaim, contract.AsrClaimed, contract.AsrProgress, contract.SessionControl)


def bus_messages(data: bytes) -> None:
    # Events: decoded, then reduced from a live state (a handler that raises is a bug).
    try:
        event = contract.decode_event(data)
    except (contract.DecodeError, contract.ValidationError):
        event = None
    if event is not None:
        try:
            event = msgspec.structs.replace(event, session="s1")
        except (TypeError, ValueError):
            pass
        for state in (reducer.initial_state(), LIVE):
            after, commands, _ = reducer.reduce(state, event)
            for cmd in commands:
                if getattr(cmd, "session", "s1") != "s1":
                    raise AssertionError(f"a command for another session: {cmd}")
            contract.encode(after)
    for decode in (contract.decode_command, contract.decode_step, *(lambda d, t=t: contract.decode(d, t) for t in _TYPES)):
        try:
            decode(data)
        except (contract.DecodeError, contract.ValidationError):
            pass
    # The gateway's side: TTS audio (headers from the input), playback commands and steps.
    fdp = atheris.FuzzedDataProvider(data)

    async def go():
        async with _beside_a_victim() as nc:
            c, _ = await _started(nc, "pcm-fuzzed0000000002")
            mark = len(nc.published)
            for _ in range(fdp.ConsumeIntInRange(0, 8)):
                kind = fdp.ConsumeIntInRange(0, 2)
                payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 2000))
                if kind == 0:
                    headers = {k: fdp.ConsumeUnicodeNoSurrogates(8) for k in (subjects.H_SEQ, subjects.H_RATE, subjects.H_CHUNK, subjects.H_LAST) if fdp.ConsumeBool()}
                    await nc.publish(subjects.tts_audio(c.session, fdp.ConsumeIntInRange(-2, 200)), payload, headers)
                elif kind == 1:
                    await nc.publish(subjects.playback(c.session), payload)
                else:
                    await nc.publish(subjects.observe(c.session), payload)
                for _ in range(3):
                    c.next_frame()
            _own_subjects_only(nc, mark, {c.session})
            await c.end("fuzz")

    _run(go())
    _settle()


def params(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    try:
        allowed = session_params.Allowed.parse(fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 120)))
    except ValueError:
        allowed = session_params.Allowed.everything()
    names = [*session_params.CATALOGUE, "system_prompt", "tools", "max_call", ""]
    given = {}
    for _ in range(fdp.ConsumeIntInRange(0, 6)):
        name = fdp.PickValueInList(names) if fdp.ConsumeBool() else fdp.ConsumeUnicodeNoSurrogates(12)
        given[name] = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40))
    try:
        ok = allowed.validate(given)
    except session_params.ParamError:
        return
    # What the gateway lets through, the orchestrator's policy takes, whole.
    if any(k in ("system_prompt", "tools", "max_call") for k in ok):
        raise AssertionError(f"a deployment-only parameter passed: {ok}")
    _, bad = reducer.policy_from_params({k: v for k, v in ok.items() if k in reducer.Policy.__struct_fields__})
    if bad:
        raise AssertionError(f"accepted by the gateway, refused by the policy: {bad} in {ok}")


# ------------------------------------------------------------------ the workers


def _fuzzed_subject(fdp, session: str) -> str:
    """Mostly the fuzzed session's, sometimes made up (never the victim's:
    NATS routes by subject, and that is the victim's own business)."""
    if fdp.ConsumeIntInRange(0, 7) == 0:
        made = fdp.ConsumeUnicodeNoSurrogates(12)
        return made if VICTIM not in made else session
    return session


_ASR = {}


def _asr_worker(nc: LocalBus):
    if "vad" not in _ASR:
        from parley_asr.vad import SileroVad

        _ASR["vad"] = SileroVad()
    return asr_worker.Worker(nc, AsrSettings(providers="fixed"), _ASR["vad"])


def asr(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    fuzzed = "asr-fuzzed000000001"

    async def go():
        nc = LocalBus()
        w = _asr_worker(nc)
        await w.claim(VICTIM)
        await w.claim(fuzzed)
        victim = w.sessions[VICTIM]
        await nc.publish(subjects.audio_in(VICTIM), bytes(640), bus.audio_headers(0, 16000))
        before = (victim.closed, victim.audio.end, victim.dropped, victim.last_seq)
        mark = len(nc.published)
        for _ in range(fdp.ConsumeIntInRange(0, 10)):
            kind = fdp.ConsumeIntInRange(0, 3)
            payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 2000))
            session = _fuzzed_subject(fdp, fuzzed)
            try:
                subjects.session_token(session)
            except ValueError:
                session = fuzzed
            if kind == 0:
                headers = {k: fdp.ConsumeUnicodeNoSurrogates(8) for k in (subjects.H_SEQ, subjects.H_RATE) if fdp.ConsumeBool()}
                await nc.publish(subjects.audio_in(session), payload, headers)
            elif kind == 1:
                await nc.publish(subjects.control(session), payload)
            elif kind == 2:
                await w._on_alive(Msg(subjects.asr_alive(w.id), payload, reply="r"))
            else:
                claim = contract.AsrClaim(session=session, sample_rate=fdp.PickValueInList([16000, 8000, 0]), utterance=fdp.ConsumeIntInRange(-1, 5))
                await w._on_claim(Msg(subjects.ASR_CLAIM, contract.encode(claim) if fdp.ConsumeBool() else payload, reply="r"))
        # Every session but the victim is the fuzzer's (it names them): the
        # worker must publish nothing for the victim.
        for subject, _ in nc.published[mark:]:
            if subject.split(".")[:2] != ["parley", "asr"] and VICTIM in subject.split("."):
                raise AssertionError(f"cross-session effect: {subject} published for the victim")
        if (victim.closed, victim.audio.end, victim.dropped, victim.last_seq) != before or w.sessions.get(VICTIM) is not victim:
            raise AssertionError("the victim session changed")

    _run(go())
    _settle()


class _Voice:
    """A voice that is never reached (the jobs' tasks are cancelled)."""

    name, sample_rate = "none", 16000


def tts(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    fuzzed = "tts-fuzzed000000001"

    async def go():
        nc = LocalBus()
        w = tts_worker.Worker(nc, TtsSettings(providers="fixed"), _Voice())
        victim_job = contract.Synthesize(session=VICTIM, run=1, chunk=0, text="Hello there.")
        await w._on_request(Msg(subjects.TTS_REQUEST, contract.encode(victim_job)))
        def victim_state():
            return sorted(k for k in w.runners if k[0] == VICTIM), w.stats["cancels"], w.stats["sessions_ended"]

        before = victim_state()
        mark = len(nc.published)
        for _ in range(fdp.ConsumeIntInRange(0, 10)):
            kind = fdp.ConsumeIntInRange(0, 2)
            payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 600))
            if fdp.ConsumeBool():
                session = _fuzzed_subject(fdp, fuzzed)
                cmd = fdp.PickValueInList([
                    contract.Synthesize(session=session, run=fdp.ConsumeIntInRange(-1, 5), chunk=fdp.ConsumeIntInRange(-1, 5), text=fdp.ConsumeUnicodeNoSurrogates(40)),
                    contract.CancelTTS(session=session, run=fdp.ConsumeIntInRange(-1, 5)),
                ])
                payload = contract.encode(cmd)
            if kind == 0:
                await w._on_request(Msg(subjects.TTS_REQUEST, payload))
            elif kind == 1:
                await w._on_cancel(Msg(subjects.TTS_CANCEL, payload))
            else:
                await w._on_control(Msg(subjects.control(fuzzed), payload))
        _own_subjects_only(nc, mark, {fuzzed})
        after = victim_state()
        if after[0] != before[0]:
            raise AssertionError(f"the victim run changed: {before} -> {after}")

    _run(go())
    _settle()


class _Intake(orchestrator_runtime.Runtime):
    def __init__(self):  # only what _decode needs: no bus, no KV
        self.stats = {"events_forged": 0}
        self.defaults = {}


INTAKE = object.__new__(_Intake)
_Intake.__init__(INTAKE)


def intake(data: bytes) -> None:
    # The first byte picks the subject (producer, session), the rest is the body.
    head, body = (data[0], data[1:]) if data else (0, b"")
    producer = [*subjects.PRODUCERS, "", "x"][head % 6]
    session = ("s1", "s2", "s.1", "")[(head >> 3) % 4]
    subject = f"parley.evt.{head >> 5}.{session}.{producer}"
    try:
        sess, prod = subjects.stored_origin(subject)
    except ValueError:
        return  # dropped at delivery (_on_delivery)
    events, applied, dropped = INTAKE._decode(sess, [(7, subject, body)], 0)
    if applied != 7 or len(events) + len(dropped) != 1:
        raise AssertionError("an event neither reduced nor dropped")
    for event in events:
        if not contract.may_produce(event, prod) or event.session != sess:
            raise AssertionError(f"a {contract.type_name(event)} from {prod} for {event.session} passed the producer check")
        for state in (reducer.initial_state(), LIVE if sess == "s1" else reducer.initial_state()):
            reducer.reduce(state, event)


TARGETS = {"twilio": twilio, "pcm": pcm, "sdp": sdp, "webhook": webhook, "bus": bus_messages, "params": params, "asr": asr, "tts": tts, "intake": intake}


def seeds(name: str) -> list[bytes]:
    """Valid inputs to start from (the fuzzer mutates them)."""
    sid, call_sid = "MZ" + "0" * 32, "CA" + "0" * 32
    if name == "twilio":
        start = {"event": "start", "sequenceNumber": "1", "start": {"streamSid": sid, "callSid": call_sid, "accountSid": "AC" + "0" * 32, "tracks": ["inbound"],
                 "customParameters": {"greeting": "hi"}, "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}, "streamSid": sid}
        media = {"event": "media", "sequenceNumber": "2", "streamSid": sid, "media": {"track": "inbound", "chunk": "1", "timestamp": "20", "payload": "/" * 216}}
        lines = [{"event": "connected", "protocol": "Call", "version": "1.0.0"}, start, media,
                 {"event": "mark", "sequenceNumber": "3", "streamSid": sid, "mark": {"name": "1.0.1.0"}},
                 {"event": "dtmf", "sequenceNumber": "4", "streamSid": sid, "dtmf": {"track": "inbound_track", "digit": "5"}},
                 {"event": "stop", "sequenceNumber": "5", "streamSid": sid, "stop": {"accountSid": "AC" + "0" * 32, "callSid": call_sid}}]
        return [b"\n".join(json.dumps(x).encode() for x in lines)]
    if name == "sdp":
        return [json.dumps({"type": "offer", "token": "t", "params": {"greeting": "x"}, "sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=sendrecv\r\na=rtpmap:111 opus/48000/2\r\n"}).encode()]
    if name == "bus":
        events = [
            contract.SessionStarted(session="s1", at=1.0, transport="pcm", params={"greeting": "hi"}),
            contract.SpeechStarted(session="s1", at=2.0, utterance=1),
            contract.TranscriptFinal(session="s1", at=3.0, utterance=1, text="book me in"),
            contract.PlaybackProgress(session="s1", at=4.0, run=1, chunk=0, finished=True, played_ms=200),
            contract.Dtmf(session="s1", at=5.0, digit="1"),
            contract.TimerFired(session="s1", at=6.0, name="reprompt", token=1),
        ]
        return [contract.encode(e) for e in events] + [contract.encode(contract.FlushPlayback(session="s1", run=1))]
    if name == "intake":
        samples = [
            (1, contract.TranscriptFinal(session="s1", at=1.0, utterance=0, text="hi")),
            (0, contract.SessionEnded(session="s1", at=1.0)),
            (3, contract.ToolResult(session="s1", at=1.0, run=1, call_id="c", name="n", result="{}")),
            (2, contract.Usage(session="s1", at=1.0, service="tts", provider="p", unit="characters", amount=3)),
        ]
        return [bytes([p]) + contract.encode(e) for p, e in samples]
    return [b""]


def main() -> None:
    if sys.argv[1:2] == ["--list"]:
        print("\n".join(TARGETS))
        return
    name = sys.argv[1]
    target = TARGETS[name]
    # The corpus grows across runs (var/fuzz/NAME); a test gives its own.
    corpus = Path(os.environ.get("FUZZ_CORPUS") or ROOT / "var" / "fuzz" / name)
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(seeds(name)):
        (corpus / f"seed-{i}").write_bytes(seed)
    import logging

    logging.disable(logging.CRITICAL)  # the gateway logs every refusal: millions of lines
    atheris.Setup([sys.argv[0], *sys.argv[2:], str(corpus)], target)
    started = time.monotonic()
    try:
        atheris.Fuzz()
    finally:
        print(f"fuzz target {name}: {time.monotonic() - started:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
