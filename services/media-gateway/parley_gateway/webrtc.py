"""WebRTC transport: the browser page talks to the agent over one RTCPeerConnection.

``POST /webrtc/offer`` takes the browser's SDP offer (ICE candidates included:
the page waits for gathering, there is no trickle) and answers with aiortc.
The JSON body is ``{"sdp", "type": "offer", "token", "params"?}``: the
one-time session token (``POST /api/sessions``) and session parameters the
deployment allows (``auth.Gate.admit``). Each offer is one ``Call``:

* inbound: the caller's Opus track arrives as 48 kHz stereo ``av.AudioFrame``s;
  they are downmixed, resampled to 16 kHz and fed to the call packet by packet
  (20 ms). aiortc's receiver would hold 4 packets before decoding; it holds
  ``PARLEY_WEBRTC_JITTER_FRAMES`` (2) instead, so the VAD hears the caller
  40 ms sooner (``shorten_jitter_buffer``);
* outbound: ``CallTrack`` is pulled by aiortc's sender every 20 ms; it takes
  ``call.next_frame()`` (48 kHz mono) at absolute deadlines and sends silence
  when nothing plays, so the RTP stream never stalls;
* notices (the same JSON objects ``/ws/pcm`` sends) go over the RTCDataChannel
  named ``events`` that the page opens; the page sends ``{"type": "dtmf"}`` and
  ``{"type": "hangup"}`` on it. Two more, WebRTC only: ``{"type": "pause",
  "run"}`` and ``{"type": "resume", "run"}`` the moment the agent's playback
  pauses or resumes, so the page silences what the browser's jitter buffer
  still holds (the audible stop, docs/BENCHMARKS.md section 3b); the page
  answers ``{"type": "paused", "run", "unplayed_ms"}``, how much of the run it
  silenced unplayed, which the gateway plays again on resume
  (``call.Call.client_paused``; the page says ``{"type": "hello",
  "answers_pause": true}`` once the channel opens);

Playback progress comes from the playout marks as frames are pulled
(``reports_playback = False``): the browser's jitter buffer adds a few tens of
ms that the gateway cannot see.

ICE uses no STUN server unless ``settings.ice_servers`` names some: aiortc
would otherwise ask Google's, which fails without internet and delays every
answer.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import logging
import time

import av
from aiortc import MediaStreamTrack, RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc import sdp as aiortc_sdp
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from parley.audio import Resampler, stereo_to_mono

from . import auth
from .call import FRAME_MS, Call, Switchboard, pause_answer
from .settings import Settings
from .tasks import TaskSet

log = logging.getLogger("parley.gateway")

RATE = 48000  # Opus runs at 48 kHz; the outbound track is 48 kHz mono
FRAME_SAMPLES = RATE * FRAME_MS // 1000
SILENCE = bytes(FRAME_SAMPLES * 2)
TIME_BASE = fractions.Fraction(1, RATE)
ASR_RATE = 16000
# Feed the call every 20 ms packet as it comes: batching two would make the
# VAD hear the caller 10 ms later on average (the pause path starts there).
FEED_BYTES = ASR_RATE * FRAME_MS // 1000 * 2
MAX_SDP = 64_000  # a browser offer is a few kB
MAX_CHANNEL_MESSAGE = 4096
NOTICE_BACKLOG = 500  # notices held until the data channel opens
# Notices written to the data channel and not yet taken by the page: a page
# this far behind has stopped reading (a frozen tab); it is failed.
CHANNEL_BACKLOG_BYTES = 1 << 20
CONNECT_TIMEOUT = 30.0  # offer answered but ICE never connected: give up
# Browsers send a packet every 20 ms even for a muted microphone, so a long gap
# means the caller is gone (tab killed, network down). ICE consent would notice
# too, but only after about 30 s.
INBOUND_TIMEOUT = 10.0
RESYNC_AFTER = 0.2  # s behind schedule before the track stops catching up
DTMF_DIGITS = frozenset("0123456789*#")


class OfferError(ValueError):
    """The offer cannot be answered; the message says why (it goes to the client)."""


def parse_offer(body: object) -> tuple[str, dict[str, str]]:
    """Validate ``{"sdp", "type": "offer", "params"?}``; return (sdp, params)."""
    if not isinstance(body, dict):
        raise OfferError('the body must be a JSON object {"sdp": ..., "type": "offer"}')
    sdp, kind, params = body.get("sdp"), body.get("type"), body.get("params", {})
    if not isinstance(body.get("token", ""), str):
        raise OfferError('"token" must be a string (from POST /api/sessions)')
    if kind != "offer":
        raise OfferError(f'"type" must be "offer", got {kind!r}')
    if not isinstance(sdp, str) or not sdp.strip():
        raise OfferError('"sdp" must be a non-empty string')
    if len(sdp) > MAX_SDP:
        raise OfferError(f"the SDP is too large ({len(sdp)} characters, max {MAX_SDP})")
    if not sdp.lstrip().startswith("v=0"):
        raise OfferError("invalid SDP offer: it must start with v=0")
    if params is None:
        params = {}
    if not isinstance(params, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in params.items()):
        raise OfferError('"params" must be an object of strings')
    return sdp, params


def check_audio(sdp: str) -> None:
    """The offer must carry the caller's microphone: an m=audio section that sends."""
    try:
        media = aiortc_sdp.SessionDescription.parse(sdp).media
    except Exception as exc:  # noqa: BLE001 - the parser raises whatever it trips on
        raise OfferError(f"invalid SDP offer: {type(exc).__name__}: {exc}") from None
    audio = [m for m in media if m.kind == "audio"]
    if not audio:
        raise OfferError("invalid SDP offer: it has no audio (m=audio) section")
    if not any(m.direction in (None, "sendrecv", "sendonly") for m in audio):  # none means sendrecv
        raise OfferError("invalid SDP offer: its audio section does not send the caller's microphone")


