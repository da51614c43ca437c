"""A local stand-in for Twilio's REST API and the far end of an outbound call.

Written from Twilio's documentation ("Making calls" / Call resource, "Call
status callbacks", "Answering Machine Detection", "Webhooks security"), not
from the gateway's code. It runs in a thread of its own (its own event loop),
so a test's stack can reach it while the test waits:

* ``POST /2010-04-01/Accounts/{AccountSid}/Calls.json`` (HTTP basic auth with
  the account SID and auth token; form ``To``, ``From``, ``Url`` or
  ``Twiml``, ``StatusCallback`` + ``StatusCallbackEvent``, ``MachineDetection``,
  ``AsyncAmd``, ``AsyncAmdStatusCallback``): answers 201 with a Call resource,
  then plays the call out: status callbacks (initiated, ringing, answered as
  ``in-progress``, completed, or busy / no-answer), each signed with
  ``X-Twilio-Signature``; on answer it requests ``Url`` (signed, with
  ``CallSid``, ``From``, ``To``, ``Direction=outbound-api``), reads the
  ``<Connect><Stream>`` TwiML and connects a Media Streams caller simulator
  (``parley.callers.twilio.TwilioCaller``) with its ``<Parameter>``s;
* the callee is scripted per ``To`` number (``Callee``): a person who says
  something when they pick up, a voicemail greeting followed by a beep, busy,
  no answer. Async AMD reports ``human`` after a person's first words, and
  ``machine_end_beep`` once the beep has ended (``DetectMessageEnd``);
* ``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`` with
  ``Status=completed`` hangs the call up (the simulator sends ``stop``);
  with ``Twiml`` it replaces what the call is running ("Modify a live call"):
  the current ``<Connect><Stream>`` stops (the simulator sends ``stop`` and
  closes: the call itself goes on), then the new TwiML runs verb by verb:
  ``<Play digits>`` presses the keys on the line (0-9, *, #, w = half a
  second's pause; recorded in ``PlacedCall.digits``), ``<Connect><Stream>``
  opens a new stream with its ``<Parameter>``s and the same CallSid. TwiML
  over 4000 characters (error 32018) or that does not parse is refused. A
  callee with ``keys`` is an automated line: after keys it knows, it says
  what it says on the new stream.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import httpx
import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from parley.callers.twilio import TwilioCaller
from parley.natsd import free_port


def signature(auth_token: str, url: str, form: dict[str, str]) -> str:
    data = url + "".join(k + form[k] for k in sorted(form))
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def beep(seconds: float = 0.5, rate: int = 8000, hz: float = 1000.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * hz * t) * 12000).astype(np.int16)


def wait_for(predicate, timeout: float, what: str) -> None:
    """Until ``predicate()`` (polled from the test's thread; the API runs in its own)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


@dataclass
class Callee:
    answers: str = "human"  # human | machine | busy | no-answer
    speech: np.ndarray | None = None  # 8 kHz int16: a person's first words, or the voicemail greeting
    ring: float = 0.3
    amd: bool = True  # False: an account without answering-machine detection (no AnsweredBy callback)
    keys: dict[str, np.ndarray] = field(default_factory=dict)  # an automated line: what it says once these keys were pressed


@dataclass
class PlacedCall:
    sid: str
    form: dict[str, list[str]]
    callee: Callee
    statuses: list[str] = field(default_factory=list)  # the CallStatus of every status callback sent
    amd: list[str] = field(default_factory=list)  # AnsweredBy values sent
    caller: TwilioCaller | None = None
    beep_end: float = 0.0  # monotonic time the beep ended
    spoke_until: float = 0.0  # monotonic time the person's first words ended
    hung_up_by: str = ""  # "api" (a Calls/{sid}.json update) or "stream" (the media socket closed)
    digits: list[str] = field(default_factory=list)  # every <Play digits> the line received, in order
    streams: list[TwilioCaller] = field(default_factory=list)  # every media stream of the call, in order
    following: asyncio.Task | None = None  # TwiML from an update, running
    said_after_keys: list[tuple[str, float]] = field(default_factory=list)  # (keys, monotonic time the line finished saying its answer)
    finished: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)

    def one(self, key: str) -> str:
        return self.form.get(key, [""])[0]


