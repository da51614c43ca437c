"""Twilio Media Streams transport: the voice webhook and the media WebSocket.

``POST /twilio/voice`` is the phone number's voice webhook. It checks
``X-Twilio-Signature`` (form bodies, and JSON bodies with ``bodySHA256``);
without TWILIO_AUTH_TOKEN every Twilio endpoint refuses to work (503), unless
PARLEY_TWILIO_INSECURE=1 says this is local development. It answers TwiML
``<Connect><Stream url="wss://PUBLIC_HOST/twilio/media">`` whose
``<Parameter>``s carry a one-time stream token and the session's settings
(the webhook URL's query parameters, and the caller's number).

``/twilio/media`` is the bidirectional stream Twilio then opens. One socket is
one ``Call``:

* inbound: ``media`` (base64 μ-law 8 kHz) -> PCM16 -> 16 kHz (stateful
  resampler) -> ``call.feed``; and, first, the μ-law bytes unchanged ->
  ``call.feed_native`` (published only when the session's ASR provider takes
  μ-law as it is: Deepgram); ``dtmf`` -> ``call.dtmf``; ``stop`` ends it;
* outbound: the playout's 8 kHz frames -> μ-law -> ``media`` messages, kept
  ``PARLEY_TWILIO_LEAD_MS`` ahead of what Twilio plays; a ``mark`` (``run.chunk.seq.gen``)
  every ``PARLEY_TWILIO_MARK_MS`` of audio and after each chunk's last frame;
* PausePlayback: Twilio's buffer must not outlive the pause, so the gateway
  sends ``clear`` and keeps what the echoed marks do not prove heard
  (``twilio_protocol.FarEnd``). ResumePlayback sends that first, starting
  exactly at the last mark Twilio echoed as played: nothing skipped, and
  nothing heard twice beyond one mark interval plus the echo's round trip.
  FlushPlayback: ``clear`` (if Twilio still holds any of it) and forget;
* playback progress: a chunk is reported started when its first frame is
  sent, and finished only when Twilio echoes its chunk-end mark in the
  current clear generation (Twilio also echoes the marks a ``clear``
  dropped); right after a pause's clear, the proven position in the chunk
  (``finished=False, played_ms``);
* keys out (SendDigits): Media Streams cannot send DTMF, so the call is
  updated through the REST API with ``<Play digits>`` then ``<Connect><Stream>``
  back to us. Twilio stops this stream (the call goes on), plays the keys,
  and opens a new stream whose ``start`` names the session (``session``,
  ``rejoin=1``, a fresh one-time token for the same CallSid): that stream
  adopts the waiting ``Call`` (``Rejoin``), nothing is started again, and
  the reducer is told the keys were pressed (DigitsSent). Between the two
  streams the call is ``Parked``; a stream that does not come back within
  ``REJOIN_S`` ends the call.

The protocol decisions live in ``twilio_protocol`` (pure); this module is the
I/O around them. Any protocol error ends that one session: it is logged,
counted in the gateway stats (``twilio_error_<kind>``), and the socket closed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections import deque
from urllib.parse import parse_qsl, urlencode

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import Response
from starlette.websockets import WebSocketDisconnect, WebSocketState

from parley import session_params, subjects
from parley.audio import Mark, Resampler, pcm16_to_ulaw, ulaw_samples
from parley.contract import SendDigits

from . import auth
from . import twilio_protocol as tp
from . import twilio_rest
from .admission import CLOSE_TRY_AGAIN
from .call import FRAME_MS, Call, Switchboard
from .settings import Settings
from .tasks import TaskSet

OUTBOUND_PREFIX = "outbound-"

log = logging.getLogger("parley.gateway")

RATE = tp.MEDIA_RATE
ASR_RATE = 16000
# Audio kept queued at Twilio ahead of what the caller hears
# (PARLEY_TWILIO_LEAD_MS, per socket as ``self.lead_s``). Pacing at exactly
# real time turns every scheduling hiccup of this process into a gap on the
# phone; a lead absorbs them. A pause or a flush clears it at once, so it
# costs the audible stop nothing.
BACKLOG_FRAMES = 250  # 5 s of audio not yet written to the socket: Twilio is not reading
FEED_SLICE = ASR_RATE * 2  # feed the call at most 1 s of 16 kHz PCM16 per publish
NATIVE_SLICE = RATE  # and of μ-law (one byte a sample)
MAX_WEBHOOK_BODY = 64 * 1024
CLOSE_POLICY = 1008  # WebSocket close code: policy violation
CLOSE_TOO_BIG = 1009
CLOSE_ERROR = 1011
CLOSE_TIMEOUT = 2.0  # a peer that does not read may not take the close frame either
# Pressing keys: the new stream must start this long after Twilio accepted the
# call update, plus the keys' own time (a w is half a second).
REJOIN_S = 20.0
REJOIN_PARAM = "rejoin"


class Rejoin:
    """A call whose stream Twilio is replacing (keys pressed through a call
    update): its ``Call`` waits here for the new stream of the same CallSid."""

    def __init__(self, call: Call, call_sid: str, press: SendDigits):
        self.call = call
        self.call_sid = call_sid
        self.press = press
        self.adopted = False
        self.waiting: asyncio.Task | None = None  # the deadline, once the old stream is gone


class Parked:
    """The transport of a call between two streams: nothing plays, nothing is
    heard. If the agent ends the call meanwhile, it is hung up."""

    kind = "twilio"
    rate = RATE
    reports_playback = True

    def __init__(self, socket: "TwilioSocket", rejoin: Rejoin):
        self.socket = socket
        self.rejoin = rejoin

    async def send_notice(self, notice: dict) -> None:
        pass

    def on_pause(self, run: int) -> None:
        pass

    def on_resume(self, run: int) -> None:
        pass

    async def on_flush(self, run: int) -> None:
        pass

    async def close(self, reason: str) -> None:
        await self.socket._end_parked(self.rejoin, f"agent ended the call: {reason}", hang_up=True)

    def fail(self, reason: str, kind: str) -> None:
        _count(self.socket.stats, f"twilio_error_{kind}")
        self.rejoin.call.tasks.spawn(self.socket._end_parked(self.rejoin, f"error: {reason}", hang_up=True), "twilio-parked-fail")


def _count(stats: dict, key: str, n: int = 1) -> None:
    stats[key] = stats.get(key, 0) + n


class TwilioSocket:
    """One Twilio media stream: the ``Transport`` a ``Call`` talks to."""

    kind = "twilio"
    rate = RATE
    reports_playback = True
    native = f"mulaw/{RATE}"  # what the caller's audio is before decoding (AsrClaim.native)

    def __init__(self, ws: WebSocket, board: Switchboard, ticker, settings: Settings, tokens: tp.StreamTokens | None, rejoins: dict | None = None, gate: auth.Gate | None = None):
        self.ws = ws
        self.board = board  # what the call gets (built once the stream's parameters are known)
        self.admission = board.admission
        self.rejoins: dict[str, Rejoin] = rejoins if rejoins is not None else {}
        self.rejoin: Rejoin | None = None  # keys being pressed: this stream is being replaced
        self.nc = board.nc
        self.ticker = ticker
        self.stats = board.stats
        self.settings = settings
        self.tokens = tokens  # None: no token required (no auth token configured)
        self.gate = gate  # checks the stream's parameters (None: taken as they are)
        self.loop = asyncio.get_running_loop()
        self.call: Call | None = None
        self.stream_sid = ""
        self.call_sid = ""
        self.far = tp.FarEnd(mark_every=max(1, settings.twilio_mark_ms // FRAME_MS))
        self.lead_s = settings.twilio_lead_ms / 1000
        # Frames between two marks go in one media message (Twilio takes any
        # size): the tick refills the lead a mark interval at a time, once
        # Twilio's buffer is that much short of it (with a mark every frame,
        # every tick, as one frame).
        self.refill_s = min(self.lead_s, self.far.mark_every * FRAME_MS / 1000) - FRAME_MS / 1000
        self.joining: list[bytes] = []  # μ-law of frames sent since the last mark, not in the outbox yet
        self.max_pulls = 1 + settings.twilio_lead_ms // FRAME_MS  # frames one tick may send (refilling the lead)
        self.replay: deque[tp.Sent] = deque()  # unheard audio a pause's clear took back
        self.held: set[int] = set()  # runs paused: their replay waits
        self.media_queued = 0  # frames in the outbox's media messages
        self.resampler = Resampler(RATE, ASR_RATE)
        self.outbox: deque[tuple[str, object]] = deque()
        self.wake = asyncio.Event()
        self.ahead_until = 0.0  # loop time at which Twilio runs out of our audio (predicted)
        self.last_seq: int | None = None
        self.closing = False
        self.close_queued = False
        self.end_reason = "twilio stream closed"
        self.failed = asyncio.Event()
        self.tasks = TaskSet(board.stats, on_error=self._task_failed, context=lambda: self._log_extra())

    def _log_extra(self, **kw) -> dict:
        return {"session_id": self.call.session if self.call else None, "stream_sid": self.stream_sid, "call_sid": self.call_sid, **kw}

    # ------------------------------------------------------------ outbound
    def tick(self) -> None:
        """Called by the Ticker every 20 ms: keep Twilio ``lead_s`` ahead."""
        if self.call is None or self.closing or self.rejoin is not None:
            return  # (being replaced: what the playout holds waits for the next stream)
        if self.media_queued > BACKLOG_FRAMES:
            self.fail(f"Twilio is not reading: {self.media_queued * FRAME_MS / 1000:.1f} s of audio unsent", "backlog")
            return
        now = self.loop.time()
        if self.ahead_until >= now + self.lead_s - self.refill_s:
            return  # Twilio holds enough: the next refill is a whole mark interval
        try:
            for _ in range(self.max_pulls + self.far.mark_every):
                if self.closing or (self.ahead_until >= now + self.lead_s and not self.far.since_mark) or not self._send_next(now):
                    return  # (a mark interval begun is sent whole: the lead may grow by less than one)
        finally:
            self._join()

    def _send_next(self, now: float) -> bool:
        """Send the next frame: audio a clear took back first (unless its run is
        paused), then the playout's. False when there is nothing to send."""
        if self.replay:
            if self.replay[0].run in self.held:
                return False
            frame = self.replay.popleft() if isinstance(self.replay[0], tp.Frame) else None
            ends = []
            while self.replay and isinstance(self.replay[0], tp.ChunkEnd):
                ends.append(self.replay.popleft())
            if frame is not None:
                _count(self.stats, "twilio_frames_replayed")
            self._emit(frame, ends, now)
            return True
        pcm, marks = self.call.take_frame()
        ends = [tp.ChunkEnd(m.run, m.chunk, m.played_ms) for m in marks if m.kind == "finished"]
        frame = None
        if pcm is not None:
            if marks and marks[-1].kind == "finished":
                where = (marks[-1].run, marks[-1].chunk, marks[-1].played_ms)
            else:
                where = self.call.playout.position or (self.call.playout.current_run or 0, 0, 0)
            frame = tp.Frame(where[0], where[1], where[2], pcm16_to_ulaw(pcm))
        if frame is None and not ends:
            return False
        self._emit(frame, ends, now)
        return frame is not None

    def _emit(self, frame: tp.Frame | None, ends: list[tp.ChunkEnd], now: float) -> None:
        """A frame (and the marks after it) into the outbox, in order."""
        if frame is not None:
            self.ahead_until = max(self.ahead_until, now) + FRAME_MS / 1000
            self.joining.append(frame.audio)
        name = self.far.sent(frame, ends)
        if name is not None:
            self._join()
            self._put("mark", tp.mark_message(self.stream_sid, name))

    def _join(self) -> None:
        """The frames sent since the last mark, as one media message."""
        if self.joining:
            n = len(self.joining)
            self._put("media", (tp.media_message(self.stream_sid, b"".join(self.joining)), n))
            self.media_queued += n
            self.joining.clear()

    def _put(self, kind: str, item: object) -> None:
        self.outbox.append((kind, item))
        self.wake.set()

    def _drop_unsent(self, keep=lambda kind: kind not in ("media", "mark")) -> int:
        """Take media and marks not yet written out of the outbox (they are in
        the far-end record: a replay sends them again if they are needed)."""
        before = self.media_queued
        self.outbox = deque(item for item in self.outbox if keep(item[0]))
        self.media_queued = 0
        return before

    async def send_notice(self, notice: dict) -> None:
        pass  # Twilio has no channel for the page's notices

    def on_pause(self, run: int) -> None:
        """Playback of ``run`` pauses: what Twilio holds of it must not go on
        playing. Clear it, and keep what the caller's marks do not prove heard
        for a resume."""
        self.held.add(run)
        if not self.far.holds_audio(runs_from=run):
            return
        unsent = self._drop_unsent()
        unheard = self.far.clear()
        self.replay.extendleft(reversed(unheard))
        self.ahead_until = 0.0  # Twilio's buffer is empty after the clear
        self._put("clear", tp.clear_message(self.stream_sid))
        _count(self.stats, "twilio_clears")
        _count(self.stats, "twilio_pause_clears")
        proven = self.far.proven
        if self.call is not None and proven is not None and proven.run == run and not proven.finished:
            self.call.heard(proven.run, proven.chunk, False, proven.played_ms, at_pause=True)
        log.info(
            "twilio clear sent (pause)",
            extra=self._log_extra(run_id=run, unheard_ms=sum(FRAME_MS for i in unheard if isinstance(i, tp.Frame)), unsent_frames=unsent),
        )

    def on_resume(self, run: int) -> None:
        """Playback of ``run`` resumes: the audio a pause's clear took back goes
        first (from the tick), then the playout's."""
        self.held.discard(run)
        if self.replay:
            _count(self.stats, "twilio_resumes_replayed")
        self.tick()

    async def on_flush(self, run: int) -> None:
        """``run`` (and older runs) are cancelled: nothing more of them plays."""
        self.held = {r for r in self.held if r > run}
        stale = [i for i in self.replay if i.run <= run]
        self.replay = deque(i for i in self.replay if i.run > run)
        if not self.far.holds_audio() and not any(kind == "media" for kind, _ in self.outbox):
            return  # nothing of it at Twilio (a pause cleared it already)
        dropped = self._drop_unsent()
        if dropped:
            _count(self.stats, "twilio_frames_dropped_unsent", dropped)
        unheard = self.far.clear()
        self.replay.extendleft(reversed([i for i in unheard if i.run > run]))
        self.ahead_until = 0.0
        self._put("clear", tp.clear_message(self.stream_sid))
        _count(self.stats, "twilio_clears")
        log.info("twilio clear sent", extra=self._log_extra(run_id=run, stale_replay=len(stale), unsent_frames_dropped=dropped))

    async def close(self, reason: str) -> None:
        """The agent ended the session: hang up through the REST API when
        configured, then close the socket (which ends the stream anyway)."""
        if self.closing:
            return
        self.closing = True
        self.end_reason = f"agent ended the call: {reason}"
        self.tasks.spawn(self._hang_up_and_close(), "twilio-hang-up")

    async def transfer(self, number: str, warm: bool, summary: str) -> None:
        """The agent put the caller through: redirect the call to ``<Dial>``
        through the REST API (the stream then ends; the call goes on)."""
        if self.closing:
            return
        self.closing = True
        self.end_reason = f"transferred to {number}"
        self.tasks.spawn(self._transfer_and_close(number, warm, summary), "twilio-transfer")

    # ------------------------------------------------------------ keys out
    def _stream_url(self) -> str:
        return tp.stream_url(self.settings.public_host, self.ws.headers.get("host", "localhost"), self.ws.url.scheme == "wss")

    async def send_digits(self, cmd: SendDigits) -> None:
        """Press keys: a call update with <Play digits> then <Connect><Stream>
        back to this session (see the module's header)."""
        call, s = self.call, self.settings
        assert call is not None
        why = ""
        if self.rejoin is not None:
            why = "keys are being pressed already on this call"
        elif self.closing:
            why = "the call is ending"
        elif not (s.twilio_account_sid and s.twilio_auth_token and self.call_sid):
            why = "pressing keys needs the Twilio REST API (TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN)"
        params = {"session": call.session, REJOIN_PARAM: "1"}
        if self.tokens is not None:
            params["token"] = self.tokens.issue(self.call_sid, time.time())
        if not why:
            try:
                twiml = tp.twiml_press_then_stream(cmd.digits, self._stream_url(), params)
            except ValueError as exc:
                why = str(exc)
        if why:
            log.error("keys not pressed: %s", why, extra=self._log_extra(digits=cmd.digits))
            _count(self.stats, "twilio_digits_failed")
            await call.digits_sent(cmd, why)
            return
        rejoin = self.rejoin = self.rejoins[call.session] = Rejoin(call, self.call_sid, cmd)
        ok = await twilio_rest.redirect(s.twilio_api_base, s.twilio_account_sid, s.twilio_auth_token, self.call_sid, twiml)
        if not ok:
            self.rejoins.pop(call.session, None)
            self.rejoin = None
            _count(self.stats, "twilio_digits_failed")
            log.error("keys not pressed: Twilio refused the call update", extra=self._log_extra(digits=cmd.digits))
            await call.digits_sent(cmd, "Twilio refused the call update (the gateway's log has its answer)")
            if isinstance(call.transport, Parked):  # this stream ended meanwhile: nothing will come back
                await self._end_parked(rejoin, self.end_reason, hang_up=False, tell=False)
            else:
                self.tick()
            return
        log.info("keys pressed through a call update; the stream is being replaced", extra=self._log_extra(digits=cmd.digits))

    def _park(self, rejoin: Rejoin) -> None:
        """This stream is over and the next one is on its way: the call waits."""
        rejoin.call.transport = Parked(self, rejoin)
        wait = REJOIN_S + 0.5 * len(rejoin.press.digits)
        rejoin.waiting = rejoin.call.tasks.spawn(self._rejoin_deadline(rejoin, wait), "twilio-rejoin-deadline")

    async def _rejoin_deadline(self, rejoin: Rejoin, wait: float) -> None:
        await asyncio.sleep(wait)
        if not rejoin.adopted:
            _count(self.stats, "twilio_rejoin_timeouts")
            log.error("the call's stream did not come back after pressing keys: the call is ended", extra=self._log_extra(waited_s=wait))
            await self._end_parked(rejoin, "error: the stream did not come back after pressing keys", hang_up=True)

    async def _end_parked(self, rejoin: Rejoin, reason: str, hang_up: bool, tell: bool = True) -> None:
        """End a call waiting between two streams (the reducer is told the
        keys' fate first, unless it was told already)."""
        if rejoin.adopted or rejoin.call.closed:
            return
        self.rejoins.pop(rejoin.call.session, None)
        if tell and not reason.startswith("agent ended"):
            await rejoin.call.digits_sent(rejoin.press, reason)
        s = self.settings
        if hang_up and s.twilio_account_sid and s.twilio_auth_token:
            ok = await twilio_rest.hang_up(s.twilio_api_base, s.twilio_account_sid, s.twilio_auth_token, rejoin.call_sid)
            _count(self.stats, "twilio_hangups" if ok else "twilio_hangup_failures")
        current = asyncio.current_task()
        if rejoin.waiting is not None and rejoin.waiting is not current:
            rejoin.waiting.cancel()
        await rejoin.call.end(reason)

    async def _adopt(self, m: tp.Start, params: dict[str, str]) -> bool:
        """A stream coming back after keys were pressed takes its call over."""
        rejoin = self.rejoins.get(params.get("session", ""))
        if rejoin is None or rejoin.call_sid != m.call_sid or rejoin.call.closed:
            log.error("twilio stream refused: no call of this CallSid is waiting to rejoin", extra=self._log_extra(session=params.get("session", "")))
            _count(self.stats, "twilio_rejoin_refused")
            self.end_reason = "refused: nothing to rejoin"
            self._queue_close(CLOSE_POLICY, "no call to rejoin")
            return False
        del self.rejoins[rejoin.call.session]
        rejoin.adopted = True
        if rejoin.waiting is not None:
            rejoin.waiting.cancel()
        call = self.call = rejoin.call
        call.transport = self  # the old stream (if still closing) lets go of it
        self.ticker.add(self)
        _count(self.stats, "twilio_rejoins")
        _count(self.stats, "twilio_digits_pressed")
        log.info("twilio stream rejoined its call after pressing keys", extra=self._log_extra(digits=rejoin.press.digits))
        await call.digits_sent(rejoin.press)
        return True

    async def _transfer_and_close(self, number: str, warm: bool, summary: str) -> None:
        s = self.settings
        whisper = None
        if warm and summary:
            host = tp.normalize_host(s.public_host)
            base = f"https://{host}" if host else f"http://{self.ws.headers.get('host', 'localhost')}"
            whisper = f"{base}/twilio/whisper?{urlencode({'text': summary[:500]})}"
        ok = False
        if s.twilio_account_sid and s.twilio_auth_token and self.call_sid:
            ok = await twilio_rest.redirect(s.twilio_api_base, s.twilio_account_sid, s.twilio_auth_token, self.call_sid, tp.twiml_dial(number, whisper))
        _count(self.stats, "twilio_transfers" if ok else "twilio_transfer_failures")
        if not ok:
            log.error("transfer failed: the call is hung up", extra=self._log_extra(to=number))
            self.end_reason = "transfer failed"
            await self._hang_up_and_close()
            return
        self._queue_close(1000, "call transferred")

    async def _hang_up_and_close(self) -> None:
        s = self.settings
        if s.twilio_account_sid and s.twilio_auth_token and self.call_sid:
            ok = await twilio_rest.hang_up(s.twilio_api_base, s.twilio_account_sid, s.twilio_auth_token, self.call_sid)
            _count(self.stats, "twilio_hangups" if ok else "twilio_hangup_failures")
        self._queue_close(1000, "call ended")

    def _queue_close(self, code: int, reason: str, drop_pending: bool = False) -> None:
        """Close the socket once what is queued is written (or at once)."""
        self.closing = True
        if self.close_queued:
            return
        self.close_queued = True
        if drop_pending:
            self.outbox.clear()
            self.media_queued = 0
        self._put("close", (code, reason[:120]))

    def fail(self, reason: str, kind: str, code: int = CLOSE_ERROR) -> None:
        """Tear this session down from outside the reader (the Ticker, a
        command that could not be executed, a task that failed): the close
        frame carries the reason, the failure is logged and counted, and the
        call ends (``serve`` stops waiting for a sender stuck on a peer that
        does not read)."""
        if self.closing:
            return
        log.error("twilio stream failed: %s", reason, extra=self._log_extra(kind=kind))
        _count(self.stats, f"twilio_error_{kind}")
        self.end_reason = f"error: {reason}"
        self._queue_close(code, reason, drop_pending=True)
        self.failed.set()

    def _task_failed(self, name: str, exc: BaseException) -> None:
        self.fail(f"internal error in {name}: {type(exc).__name__}", "task")

    async def sender(self) -> None:
        while True:
            while not self.outbox:
                self.wake.clear()
                await self.wake.wait()
            kind, item = self.outbox.popleft()
            if kind == "close":
                code, reason = item  # type: ignore[misc]
                try:
                    await asyncio.wait_for(self.ws.close(code, reason), CLOSE_TIMEOUT)
                except Exception:  # noqa: BLE001 - the peer is gone, or does not read: nothing to close
                    pass
                return
            if kind == "media":
                item, frames = item  # type: ignore[misc]
                self.media_queued -= frames
            await self.ws.send_text(item)  # type: ignore[arg-type]

    # ------------------------------------------------------------- inbound
    async def reader(self) -> None:
        while True:
            msg = await self.ws.receive()
            if msg["type"] == "websocket.disconnect":
                if self.call is not None and not self.closing:
                    self.end_reason = "twilio stream dropped"
                    _count(self.stats, "twilio_dropped")
                    log.warning("twilio stream dropped without a stop message", extra=self._log_extra(code=msg.get("code")))
                return
            text = msg.get("text")
            if text is None:
                raise tp.ProtocolError("invalid_message", "binary WebSocket message; Twilio sends JSON text")
            if not await self.handle(tp.parse(text)):
                return

    # long: a match over Twilio's message kinds, one case each
    async def handle(self, m: tp.Inbound) -> bool:
        """One message from Twilio; False when the stream is over."""
        if not isinstance(m, tp.Connected):
            if self.last_seq is not None and m.sequence != self.last_seq + 1:
                _count(self.stats, "twilio_sequence_gaps")
            self.last_seq = m.sequence
        if self.rejoin is not None and self.rejoin.adopted:
            return not isinstance(m, tp.Stop)  # replaced: the new stream carries the call
        match m:
            case tp.Media():
                if self.call is None:
                    raise tp.ProtocolError("out_of_order", "media before start")
                if m.track not in ("inbound", "inbound_track"):
                    return True  # only the caller's track is ours to hear
                for i in range(0, len(m.audio), NATIVE_SLICE):
                    await self.call.feed_native(m.audio[i : i + NATIVE_SLICE])
                pcm = self.resampler.process_samples(ulaw_samples(m.audio))
                for i in range(0, len(pcm), FEED_SLICE):
                    await self.call.feed(pcm[i : i + FEED_SLICE])
            case tp.MarkEcho():
                if self.call is None:
                    raise tp.ProtocolError("out_of_order", "mark before start")
                played: list[tp.Frame] | None = [] if self.call.recorder is not None else None
                heard = self.far.echoed(m.name, played)
                if played:
                    self.call.heard_audio(b"".join(f.audio for f in played), time.time())
                if isinstance(heard, str):
                    _count(self.stats, f"twilio_marks_{heard}")
                else:
                    for h in heard:
                        if h.finished:  # positions within a chunk stay here: see on_pause
                            self.call.heard(h.run, h.chunk, True, h.played_ms)
            case tp.Dtmf():
                if self.call is None:
                    raise tp.ProtocolError("out_of_order", "dtmf before start")
                await self.call.dtmf(m.digit)
            case tp.Start():
                return await self._start(m)
            case tp.Stop():
                if self.call is None:
                    raise tp.ProtocolError("out_of_order", "stop before start")
                self.end_reason = "stream replaced to press keys" if self.rejoin is not None else "caller hung up"
                return False
            case tp.Connected():
                if self.call is not None:
                    raise tp.ProtocolError("out_of_order", "connected after start")
        return True

    # long: Twilio's start message: the checks of its documented fields, then the call, in protocol order
    async def _start(self, m: tp.Start) -> bool:
        if self.call is not None:
            raise tp.ProtocolError("out_of_order", "a second start on the same stream")
        self.stream_sid, self.call_sid = m.stream_sid, m.call_sid
        params = {k: v for k, v in m.custom_parameters.items() if k != "token"}
        if self.tokens is not None:
            try:
                self.tokens.redeem(m.custom_parameters.get("token", ""), m.call_sid, time.time())
            except tp.TokenError as exc:
                log.error("twilio stream refused: %s", exc, extra=self._log_extra())
                _count(self.stats, "twilio_token_refused")
                self.end_reason = f"refused: {exc}"
                self._queue_close(CLOSE_POLICY, "invalid stream token")
                return False
        if params.get(REJOIN_PARAM) == "1":
            return await self._adopt(m, params)
        if self.gate is not None:
            try:
                params = _session_params(self.gate, params)
            except auth.Refused as exc:
                log.error("twilio stream refused: %s", exc, extra=self._log_extra())
                _count(self.stats, "twilio_params_refused")
                self.end_reason = f"refused: {exc}"
                self._queue_close(CLOSE_POLICY, str(exc))
                return False
        if self.admission is not None and self.admission.full:
            # Twilio's webhook refuses busy calls before they get here; a
            # stream without one (or in the instant between) is closed:
            # Twilio then goes on with the TwiML after <Connect>, or hangs up.
            self.end_reason = "refused: " + self.admission.refuse("twilio")
            self._queue_close(CLOSE_TRY_AGAIN, f"all lines are busy: {self.admission.which} full")
            return False
        call = Call(self.board, self, session=_placed_session(params.get("session", "")))
        try:
            await call.start(params=params, caller=params.get("caller", ""))
        except RuntimeError as exc:
            log.error("twilio call could not start: %s", exc, extra=self._log_extra())
            _count(self.stats, "twilio_start_failed")
            await call.end(f"error: {exc}")
            self._queue_close(CLOSE_ERROR, "no speech recognizer available")
            return False
        self.call = call
        self.ticker.add(self)
        _count(self.stats, "twilio_calls")
        log.info("twilio stream started", extra=self._log_extra(tracks=list(m.tracks)))
        return True

    # ---------------------------------------------------------------- life
    async def serve(self) -> None:
        await self.ws.accept()
        sender = asyncio.create_task(self.sender(), name="twilio-sender")
        reader = asyncio.create_task(self.reader(), name="twilio-reader")
        failed = asyncio.create_task(self.failed.wait(), name="twilio-failed")
        try:
            done, _ = await asyncio.wait({reader, sender, failed}, return_when=asyncio.FIRST_COMPLETED)
            if reader in done:
                if (exc := reader.exception()) is not None:
                    self._on_reader_error(exc)
                # Let the sender write what is queued and the close, briefly.
                self._queue_close(1000, "stream over")
                if not sender.done():
                    await asyncio.wait({sender}, timeout=1.0)
            elif sender in done:
                if (exc := sender.exception()) is not None and not self.closing:
                    self.end_reason = "twilio stream dropped"
                    _count(self.stats, "twilio_dropped")
                    log.warning("twilio stream dropped while sending: %s", exc, extra=self._log_extra())
            elif not sender.done():
                # fail(): the close is queued; a sender stuck on a peer that does
                # not read never gets to it.
                await asyncio.wait({sender}, timeout=CLOSE_TIMEOUT + 1)
        finally:
            self.closing = True
            self.ticker.remove(self)
            self.tasks.cancel()
            for task in (reader, sender, failed):
                task.cancel()
            await asyncio.gather(reader, sender, failed, return_exceptions=True)  # retrieved: handled above
            if self.rejoin is not None and (self.rejoin.adopted or self.rejoin.call.closed):
                pass  # the next stream has the call
            elif self.rejoin is not None:
                self._park(self.rejoin)
            elif self.call is not None:
                await self.call.end(self.end_reason)
            if self.ws.application_state == WebSocketState.CONNECTED:
                try:
                    await asyncio.wait_for(self.ws.close(1000), CLOSE_TIMEOUT)
                except Exception:  # noqa: BLE001 - the peer may be gone already
                    pass

    def _on_reader_error(self, exc: BaseException) -> None:
        if isinstance(exc, tp.ProtocolError):
            log.error("twilio protocol error: %s", exc, extra=self._log_extra(kind=exc.kind))
            _count(self.stats, f"twilio_error_{exc.kind}")
            self.end_reason = f"protocol error: {exc.kind}"
            self._queue_close(CLOSE_TOO_BIG if exc.kind == "oversized" else CLOSE_POLICY, str(exc), drop_pending=True)
        elif isinstance(exc, WebSocketDisconnect):
            self.end_reason = "twilio stream dropped"
            _count(self.stats, "twilio_dropped")
        else:
            log.error("twilio stream failed", exc_info=exc, extra=self._log_extra())
            _count(self.stats, "twilio_error_internal")
            self.end_reason = f"error: {type(exc).__name__}"