def channel_request(text: str) -> tuple[str, object]:
    """A data-channel message -> ("dtmf", digit) | ("hangup", "") |
    ("paused", (run, unplayed_ms)) | ("hello", answers_pause) | ("error", why)."""
    if len(text) > MAX_CHANNEL_MESSAGE:
        return "error", f"message too large ({len(text)} characters, max {MAX_CHANNEL_MESSAGE})"
    try:
        msg = json.loads(text)
        kind = msg["type"]
    except (ValueError, KeyError, TypeError):
        return "error", "messages must be JSON objects with a 'type'"
    if kind == "dtmf":
        digit = msg.get("digit")
        if isinstance(digit, str) and len(digit) == 1 and digit in DTMF_DIGITS:
            return "dtmf", digit
        return "error", "dtmf needs one 'digit' of 0-9, * or #"
    if kind == "hangup":
        return "hangup", ""
    if kind == "paused":
        answer = pause_answer(msg)
        return ("paused", answer) if answer is not None else ("error", "paused needs an integer 'run' and 'unplayed_ms' (0-60000)")
    if kind == "hello":
        return "hello", msg.get("answers_pause") is True
    return "error", f"unknown message type {kind!r}"


def frame_to_mono(frame: av.AudioFrame) -> tuple[bytes, int]:
    """An inbound decoded frame -> (PCM16 mono, its rate).

    aiortc's Opus decoder hands out packed s16 stereo at 48 kHz; anything else
    goes through PyAV's converter so an odd codec cannot break the call.
    """
    channels = len(frame.layout.channels)
    if frame.format.name != "s16" or channels > 2:
        frame = av.AudioResampler(format="s16", layout="mono", rate=frame.sample_rate).resample(frame)[0]
        channels = 1
    data = bytes(frame.planes[0])[: frame.samples * 2 * channels]  # planes may be padded
    return (stereo_to_mono(data) if channels == 2 else data), frame.sample_rate