class TwilioApi:
    def __init__(self, account_sid: str, auth_token: str, callees: dict[str, Callee]):
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.callees = callees
        self.calls: dict[str, PlacedCall] = {}
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task] = set()
        self.updates: list[tuple[str, dict[str, str]]] = []  # (CallSid, form) of every Calls/{sid}.json update
        self.whispers: dict[str, str] = {}  # CallSid -> what the person taking a warm transfer heard first (<Say>)

    # ------------------------------------------------------------ life
    def start(self) -> "TwilioApi":
        config = uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        ready = threading.Event()

        def run() -> None:
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(ready.set)
            self.loop.run_until_complete(self._server.serve())

        self._thread = threading.Thread(target=run, name="twilio-api", daemon=True)
        self._thread.start()
        ready.wait(10)
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    def run(self, coro, timeout: float = 60):
        """Run a coroutine on the stand-in's loop, from the test's thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def wait_call(self, to: str, timeout: float = 30) -> PlacedCall:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for call in self.calls.values():
                if call.one("To") == to:
                    return call
            time.sleep(0.05)
        raise TimeoutError(f"no call to {to}")

    # ------------------------------------------------------------ the REST API
    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/2010-04-01/Accounts/{account}/Calls.json")
        async def create(account: str, request: Request):
            if (refused := self._auth(account, request)) is not None:
                return refused
            form = _multi(await request.body())
            missing = [k for k in ("To", "From") if not form.get(k)]
            if missing or not (form.get("Url") or form.get("Twiml")):
                return _error(400, 21201, f"Missing required parameter {(missing or ['Url'])[0]}")
            callee = self.callees.get(form["To"][0])
            if callee is None:
                return _error(400, 21217, f"Phone number {form['To'][0]} is not valid")
            call = PlacedCall(sid="CA" + secrets.token_hex(16), form=form, callee=callee)
            self.calls[call.sid] = call
            self._spawn(self._play_out(call))
            return JSONResponse(
                {"sid": call.sid, "account_sid": account, "to": call.one("To"), "from": call.one("From"), "status": "queued", "direction": "outbound-api"},
                status_code=201,
            )

        @app.post("/2010-04-01/Accounts/{account}/Calls/{sid}.json")
        async def update(account: str, sid: str, request: Request):
            if (refused := self._auth(account, request)) is not None:
                return refused
            form = _multi(await request.body())
            self.updates.append((sid, {k: v[0] for k, v in form.items()}))
            call = self.calls.get(sid)
            if "Twiml" in form:
                twiml = form["Twiml"][0]
                if len(twiml) > 4000:
                    return _error(400, 32018, "Twiml size exceeded maximum allowed value of 4000 characters")
                try:
                    root = ET.fromstring(twiml)
                except ET.ParseError:
                    return _error(400, 12100, "Document parse failure")
                if root.tag != "Response":
                    return _error(400, 12100, "Document parse failure")
                if call is not None and call.caller is not None:
                    call.following = asyncio.get_running_loop().create_task(self._run_twiml(call, root))
                    self._tasks.add(call.following)
                    call.following.add_done_callback(self._tasks.discard)
                else:
                    self._spawn(self._follow(sid, twiml))
            if call is None:  # a call that came in (not placed here): recorded above
                return JSONResponse({"sid": sid, "status": "in-progress"})
            if form.get("Status", [""])[0] == "completed":
                call.hung_up_by = call.hung_up_by or "api"
                if call.caller is not None:
                    await call.caller.hang_up()
            return JSONResponse({"sid": sid, "status": "completed" if call.hung_up_by else "in-progress"})

        return app

    def _auth(self, account: str, request: Request) -> JSONResponse | None:
        expected = "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if account != self.account_sid or not hmac.compare_digest(request.headers.get("authorization", ""), expected):
            return _error(401, 20003, "Authenticate")
        return None

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _follow(self, sid: str, twiml: str) -> None:
        """New TwiML for a live call: a <Dial><Number url=...> first plays
        that URL's TwiML to the person called (a warm transfer's whisper)."""
        number = ET.fromstring(twiml).find("./Dial/Number")
        if number is None or not number.get("url"):
            return
        async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
            r = await self._post(http, number.get("url"), {"CallSid": "CA" + secrets.token_hex(16), "AccountSid": self.account_sid, "ParentCallSid": sid})
        said = ET.fromstring(r.text).find("./Say")
        self.whispers[sid] = said.text if said is not None else ""

    async def _run_twiml(self, call: PlacedCall, root: ET.Element) -> None:
        """New TwiML for a live placed call: the stream running stops, then
        the verbs run in order (a <Connect><Stream> runs until its stream ends)."""
        try:
            old = call.caller
            if old is not None and not old.closed.is_set():
                await old.hang_up()  # Twilio's stop on the replaced stream; the call goes on
            for verb in root:
                if verb.tag == "Play" and verb.get("digits") is not None:
                    digits = verb.get("digits")
                    if not digits or set(digits) - set("0123456789*#w"):
                        call.errors.append(f"<Play digits={digits!r}> is not keys")
                        return
                    call.digits.append(digits)
                    await asyncio.sleep(sum(0.5 if d == "w" else 0.2 for d in digits))  # tones on the line
                elif verb.tag == "Connect" and verb.find("Stream") is not None:
                    stream = verb.find("Stream")
                    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
                    caller = TwilioCaller(stream.get("url"), params, call_sid=call.sid, account_sid=self.account_sid)
                    await caller.connect()
                    call.caller = caller
                    call.streams.append(caller)
                    pressed = "".join(call.digits).replace("w", "")
                    answer = call.callee.keys.get(pressed)
                    if answer is not None:
                        self._spawn(self._say_after_keys(call, caller, pressed, answer))
                    return
                elif verb.tag == "Dial":
                    await self._follow(call.sid, ET.tostring(root, encoding="unicode"))
                    return
        except Exception as exc:  # noqa: BLE001 - reported to the test
            call.errors.append(f"TwiML update: {type(exc).__name__}: {exc}")

    async def _say_after_keys(self, call: PlacedCall, caller: TwilioCaller, keys: str, speech: np.ndarray) -> None:
        await asyncio.sleep(0.6)
        _, until = await caller.say(speech)
        call.said_after_keys.append((keys, until))

    # ------------------------------------------------------------ the call
    async def _play_out(self, call: PlacedCall) -> None:
        try:
            async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
                await self._status(http, call, "initiated", "initiated")
                await asyncio.sleep(call.callee.ring)
                await self._status(http, call, "ringing", "ringing")
                if call.callee.answers in ("busy", "no-answer"):
                    await asyncio.sleep(call.callee.ring)
                    await self._status(http, call, "completed", call.callee.answers)
                    return
                await self._answer(http, call)
                await self._status(http, call, "answered", "in-progress")
                if call.callee.answers == "machine":
                    await self._machine(http, call)
                else:
                    await self._person(http, call)
                while True:  # until the last stream ends with nothing to follow it
                    await call.caller.closed.wait()
                    if call.following is not None and not call.following.done():
                        await call.following
                    if call.caller.closed.is_set():
                        break
                call.hung_up_by = call.hung_up_by or "stream"
                await self._status(http, call, "completed", "completed")
        except Exception as exc:  # noqa: BLE001 - reported to the test
            call.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            call.finished.set()

    def _common(self, call: PlacedCall, status: str) -> dict[str, str]:
        return {"CallSid": call.sid, "AccountSid": self.account_sid, "From": call.one("From"), "To": call.one("To"),
                "CallStatus": status, "Direction": "outbound-api", "ApiVersion": "2010-04-01"}  # fmt: skip

    async def _post(self, http: httpx.AsyncClient, url: str, form: dict[str, str]) -> httpx.Response:
        r = await http.post(url, data=form, headers={"X-Twilio-Signature": signature(self.auth_token, url, form)})
        if r.status_code >= 400:
            raise RuntimeError(f"{url} answered {r.status_code}: {r.text[:200]}")
        return r

    async def _status(self, http: httpx.AsyncClient, call: PlacedCall, event: str, status: str) -> None:
        url = call.one("StatusCallback")
        if url and event in call.form.get("StatusCallbackEvent", []) + (["completed"] if event == "completed" else []):
            call.statuses.append(status)
            await self._post(http, url, {**self._common(call, status), "CallbackSource": "call-progress-events", "SequenceNumber": str(len(call.statuses) - 1)})

    async def _answer(self, http: httpx.AsyncClient, call: PlacedCall) -> None:
        r = await self._post(http, call.one("Url"), self._common(call, "in-progress"))
        stream = ET.fromstring(r.text).find("./Connect/Stream")
        params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
        call.caller = TwilioCaller(stream.get("url"), params, call_sid=call.sid, account_sid=self.account_sid)
        call.streams.append(call.caller)
        await call.caller.connect()

    async def _amd(self, http: httpx.AsyncClient, call: PlacedCall, answered_by: str) -> None:
        url = call.one("AsyncAmdStatusCallback")
        if call.one("MachineDetection") and url and call.callee.amd:
            call.amd.append(answered_by)
            await self._post(http, url, {"CallSid": call.sid, "AccountSid": self.account_sid, "AnsweredBy": answered_by, "MachineDetectionDuration": "3000"})

    async def _person(self, http: httpx.AsyncClient, call: PlacedCall) -> None:
        await asyncio.sleep(0.3)
        if call.callee.speech is not None:
            call.spoke_until = await _say_on(call.caller, call.callee.speech)
        await asyncio.sleep(0.5)
        await self._amd(http, call, "human")

    async def _machine(self, http: httpx.AsyncClient, call: PlacedCall) -> None:
        if call.callee.speech is not None:
            await call.caller.say(call.callee.speech)
        _, call.beep_end = await call.caller.say(beep())
        await asyncio.sleep(0.2)  # DetectMessageEnd: reported once the beep is over
        await self._amd(http, call, "machine_end_beep")


async def _say_on(caller: TwilioCaller, speech: np.ndarray) -> float:
    """Say ``speech`` on this stream; returns when it was said, or when the
    stream was stopped first (keys pressed mid-sentence replace it)."""
    said = asyncio.ensure_future(caller.say(speech))
    closed = asyncio.ensure_future(caller.closed.wait())
    done, _ = await asyncio.wait({said, closed}, return_when=asyncio.FIRST_COMPLETED)
    closed.cancel()
    if said in done:
        return said.result()[1]
    said.cancel()
    return time.monotonic()


def _multi(body: bytes) -> dict[str, list[str]]:
    return parse_qs(body.decode(), keep_blank_values=True)


def _error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status}, status_code=status)
