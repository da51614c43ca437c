"""``/ws/pcm``: the simplest transport, for the browser page, tools and tests.

Connect with ``?token=`` (a one-time token from ``POST /api/sessions``; see
``auth``); other query parameters are session parameters, checked against
what the deployment allows. A refused connection gets an ``error`` notice
(with the HTTP-like ``status``: 401 token, 403 origin, 400 parameter, 429
rate) and a close frame (1008, or 1013 "try again later" for the rate).

Client -> server: binary messages of PCM16 LE mono 16 kHz, any length; text
messages of JSON ``{"type": "dtmf", "digit": "5"}`` or ``{"type": "hangup"}``,
and from a client that drops its buffer at a ``pause`` notice (see
``call.Call.client_paused``): ``{"type": "hello", "answers_pause": true}``
once, then for each ``pause`` ``{"type": "paused", "run": R, "unplayed_ms": N}``
(what it dropped unplayed; the gateway plays it again on resume).
Server -> client: binary messages of PCM16 LE mono 16 kHz agent audio, paced in
real time in 20 ms frames; text messages of JSON objects with a ``type``
(``session``, ``step``, ``state``, ``transcript``, ``agent_text``,
``tool_call``, ``tool_result``, ``interrupted``, ``paused``, ``latency``,
``barge_in``, ``error``, ``end``).

The client is expected to read as fast as audio is sent. One that stops
reading (its socket backs up by more than ``BACKLOG_FRAMES`` of audio) is
told why in an ``error`` notice and a close frame (1008), the failure is logged
and counted (``pcm_error_backlog``), and its session ends; it is never dropped
silently while the call goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque

from fastapi import WebSocket, WebSocketDisconnect

from . import auth
from .admission import CLOSE_TRY_AGAIN
from .call import Call, Switchboard, pause_answer

log = logging.getLogger("parley.gateway")

BACKLOG_FRAMES = 250  # 5 s of audio written to the socket but not taken by the client
CLOSE_TIMEOUT = 2.0  # a client that does not read may not take the close frame either
CLOSE_POLICY = 1008


def _count(stats: dict, key: str, n: int = 1) -> None:
    stats[key] = stats.get(key, 0) + n


class PcmSocket:
    kind = "pcm"
    rate = 16000
    reports_playback = False

    def __init__(self, ws: WebSocket, stats: dict | None = None):
        self.ws = ws
        self.stats = stats if stats is not None else {}
        self.outbox: deque[bytes | str | tuple[int, str]] = deque()
        self.frames_queued = 0
        self.wake = asyncio.Event()
        self.call: Call | None = None
        self.closing = False
        self.failed = asyncio.Event()
        self.end_reason = "hangup"
        self.held: set[int] = set()  # runs the client was told to hold (pause), not yet resumed or flushed

    # ------------------------------------------------------------ outbound
    def tick(self) -> None:
        if self.closing or self.call is None:
            return
        if self.frames_queued > BACKLOG_FRAMES:
            self.fail(f"the client is not reading: {self.frames_queued * 20 / 1000:.1f} s of audio unsent", "backlog")
            return
        frame = self.call.next_frame()
        if frame is not None:
            self.frames_queued += 1
            self._put(frame)

    def _put(self, item) -> None:
        self.outbox.append(item)
        self.wake.set()

    async def send_notice(self, notice: dict) -> None:
        if not self.closing:
            self._put(json.dumps(notice))

    def on_pause(self, run: int) -> None:
        """The playout holds the run; the client is told at once (behind the
        frames already queued), so that it stops playing what its own buffer
        has of the run instead of playing it out (``{"type": "pause", "run"}``);
        a client that answers what it dropped (``paused``) hears it again on
        ``resume``: the caller hears the agent stop sooner and loses nothing. Only for a run that was being heard."""
        if self.call is not None and self.call.audible(run) and not self.closing:
            self.held.add(run)
            self._put(json.dumps({"type": "pause", "run": run}))
            self.call.pause_told(run)

    def on_resume(self, run: int) -> None:
        if run in self.held and not self.closing:
            self.held.discard(run)
            self._put(json.dumps({"type": "resume", "run": run}))

    async def on_flush(self, run: int) -> None:
        self.held.discard(run)  # the playout dropped the run; the client is told by the "interrupted" notice

    async def close(self, reason: str) -> None:
        """The agent ended the call: send what is queued (the goodbye), then close."""
        if self.closing:
            return
        self.closing = True
        self.end_reason = f"agent ended the call: {reason}"
        self._put((1000, "call ended"))

    def fail(self, reason: str, kind: str) -> None:
        if self.closing:
            return
        self.closing = True
        log.error("pcm client failed: %s", reason, extra={"session_id": self.call.session if self.call else None, "kind": kind})
        _count(self.stats, f"pcm_error_{kind}")
        self.end_reason = f"error: {reason}"
        self.outbox.clear()
        self.frames_queued = 0
        self._put(json.dumps({"type": "error", "error": reason}))
        self._put((CLOSE_POLICY, reason[:120]))
        self.failed.set()  # the sender may be stuck writing to a client that does not read

    async def sender(self) -> None:
        """Write the outbox; returns once the socket is closed."""
        while True:
            while not self.outbox:
                self.wake.clear()
                await self.wake.wait()
            item = self.outbox.popleft()
            if isinstance(item, tuple):
                code, reason = item
                try:
                    await asyncio.wait_for(self.ws.close(code, reason), CLOSE_TIMEOUT)
                except Exception:  # noqa: BLE001 - gone or not reading: the handler's return drops it
                    pass
                return
            if isinstance(item, bytes):
                await self.ws.send_bytes(item)
                self.frames_queued -= 1
            else:
                await self.ws.send_text(item)

    # ------------------------------------------------------------- inbound
    async def reader(self) -> None:
        """Read the client until it hangs up or disconnects."""
        assert self.call is not None
        while True:
            msg = await self.ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            if msg.get("bytes") is not None:
                try:
                    await self.call.feed(msg["bytes"])
                except ValueError as exc:
                    await self.send_notice({"type": "error", "error": str(exc)})
            elif msg.get("text") is not None:
                await _on_text(self.call, self, msg["text"])
                if self.closing:
                    return


# long: one /ws/pcm connection from accept to close: admission, auth, call and the three tasks whose first end ends it, in one try/finally
async def serve(ws: WebSocket, board: Switchboard, ticker, gate: auth.Gate) -> None:
    stats, admission = board.stats, board.admission
    await ws.accept()
    if admission is not None and admission.full:
        # Before the token is used: the caller may come back with it.
        busy = admission.refuse("pcm")
        await ws.send_text(json.dumps({"type": "error", "error": busy, "status": 503, "full": admission.which, "retry_after": admission.retry_after}))
        await ws.close(CLOSE_TRY_AGAIN, f"all lines are busy: {admission.which} full")
        return
    try:
        # A one-time token, from an allowed origin, within the rate; the URL's
        # other query parameters are session parameters the deployment allows.
        query = {k: v for k, v in ws.query_params.multi_items() if k != "token"}
        params = await gate.admit(ws.headers, ws.client.host if ws.client else None, ws.query_params.get("token"), query)
    except auth.Refused as refused:
        _count(stats, f"pcm_refused_{refused.status}")
        log.warning("pcm session refused: %s", refused, extra={"client": ws.client.host if ws.client else None, "status": refused.status})
        await ws.send_text(json.dumps({"type": "error", "error": str(refused), "status": refused.status}))
        await ws.close(refused.close, str(refused)[:120])
        return
    transport = PcmSocket(ws, stats)
    call = Call(board, transport)
    transport.call = call
    try:
        await call.start(params=params)
    except RuntimeError as exc:
        await ws.send_text(json.dumps({"type": "error", "error": str(exc)}))
        await ws.close(1011)
        return
    await transport.send_notice({"type": "session", "session": call.session})
    sender = asyncio.create_task(transport.sender(), name="pcm-sender")
    reader = asyncio.create_task(transport.reader(), name="pcm-reader")
    failed = asyncio.create_task(transport.failed.wait(), name="pcm-failed")
    ticker.add(transport)
    try:
        done, _ = await asyncio.wait({reader, sender, failed}, return_when=asyncio.FIRST_COMPLETED)
        if reader in done and (exc := reader.exception()) is not None and not isinstance(exc, WebSocketDisconnect):
            log.error("pcm reader failed", exc_info=exc, extra={"session_id": call.session})
            _count(stats, "pcm_error_internal")
            transport.end_reason = f"error: {type(exc).__name__}"
        if sender in done and (exc := sender.exception()) is not None and not transport.closing:
            # Writing failed: the client is gone.
            transport.end_reason = "client dropped"
        if sender not in done and transport.closing:
            # Closing (hang-up message, agent's end, failure): let the sender
            # write the close; a client that does not read never takes it.
            await asyncio.wait({sender}, timeout=CLOSE_TIMEOUT + 1)
    finally:
        transport.closing = True
        ticker.remove(transport)
        for task in (reader, sender, failed):
            task.cancel()
        await asyncio.gather(reader, sender, failed, return_exceptions=True)
        await call.end(transport.end_reason)


async def _on_text(call: Call, transport: PcmSocket, text: str) -> None:
    try:
        msg = json.loads(text)
        kind = msg["type"]
    except (ValueError, KeyError, TypeError):
        await transport.send_notice({"type": "error", "error": "text messages must be JSON objects with a 'type'"})
        return
    if kind == "dtmf" and isinstance(msg.get("digit"), str) and len(msg["digit"]) == 1 and msg["digit"] in "0123456789*#":
        await call.dtmf(msg["digit"])
    elif kind == "paused" and (answer := pause_answer(msg)) is not None:
        call.client_paused(*answer)
    elif kind == "hello":
        call.client_answers = msg.get("answers_pause") is True
    elif kind == "hangup":
        transport.closing = True
        transport.end_reason = "client hung up"
        transport._put((1000, "hung up"))
    elif kind == "paused":
        await transport.send_notice({"type": "error", "error": "paused needs an integer 'run' and 'unplayed_ms' (0-60000)"})
    else:
        await transport.send_notice({"type": "error", "error": f"unknown message type {kind!r}"})