class CallTrack(MediaStreamTrack):
    """The agent's voice: 20 ms frames of 48 kHz mono, pulled by aiortc's sender.

    Each ``recv`` waits for its absolute deadline (start + pts / rate), then
    takes the call's next frame, so a FlushPlayback that lands during the wait
    already applies to the frame it returns. If the loop stalls, the track
    catches up by returning frames back to back; beyond ``RESYNC_AFTER`` it
    moves its clock instead of bursting.
    """

    kind = "audio"

    def __init__(self, next_frame, on_error=None) -> None:
        super().__init__()
        self.next_frame = next_frame  # () -> bytes | None
        self.on_error = on_error  # (exception) -> None: the call cannot go on
        self.pts = -FRAME_SAMPLES
        self.t0: float | None = None
        self.idle = True  # the last frame was silence: nothing was playing
        self.frames = 0  # every frame returned
        self.voiced = 0  # frames that carried the call's audio
        self.resyncs = 0
        self.wall = 0.0
        self.due = 0.0  # wall-clock time the frame being taken is scheduled to play (its place on the RTP clock)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        self.pts += FRAME_SAMPLES
        now = time.monotonic()
        if self.t0 is None:
            self.t0 = now
            self.wall = time.time() - now  # monotonic -> wall clock, fixed once: ``due`` stays on one grid
        delay = self.t0 + self.pts / RATE - now
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -RESYNC_AFTER:
            self.t0 -= delay
            self.resyncs += 1
        self.due = self.wall + self.t0 + self.pts / RATE
        try:
            pcm = self.next_frame()
        except Exception as exc:  # noqa: BLE001 - aiortc's sender would die quietly: fail the call instead
            pcm = None
            if self.on_error is not None:
                self.on_error(exc)
        self.idle = pcm is None
        if pcm is None:
            pcm = SILENCE
        else:
            self.voiced += 1
            if len(pcm) != len(SILENCE):  # the playout always frames, but never send a short frame
                pcm = (pcm + SILENCE)[: len(SILENCE)]
        self.frames += 1
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(pcm)
        frame.sample_rate = RATE
        frame.pts = self.pts
        frame.time_base = TIME_BASE
        return frame


