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
* ``params``: session parameters and the deployment's allow-list spec.

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
import json
import os
import sys
import time
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parent.parent
for extra in ("services/media-gateway", "services/orchestrator"):
    sys.path.insert(0, str(ROOT / extra))

with atheris.instrument_imports(include=["parley", "parley_gateway", "parley_orchestrator"]):
    import msgspec

    from parley import bus, contract, natsauth, session_params, subjects
    from parley.audio.playout import Playout
    from parley_gateway import auth, call, twilio_media, webrtc, ws_pcm
    from parley_gateway import twilio_protocol as tp
    from parley_gateway.settings import Settings
    from parley_orchestrator import reducer


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


async def _victim(nc: LocalBus) -> tuple[call.Call, Quiet]:
    t = Quiet()
    c = call.Call(nc, t, session=VICTIM)
    await c.start(params={})
    c.tasks.cancel()
    return c, t


def _victim_state(c: call.Call, t: Quiet) -> tuple:
    return (c.closed, c.playout.buffered_ms, c.playout.current_run, len(t.told), c.seq, dict(c.announced), len(c.unannounced))


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
        nc = LocalBus()
        victim, vt = await _victim(nc)
        before = _victim_state(victim, vt)
        sock = twilio_media.TwilioSocket(_WS(), nc, _Ticker(), {}, SETTINGS, None, gate=GATE)
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
        if _victim_state(victim, vt) != before:
            raise AssertionError("the victim call changed")

    _run(go())
    _settle()


def pcm(data: bytes) -> None:
    async def go():
        nc = LocalBus()
        victim, vt = await _victim(nc)
        before = _victim_state(victim, vt)
        t = Quiet()
        c = call.Call(nc, t, session="pcm-fuzzed0000000001")
        await c.start(params={})
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
        if _victim_state(victim, vt) != before:
            raise AssertionError("the victim call changed")

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
        nc = LocalBus()
        victim, vt = await _victim(nc)
        before = _victim_state(victim, vt)
        t = Quiet()
        c = call.Call(nc, t, session="pcm-fuzzed0000000002")
        await c.start(params={})
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
        if _victim_state(victim, vt) != before:
            raise AssertionError("the victim call changed")

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


TARGETS = {"twilio": twilio, "pcm": pcm, "sdp": sdp, "webhook": webhook, "bus": bus_messages, "params": params}


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
