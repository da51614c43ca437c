"""The two sides a scenario watches a call from.

* A ``Line`` is the caller's telephone: ``PcmLine`` over ``/ws/pcm``,
  ``TwilioLine`` over the Twilio Media Streams protocol (μ-law 8 kHz, marks,
  clear, Twilio's playout buffer at the far end), both built on
  ``parley.callers``. It plays the caller's audio at real-time pace and keeps
  what the caller *heard*: each 20 ms of agent audio with the time it played.
* The ``Observer`` subscribes to every session's reducer steps
  (``parley.obs.*``) on NATS: transcripts, runs, pauses and flushes, tool
  calls, the prompts (and so the history) the LLM was given. Each step is
  kept with its arrival time on this process's monotonic clock.

Caller-side times are ``time.monotonic()`` of this process; event times in
the steps (``at``) are the producing service's ``time.time()``, converted
with the offset measured when the call began (same machine, or NTP-synced).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import numpy as np
import soxr

from parley import bus, contract, natsauth, subjects

log = logging.getLogger("parley.scenarios")

MARKER = "scenario_call"  # session parameter that ties a session to its caller


@dataclass
class Heard:
    """What the caller heard: 20 ms frames of agent audio, int16 at ``rate``."""

    rate: int
    frames: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (play time, samples)


def _spoken(done: asyncio.Future, utterances: list) -> asyncio.Future:
    """A caller's say() future, resolved instead to (first frame sent, last
    frame sent, onset): onset is when its first voiced sample was spoken
    (``parley.callers.ear.Utterance``), or None for a silent one."""
    out = asyncio.get_running_loop().create_future()

    def finish(f: asyncio.Future) -> None:
        if out.done():
            return
        if f.cancelled() or f.exception() is not None:
            out.cancel()
            return
        u = utterances[-1]
        out.set_result((u.first, u.last, u.onset))

    done.add_done_callback(finish)
    return out


class Line:
    kind = ""
    rate = 16000

    async def open(self) -> None: ...
    def play(self, pcm16k: np.ndarray) -> asyncio.Future: ...  # -> (first sent, last sent, onset)
    async def dtmf(self, digit: str) -> None: ...
    async def hang_up(self) -> None: ...
    def heard(self) -> Heard: ...
    def marks(self) -> list[dict]:
        return []

    @property
    def closed(self) -> bool:
        return False


class PcmLine(Line):
    kind = "pcm"
    rate = 16000

    def __init__(self, gateway_ws: str, params: dict[str, str], *, gateway_http: str = "", api_key: str = ""):
        self.gateway_ws = gateway_ws
        self.gateway_http = gateway_http or "http" + gateway_ws.removeprefix("ws")
        self.api_key = api_key
        self.params = params
        self.caller = None
        self.session = ""

    async def open(self) -> None:
        from parley.callers.pcm import PcmCaller

        # A session needs a one-time token; its parameters are bound to it.
        token = await asyncio.to_thread(mint_session, self.gateway_http, self.api_key, self.params)
        self.caller = PcmCaller(f"{self.gateway_ws}/ws/pcm?" + urllib.parse.urlencode({"token": token}))
        await self.caller.__aenter__()
        self.session = self.caller.session or ""

    def play(self, pcm16k: np.ndarray) -> asyncio.Future:
        return _spoken(self.caller.say_later(pcm16k), self.caller.utterances)

    async def dtmf(self, digit: str) -> None:
        await self.caller.ws.send(json.dumps({"type": "dtmf", "digit": digit}))

    async def hang_up(self) -> None:
        try:
            await self.caller.ws.send(json.dumps({"type": "hangup"}))
        except Exception:  # noqa: BLE001 - already closed
            pass
        try:
            await asyncio.wait_for(self.caller.closed.wait(), 3)
        except asyncio.TimeoutError:
            pass
        await self.caller.__aexit__(None, None, None)

    def heard(self) -> Heard:
        # Through the caller's 40 ms playout buffer, dropped on "interrupted",
        # as the browser page plays it (parley.callers.ear).
        return Heard(16000, [(t, np.frombuffer(pcm, "<i2")) for t, pcm in self.caller.heard])

    @property
    def closed(self) -> bool:
        return self.caller is not None and self.caller.closed.is_set()


class TwilioLine(Line):
    kind = "twilio"
    rate = 8000

    def __init__(self, gateway_ws: str, params: dict[str, str], *, gateway_http: str = "", auth_token: str = ""):
        self.gateway_ws = gateway_ws
        self.gateway_http = gateway_http
        self.auth_token = auth_token
        self.params = params
        self.caller = None
        self.session = ""

    async def open(self) -> None:
        from parley.callers.twilio import TwilioCaller

        call_sid = "CA" + secrets.token_hex(16)
        if self.auth_token:
            url, params = await asyncio.to_thread(dial_webhook, self.gateway_http, self.auth_token, call_sid, self.params)
        else:
            url, params = f"{self.gateway_ws}/twilio/media", dict(self.params)
        self.caller = TwilioCaller(url, params, call_sid=call_sid)
        await self.caller.connect()

    def play(self, pcm16k: np.ndarray) -> asyncio.Future:
        pcm8k = soxr.resample(pcm16k.astype(np.float32) / 32768, 16000, 8000)
        return _spoken(self.caller.say_later((np.clip(pcm8k, -1, 1) * 32767).astype(np.int16)), self.caller.rec.utterances)

    async def dtmf(self, digit: str) -> None:
        await self.caller.dtmf(digit)

    async def hang_up(self) -> None:
        await self.caller.hang_up()

    def heard(self) -> Heard:
        return Heard(8000, [(t, np.frombuffer(pcm, "<i2")) for t, pcm in self.caller.rec.played])

    def marks(self) -> list[dict]:
        return [{"at": e.at, "name": e.name, "cleared": e.cleared} for e in self.caller.rec.echoes]

    @property
    def closed(self) -> bool:
        return self.caller is not None and self.caller.closed.is_set()


def mint_session(gateway_http: str, api_key: str, params: dict[str, str]) -> str:
    """A one-time session token from the gateway (``POST /api/sessions``)."""
    if not api_key:
        raise RuntimeError("a /ws/pcm call needs a session token: give the gateway's API key (--api-key or PARLEY_API_KEY; make run prints it)")
    req = urllib.request.Request(
        f"{gateway_http}/api/sessions", data=json.dumps({"params": params}).encode(),
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 - the gateway the user named
            return json.loads(r.read())["token"]
    except urllib.error.HTTPError as err:
        raise RuntimeError(f"the gateway refused a session token: {err.read().decode(errors='replace')[:300]}") from None


def dial_webhook(gateway_http: str, auth_token: str, call_sid: str, params: dict[str, str]) -> tuple[str, dict[str, str]]:
    """Twilio's side of an incoming call on a gateway that checks signatures:
    the signed voice webhook, whose TwiML gives the stream URL and parameters."""
    url = f"{gateway_http}/twilio/voice?" + urllib.parse.urlencode(params)
    form = {"CallSid": call_sid, "AccountSid": "AC" + "0" * 32, "From": "+15550009999", "To": "+15550001000", "CallStatus": "ringing"}
    data = url + "".join(k + form[k] for k in sorted(form))
    signature = base64.b64encode(hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()).decode()
    req = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode(), headers={"X-Twilio-Signature": signature})
    with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 - the gateway the user named
        twiml = r.read().decode()
    stream = ET.fromstring(twiml).find("./Connect/Stream")
    if stream is None:
        raise RuntimeError(f"the voice webhook answered no <Connect><Stream>: {twiml[:300]}")
    return stream.get("url"), {p.get("name"): p.get("value") for p in stream.findall("Parameter")}


# ---------------------------------------------------------------------------


@dataclass
class Seen:
    at: float  # arrival, this process's monotonic clock
    step: contract.Step


class Observer:
    """Every session's reducer steps from ``parley.obs.*``, by session."""

    def __init__(self, nats_url: str):
        self.url = nats_url
        self.nc = None
        self.steps: dict[str, list[Seen]] = {}
        self.markers: dict[str, str] = {}  # marker -> session
        self.bad = 0
        self._changed = asyncio.Event()

    async def start(self, timeout: float = 10.0) -> "Observer":
        try:
            # A URL with its own user (a test stack's) or the operator's nkey (make run's).
            creds = None if "@" in self.url else natsauth.operator_credentials(os.environ)
            self.nc = await asyncio.wait_for(bus.connect(self.url, name="parley-scenarios", credentials=creds), timeout)
        except asyncio.TimeoutError:
            raise ConnectionError(f"no NATS server answered at {self.url} in {timeout:.0f} s") from None
        await self.nc.subscribe(f"{subjects.PREFIX}.obs.*", cb=self._on_msg, pending_msgs_limit=1_000_000, pending_bytes_limit=1 << 30)
        await self.nc.flush()
        return self

    async def stop(self) -> None:
        if self.nc is not None:
            await self.nc.drain()

    async def _on_msg(self, msg) -> None:
        now = time.monotonic()
        try:
            step = contract.decode_step(msg.data)
        except (contract.DecodeError, contract.ValidationError):
            self.bad += 1
            return
        session = step.event.session
        self.steps.setdefault(session, []).append(Seen(now, step))
        if isinstance(step.event, contract.SessionStarted):
            marker = step.event.params.get(MARKER)
            if marker:
                self.markers[marker] = session
        self._changed.set()

    async def changed(self, timeout: float) -> None:
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    async def session_of(self, marker: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while marker not in self.markers:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no session started with {MARKER}={marker} in {timeout:.0f} s (is --nats the stack's NATS?)")
            await self.changed(0.2)
        return self.markers[marker]

    def of(self, session: str) -> list[Seen]:
        return sorted(self.steps.get(session, []), key=lambda s: s.step.index)

    def caller_speaking(self, session: str) -> bool:
        """The ASR said the caller started an utterance and has not yet said
        it stopped (the reducer stays Listening either way, so the phase
        alone cannot tell "waiting for the caller" from "the caller talks")."""
        for seen in reversed(self.of(session)):
            if isinstance(seen.step.event, contract.SpeechStopped):
                return False
            if isinstance(seen.step.event, contract.SpeechStarted):
                return True
        return False

    def phase(self, session: str) -> tuple[str, float]:
        """The session's phase after its latest step, and when that step arrived."""
        seen = self.of(session)
        return (seen[-1].step.state_to, seen[-1].at) if seen else ("", 0.0)


def encode_steps(seen: list[Seen]) -> list[dict]:
    return [{"seen": s.at, "step": json.loads(contract.to_json(s.step))} for s in seen]


def decode_steps(raw: list[dict]) -> list[Seen]:
    return [Seen(r["seen"], contract.step_from_json(json.dumps(r["step"]))) for r in raw]