class WebRtcTransport:
    """One peer connection as a ``Transport`` for ``Call``."""

    kind = "webrtc"
    rate = RATE
    reports_playback = False

    def __init__(self, pc: RTCPeerConnection, sessions: dict, stats: dict | None = None) -> None:
        self.pc = pc
        self.sessions = sessions
        self.call: Call | None = None
        self.track: CallTrack | None = None
        self.channel = None
        self.backlog: list[str] = []
        self.stats = stats if stats is not None else {}
        self.tasks = TaskSet(self.stats, on_error=self._task_failed, context=lambda: {"session_id": self.call.session if self.call else None})
        self.started = False  # call.start succeeded: call.end must run
        self.held: set[int] = set()  # runs the page was told to hold (pause), not yet resumed or flushed
        self.closing = False

    # ------------------------------------------------------------ Transport
    async def send_notice(self, notice: dict) -> None:
        text = json.dumps(notice)
        if self.channel is not None and self.channel.readyState == "open":
            if self.channel.bufferedAmount > CHANNEL_BACKLOG_BYTES:
                self.fail(f"the page is not reading its events channel ({self.channel.bufferedAmount} bytes unsent)", "backlog")
                return
            self.channel.send(text)
        elif len(self.backlog) < NOTICE_BACKLOG:
            self.backlog.append(text)

    def on_pause(self, run: int) -> None:
        """The next recv() gets silence, but what aiortc's encoder and the
        browser's jitter buffer already hold (about 90 ms measured) would
        still play: the page silences the agent's voice the moment it reads
        ``pause`` on the events channel (sent here at once, not behind the
        call's reports), and lets it play again on ``resume``."""
        if self.call is not None and self.call.audible(run):
            self.held.add(run)
            if self._say({"type": "pause", "run": run}):
                self.call.pause_told(run)

    def on_resume(self, run: int) -> None:
        if run in self.held:
            self.held.discard(run)
            self._say({"type": "resume", "run": run})

    def _say(self, notice: dict) -> bool:
        """A playback notice now, or never: one that waits for the channel to
        open would come after the audio it is about. True if sent."""
        channel = self.channel
        if channel is None or channel.readyState != "open" or channel.bufferedAmount > CHANNEL_BACKLOG_BYTES:
            return False
        try:
            channel.send(json.dumps(notice))
            return True
        except Exception as exc:  # noqa: BLE001 - a closing channel: the call's teardown says why
            log.warning("could not send a playback notice: %s", exc, extra={"session_id": self.call.session if self.call else None})
            return False

    async def on_flush(self, run: int) -> None:
        self.held.discard(run)  # the playout already dropped the run; the page is told by "interrupted"

    async def close(self, reason: str) -> None:
        """The agent ended the session: let the goodbye play out, then hang up."""
        self.spawn(self._close_after_playout(reason), "webrtc-close")

    def fail(self, reason: str, kind: str) -> None:
        """The call cannot go on: say why on the events channel (if the page
        reads it), log and count it, and tear the call down."""
        if self.closing:
            return
        log.error("webrtc call failed: %s", reason, extra={"session_id": self.call.session if self.call else None, "kind": kind})
        self.stats[f"webrtc_error_{kind}"] = self.stats.get(f"webrtc_error_{kind}", 0) + 1
        if self.channel is not None and self.channel.readyState == "open" and kind != "backlog":
            try:
                self.channel.send(json.dumps({"type": "error", "error": reason}))
            except Exception:  # noqa: BLE001 - the channel is going anyway
                pass
        self.spawn(self.teardown(f"error: {reason}"), "webrtc-teardown")

    def _task_failed(self, name: str, exc: BaseException) -> None:
        self.fail(f"internal error in {name}: {type(exc).__name__}", "task")

    def _track_failed(self, exc: BaseException) -> None:
        log.error("the outbound track failed", exc_info=exc, extra={"session_id": self.call.session if self.call else None})
        self.fail(f"internal error in the outbound audio: {type(exc).__name__}", "track")

    # ------------------------------------------------------------- plumbing
    def spawn(self, coro, name: str = "webrtc") -> asyncio.Task:
        return self.tasks.spawn(coro, name)

    def attach_channel(self, channel) -> None:
        self.channel = channel

        def on_open() -> None:
            backlog, self.backlog = self.backlog, []
            for text in backlog:
                channel.send(text)

        channel.on("open", on_open)
        channel.on("message", lambda message: self.spawn(self._on_message(message), "webrtc-message"))
        channel.on("close", lambda: self.spawn(self.teardown("client hung up"), "webrtc-teardown"))
        if channel.readyState == "open":
            on_open()

    async def _on_message(self, message) -> None:
        if not isinstance(message, str):
            await self.send_notice({"type": "error", "error": "the events channel carries JSON text only"})
            return
        kind, value = channel_request(message)
        if kind == "dtmf" and self.call and self.started:
            await self.call.dtmf(value)
        elif kind == "paused" and self.call and self.started:
            self.call.client_paused(*value)
        elif kind == "hello" and self.call:
            self.call.client_answers = bool(value)
        elif kind == "hangup":
            await self.teardown("client hung up")
        elif kind == "error":
            await self.send_notice({"type": "error", "error": value})

    async def pump_inbound(self, track) -> None:
        """Remote audio -> 16 kHz mono -> call.feed, until the track ends."""
        resampler: Resampler | None = None
        pending = bytearray()
        reason = "the caller's audio ended"
        while True:
            try:
                frame = await asyncio.wait_for(track.recv(), INBOUND_TIMEOUT)
            except MediaStreamError:
                break
            except asyncio.TimeoutError:
                reason = f"no audio from the caller for {INBOUND_TIMEOUT:g} s"
                break
            try:
                pcm, rate = frame_to_mono(frame)
                if resampler is None or resampler.in_rate != rate:
                    resampler = Resampler(rate, ASR_RATE)
                pending += resampler.process(pcm)
                if len(pending) >= FEED_BYTES:
                    if self.call is not None and self.started:  # audio before the claim has nowhere to go
                        await self.call.feed(bytes(pending))
                    pending.clear()
            except Exception as exc:  # noqa: BLE001 - one call's bad audio ends that call only
                log.exception("inbound WebRTC audio failed")
                reason = f"error: inbound audio: {exc}"
                break
        await self.teardown(reason)

    async def _close_after_playout(self, reason: str, limit: float = 5.0) -> None:
        deadline = time.monotonic() + limit
        while self.call is not None and (self.call.playout.buffered_ms or not (self.track and self.track.idle)) and time.monotonic() < deadline:
            await asyncio.sleep(FRAME_MS / 1000)
        # Give SCTP a moment to deliver the "end" notice before the association goes.
        while self.channel is not None and self.channel.readyState == "open" and self.channel.bufferedAmount and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        await self.teardown(reason)

    async def watch_connect(self) -> None:
        await asyncio.sleep(CONNECT_TIMEOUT)
        if self.pc.connectionState != "connected":
            await self.teardown("the WebRTC connection never came up")

    async def teardown(self, reason: str) -> None:
        """End the call and release the peer connection; safe to call repeatedly."""
        if self.closing:
            return
        self.closing = True
        try:
            if self.call is not None and self.started:
                await self.call.end(reason)
        finally:
            if self.track is not None:
                self.track.stop()
            await self.pc.close()
            if self.call is not None:
                self.sessions.pop(self.call.session, None)
            self.tasks.cancel()
            if self.started and self.call is not None:
                if self.track is not None and self.track.resyncs:
                    self.call._count("webrtc_track_resyncs", self.track.resyncs)
                log.info("webrtc call closed", extra={"session_id": self.call.session, "reason": reason})