def _placed_session(session: str) -> str | None:
    """The session id an outbound call was placed with (``POST /api/calls``
    made it, so its status callbacks and its stream share one log), or None."""
    if not session.startswith(OUTBOUND_PREFIX):
        return None
    try:
        return subjects.session_token(session)
    except ValueError:
        return None


def _token_secret(auth_token: str) -> bytes | None:
    """Stream tokens are keyed by a key derived from the auth token (so every
    replica accepts the others' tokens), or a random per-process key."""
    if not auth_token:
        return None
    return hmac.new(auth_token.encode(), b"parley twilio stream tokens", hashlib.sha256).digest()


TWILIO_OFF = (
    "the Twilio endpoints are off: set TWILIO_AUTH_TOKEN (every request is then checked against "
    "X-Twilio-Signature), or PARLEY_TWILIO_INSECURE=1 for local development without one"
)


def _text(status: int, text: str) -> Response:
    return Response(text, status_code=status, media_type="text/plain")


def twilio_refusal(settings: Settings) -> str | None:
    """Why the Twilio endpoints do not work (fail closed), or None."""
    return None if settings.twilio_auth_token or settings.twilio_insecure else TWILIO_OFF


async def webhook_fields(request: Request, settings: Settings, stats: dict) -> tuple[dict[str, str], Response | None]:
    """A Twilio webhook's fields, once proven to come from Twilio (or the
    reason it is refused, as the response to send). Form bodies and JSON
    bodies (``bodySHA256``) alike; without TWILIO_AUTH_TOKEN only in the
    insecure development mode."""
    if (off := twilio_refusal(settings)) is not None:
        _count(stats, "twilio_refused_off")
        log.error("twilio request refused: %s", off, extra={"path": request.url.path})
        return {}, _text(503, off)
    body = await request.body()
    if len(body) > MAX_WEBHOOK_BODY:
        return {}, _text(413, "request too large")
    url = tp.public_url(settings.public_host, str(request.url))
    json_body = tp.body_sha256(url) is not None or request.headers.get("content-type", "").startswith("application/json")
    try:
        if settings.twilio_auth_token:
            form = tp.verify_webhook(settings.twilio_auth_token, url, body, request.headers.get("x-twilio-signature"))
            if form is None:
                _count(stats, "twilio_bad_signature")
                log.warning("twilio request refused: X-Twilio-Signature does not match", extra={"url": url, "signed": "x-twilio-signature" in request.headers})
                return {}, _text(403, "invalid signature")
        else:
            form = [] if json_body else parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        if json_body:
            data = json.loads(body or b"{}")
            if not isinstance(data, dict):
                raise ValueError("not an object")
            form = [(str(k), v if isinstance(v, str) else json.dumps(v)) for k, v in data.items()]
    except (UnicodeDecodeError, ValueError):
        return {}, _text(400, "the body must be application/x-www-form-urlencoded (or a JSON object with bodySHA256)")
    return dict(form), None