def shorten_jitter_buffer(pc: RTCPeerConnection, frames: int) -> bool:
    """aiortc's audio receiver holds 4 packets (80 ms) before it decodes the
    first, and has no setting for it: every word the caller says reaches the
    VAD that much later, so the agent hears an interruption that much later.
    Replace each audio receiver's jitter buffer with one that holds ``frames``
    (a packet arriving later than that is dropped, as a late one is now).
    Returns False, logged, if this aiortc has no such attribute (the test
    ``test_webrtc_units`` pins it to the version in uv.lock)."""
    done = True
    for receiver in (t.receiver for t in pc.getTransceivers() if t.kind == "audio"):
        if not hasattr(receiver, JITTER_ATTRIBUTE):
            log.warning("aiortc has no receiver jitter buffer to shorten; inbound audio keeps its default delay")
            done = False
            continue
        setattr(receiver, JITTER_ATTRIBUTE, JitterBuffer(capacity=16, prefetch=frames))
    return done


JITTER_ATTRIBUTE = "_RTCRtpReceiver__jitter_buffer"


def ice_configuration(settings: Settings) -> RTCConfiguration:
    return RTCConfiguration(iceServers=[RTCIceServer(urls=url.strip()) for url in settings.ice_servers])


# long: one offer to one answer, with every failure undoing what was built (one try): splitting it would scatter the undo
async def answer(board: Switchboard, settings: Settings, sessions: dict, body: object, admit=None) -> tuple[int, dict]:
    """Answer one offer; (HTTP status, JSON body). Nothing is left behind on an error.

    ``admit(token, params) -> params`` decides whether the session may start
    (``auth.Gate.admit``: origin, rate, the one-time token, the parameters),
    once the offer itself is known to be well formed; it raises auth.Refused.
    """
    stats = board.stats
    try:
        sdp, params = parse_offer(body)
        check_audio(sdp)
    except OfferError as exc:
        return 400, {"error": str(exc)}
    if admit is not None:
        try:
            params = await admit(body.get("token") if isinstance(body, dict) else None, params)  # type: ignore[union-attr]
        except auth.Refused as refused:
            stats[f"webrtc_refused_{refused.status}"] = stats.get(f"webrtc_refused_{refused.status}", 0) + 1
            log.warning("webrtc session refused: %s", refused, extra={"status": refused.status})
            return refused.status, {"error": str(refused)}
    pc = RTCPeerConnection(ice_configuration(settings))
    transport = WebRtcTransport(pc, sessions, stats)
    call = Call(board, transport)
    transport.call = call
    # Before setRemoteDescription: it is what fires "track".
    @pc.on("datachannel")
    def on_datachannel(channel) -> None:
        if channel.label == "events":
            transport.attach_channel(channel)

    @pc.on("track")
    def on_track(track) -> None:
        if track.kind == "audio":
            transport.spawn(transport.pump_inbound(track), "webrtc-inbound")

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        if pc.connectionState in ("failed", "closed"):
            await transport.teardown(f"WebRTC connection {pc.connectionState}")

    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        shorten_jitter_buffer(pc, settings.webrtc_jitter_frames)
        out = transport.track = CallTrack(None, on_error=transport._track_failed)
        out.next_frame = lambda: call.next_frame(out.due)  # placed in the recording where it plays
        pc.addTrack(transport.track)
        local = await pc.createAnswer()
        await pc.setLocalDescription(local)
    except Exception as exc:  # noqa: BLE001 - aiortc raises many types for bad SDP
        await transport.teardown("invalid offer")
        message = str(exc) if isinstance(exc, OfferError) else f"invalid SDP offer: {type(exc).__name__}: {exc}"
        log.info("webrtc offer rejected", extra={"error": message})
        return 400, {"error": message}

    try:
        await call.start(params=params)
    except RuntimeError as exc:
        await transport.teardown("could not start")
        return 503, {"error": str(exc)}
    transport.started = True
    if transport.closing:  # the connection failed while the call was starting
        await call.end("WebRTC connection failed")
        return 503, {"error": "the WebRTC connection failed while the call was starting"}
    sessions[call.session] = transport
    stats["webrtc_calls"] = stats.get("webrtc_calls", 0) + 1
    await transport.send_notice({"type": "session", "session": call.session})
    transport.spawn(transport.watch_connect(), "webrtc-watch-connect")
    log.info("webrtc call answered", extra={"session_id": call.session})
    return 200, {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type, "session": call.session}


async def hang_up_all(state: dict, reason: str) -> None:
    """End every WebRTC call (the app's lifespan, before it drains NATS)."""
    calls = list(state.get("webrtc", {}).values())
    results = await asyncio.gather(*(t.teardown(reason) for t in calls), return_exceptions=True)
    for call, result in zip(calls, results):
        if isinstance(result, Exception):
            log.error("a WebRTC call did not end cleanly", exc_info=result, extra={"session_id": call.call.session if call.call else None})


def register(app: FastAPI, state: dict, settings: Settings) -> None:
    """Add ``POST /webrtc/offer`` (the app's lifespan ends the calls: ``hang_up_all``)."""
    sessions: dict[str, WebRtcTransport] = state.setdefault("webrtc", {})

    @app.post("/webrtc/offer")
    async def offer(request: Request):
        raw = await request.body()
        if len(raw) > MAX_SDP * 2:
            return JSONResponse({"error": f"the offer is too large ({len(raw)} bytes)"}, status_code=400)
        try:
            body = json.loads(raw)
        except ValueError:
            return JSONResponse({"error": 'the body must be JSON {"sdp": ..., "type": "offer"}'}, status_code=400)
        if state.get("nc") is None:
            return JSONResponse({"error": "the gateway is not ready"}, status_code=503)
        admission = state.get("admission")
        if admission is not None and admission.full:
            error = admission.refuse("webrtc")
            return JSONResponse({"error": error, "full": admission.which, "retry_after": admission.retry_after}, status_code=503, headers=admission.headers())
        gate = state["gate"]
        client = request.client.host if request.client else None
        status, reply = await answer(state["switchboard"], settings, sessions, body, admit=lambda token, params: gate.admit(request.headers, client, token, params))
        return JSONResponse(reply, status_code=status)