def _session_params(gate: auth.Gate, given: dict[str, str]) -> dict[str, str]:
    """What a webhook URL or a stream's parameters set for the session: the
    gateway's own keys as they are, the rest checked against what the
    deployment allows (raises auth.Refused)."""
    own = {k: v for k, v in given.items() if k in session_params.RESERVED}
    return {**gate.params({k: v for k, v in given.items() if k not in session_params.RESERVED and k != "token"}), **own}


def register(app: FastAPI, state: dict, settings: Settings) -> None:
    """Add ``POST /twilio/voice`` and the ``/twilio/media`` WebSocket.
    ``state`` gets "nc", "ticker" and "stats" from the app's lifespan."""
    require_token = bool(settings.twilio_auth_token)
    tokens = tp.StreamTokens(_token_secret(settings.twilio_auth_token))
    if twilio_refusal(settings) is None and not require_token:
        log.warning("PARLEY_TWILIO_INSECURE: the Twilio endpoints take unsigned requests and streams without a token (local development only)")

    @app.post("/twilio/voice")
    async def twilio_voice(request: Request):
        stats = state["stats"]
        fields, refused = await webhook_fields(request, settings, stats)
        if refused is not None:
            return refused
        call_sid = fields.get("CallSid", "")
        if not call_sid or not call_sid.isascii() or not call_sid.isalnum() or len(call_sid) > 64:
            return Response("CallSid missing or invalid", status_code=400, media_type="text/plain")
        admission = state.get("admission")
        if admission is not None and admission.full:
            admission.refuse("twilio")
            return Response(tp.twiml_reject_busy(), media_type="text/xml", headers=admission.headers())
        try:
            params = _session_params(state["gate"], {k: v for k, v in request.query_params.items() if k not in ("token", "bodySHA256")})
        except auth.Refused as exc:
            _count(stats, "twilio_params_refused")
            log.error("twilio call refused: %s", exc, extra={"call_sid": call_sid})
            return _text(exc.status, str(exc))
        # The person on the line: who called us, or whom we called.
        person = fields.get("To") if fields.get("Direction", "").startswith("outbound") else fields.get("From")
        if person:
            params["caller"] = person
        if require_token:
            params = {"token": tokens.issue(call_sid, time.time()), **params}
        url = tp.stream_url(settings.public_host, request.headers.get("host", "localhost"), request.url.scheme == "https")
        _count(stats, "twilio_webhooks")
        log.info("twilio call answered", extra={"call_sid": call_sid, "stream_url": url})
        return Response(tp.twiml_connect_stream(url, params), media_type="text/xml")

    @app.websocket("/twilio/media")
    async def twilio_media(ws: WebSocket):
        stats = state["stats"]
        if (off := twilio_refusal(settings)) is not None:
            _count(stats, "twilio_refused_off")
            log.error("twilio stream refused: %s", off)
            await ws.accept()
            await ws.close(CLOSE_POLICY, "Twilio endpoints are off: set TWILIO_AUTH_TOKEN")
            return
        if settings.twilio_auth_token and "x-twilio-signature" in ws.headers:
            # Twilio signs the upgrade over the stream URL. The one-time token
            # is what protects the stream; this is a diagnostic for set-up.
            url = tp.stream_url(settings.public_host, ws.headers.get("host", ""), True)
            if not tp.valid_signature(settings.twilio_auth_token, url, [], ws.headers["x-twilio-signature"]):
                _count(stats, "twilio_ws_signature_mismatch")
                log.warning("twilio stream upgrade signature does not match (is PUBLIC_HOST right?)", extra={"url": url})
        rejoins = state.setdefault("twilio_rejoins", {})
        await TwilioSocket(ws, state["switchboard"], state["ticker"], settings, tokens if require_token else None, rejoins, gate=state["gate"]).serve()
