"""The TTS worker: the NATS shell around ``Lanes`` and a ``Voice``.

    orchestrator --TTS_REQUEST, stored in TTS_STREAM: Synthesize(s, run, chunk, text)
        --> pulled by one worker (durable consumer TTS_CONSUMER):
            spoken(text) -> the run's lane -> voice.stream
        --> tts_audio(s, run): PCM16 LE mono pieces of at most 200 ms, headers
            Parley-Seq (from 0 within the chunk), -Rate, -Chunk, -Last ("1"
            on the final, possibly empty, message of the chunk)
        --> events(s): TTSChunkStarted at the first message, then
            TTSChunkDone(audio_ms) or TTSError after the last
    orchestrator --TTS_CANCEL (every worker): CancelTTS(s, run)
    anyone --control(s): SessionControl "end"

nats-py runs a subscription's callback one message at a time, so callbacks
only decode and do bookkeeping; each lane (one run's chunks, in order) has a
runner task, and the voice does the heavy work off the event loop.

After a cancel (or the session's end), nothing of that run leaves this
worker: ``Lanes.live`` is checked before every publish, the runner task is
cancelled (which closes the voice's stream, stopping Piper between
sentences), queued chunks are dropped, and later Synthesize for the run too.
No event is sent for a cancelled run.

Providers: ``voice`` speaks; ``fallback`` (Piper, when a cloud voice speaks)
takes over a chunk the voice failed (``ProviderError``: a refused key, a rate
limit, a dropped socket, no audio in time), from the last word the voice is
known to have delivered, within the same chunk; the chunk's audio then
changes rate mid-way (headers carry it, the gateway follows). Each failure is
logged, counted and reported on the session as ``ProviderFailed``. A voice
that keeps failing is skipped for a while (``parley.providers.Breaker``).
Characters sent to each provider are counted per run (``parley.usage.tts_characters``
on /metrics) and, when a cloud voice is configured, reported on the session as
``Usage`` when the run's lane ends (or is cancelled).

Events are stored in order per session but never waited for: the audio goes
on while the event stream elects a leader (``_event``).

Durability (issue 10 point 4): a request is acked once its chunk is done and
the chunk's events are stored (or dropped: cancelled run, ended session, bad
message). While the worker holds
it, queued or synthesizing, it tells the server every TTS_PROGRESS_S that it
is still at it. A worker that dies stops saying so, and the server gives the
request to another worker TTS_ACK_WAIT_S later: a chunk queued behind the
dead one is synthesized elsewhere, and the one it was speaking is spoken
again from the start (the gateway has moved on past it if it was playing:
the answer goes on from the next chunk). Sooner than the ack wait: as it
takes a request, a worker tells its peers the request's ack subject
(``subjects.tts_held``); each asks the peers it heard from whether they are
alive every PEER_PROBE_S, and when one is gone the live worker with the
lowest id hands its requests back to the stream ("-NAK": delivered again at
once; a request already acked is not touched). A dead worker's requests are
then said elsewhere within ~0.1-0.2 s, not 0.55-0.8 s (issue 10: a chunk the
dead worker had taken but not begun held its caller's answer that long). The worker pulls one request at a
time and holds at most ``max_held`` (queued, being synthesized or spoken: a
speaking call holds its run's later chunks too, so the bound is set well above
the calls a worker serves; below that, first chunks wait in the stream).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from contextlib import aclosing
from dataclasses import dataclass, replace

import nats.errors
from nats.js.api import ConsumerConfig

from nats.aio.client import Client
from nats.aio.msg import Msg

from parley import bus, contract, subjects, telemetry
from parley.providers import Breaker, ProviderError

from . import audio
from .adapters import SynthesisError, Voice
from .lanes import Admit, Job, Key, Lanes
from .settings import Settings
from .spoken import spoken

log = logging.getLogger("parley_tts.worker")

RESUME_ASK_S = 0.3  # s a worker given a chunk again waits for the gateway to say where its audio stopped
PEER_PROBE_S = 0.1  # s between liveness questions to each peer this worker heard from
PEER_PROBE_TIMEOUT_S = 0.25  # s: slower is busy, not dead
PEER_HELD_KEEP_S = 60.0  # s a peer's ack subject is kept (older: long acked, or the ack wait covers it)
PEER_HELD_MAX = 4096  # ack subjects kept per peer


@dataclass
class _Said:
    """How far one chunk got: audio messages out, their length, the rate of
    the voice speaking, when the first went out, and why it failed ("" if not)."""

    rate: int
    seq: int = 0
    audio_ms: float = 0.0
    first_at: float | None = None
    error: str = ""


class Worker:
    # long: the worker's state and its stats, one a line with why
    def __init__(self, nc: Client, settings: Settings, voice: Voice, fallback: Voice | None = None, tel: telemetry.Telemetry | None = None):
        self.tel = tel or telemetry.current()  # the app's (parley.telemetry.setup)
        self.nc = nc
        self.settings = settings
        self.voice = voice
        self.voices: list[Voice] = [voice] + ([fallback] if fallback is not None else [])
        self.breakers = {v.name: Breaker() for v in self.voices}
        # (session, run) -> provider -> characters sent to it, reported as Usage when the lane ends.
        self.usage: dict[Key, dict[str, int]] = {}
        # Usage goes on the session's events only when a cloud voice is configured
        # (the embedded voices cost nothing: counted on /metrics only).
        self.usage_events = any(getattr(v, "cloud", False) for v in self.voices)
        # (session, provider) already told that provider is being skipped (one notice per session).
        self._told_skipped: set[tuple[str, str]] = set()
        self.id = settings.worker_id
        self.lanes = Lanes(forget_after=settings.forget_after_s, remember=settings.remember)
        self.runners: dict[Key, asyncio.Task] = {}
        self.ahead: dict[Key, set[asyncio.Task]] = {}  # Admit.AHEAD chunks being synthesized
        self.reporting: set[asyncio.Task] = set()  # events still being stored (see _event)
        self._storing: dict[str, asyncio.Task] = {}  # session -> its newest event being stored (see _event)
        self.subs: list = []
        self.pull = None  # the JetStream pull subscription
        self.held: dict[tuple[str, int, int], Msg] = {}  # (session, run, chunk) -> its stored request
        # peer worker -> (loop time, ack subject) of the requests it said it took (see subjects.tts_held)
        self.peer_held: dict[str, deque[tuple[float, str]]] = {}
        self.probes: set[asyncio.Task] = set()  # liveness questions to peers, in flight
        self.to_ack: list[Msg] = []  # released requests (acked by the keeper)
        self.room = asyncio.Event()  # set while fewer than max_held are held
        self.room.set()
        self.loops: list[asyncio.Task] = []
        self.stats: dict[str, int] = {
            "requests": 0,
            "chunks_done": 0,
            "chunks_failed": 0,
            "cancels": 0,
            "sessions_ended": 0,
            "dropped_queued": 0,  # chunks of a cancelled run that never started
            "dropped_late": 0,  # Synthesize for a run already cancelled or ended
            "bad_messages": 0,
            "events_lost": 0,  # an event the stream never stored (logged)
            "audio_ms": 0,
            "provider_failures": 0,  # a provider failed a chunk (fallback or not)
            "provider_skipped": 0,  # a chunk went straight to the fallback (the provider's breaker was open)
            "fallback_chunks": 0,  # chunks (partly) spoken by the fallback voice
            "redelivered": 0,  # requests another (dead or stalled) worker had held
            "resumed": 0,  # of those, chunks taken up mid-way (the gateway had their first pieces)
            "pieces_skipped": 0,  # pieces of those the gateway had: not sent again
            "pull_errors": 0,
            "peers_gone": 0,  # peer workers found dead (no responders)
            "peer_requests_handed_back": 0,  # their requests this worker handed back to the stream at once
            "request_errors": 0,  # a request this worker broke on (logged; handed back to the stream)
            "loop_errors": 0,  # the pull or keep loop died (logged critical; /healthz says 503)
            "ack_errors": 0,  # acking or extending held requests failed (a dropped connection): retried next round
            "runner_errors": 0,  # a lane's runner or an ahead chunk's task died (logged): its later chunks are lost
        }

    # ------------------------------------------------------------- lifetime
    async def start(self) -> None:
        await bus.ensure_stream(self.nc, bus.tts_stream_config(replicas=bus.replicas(self.nc)))
        js = self.nc.jetstream()
        cfg = bus.tts_consumer_config()
        self.pull = await js.pull_subscribe(
            subjects.TTS_REQUEST,
            durable=subjects.TTS_CONSUMER,
            stream=subjects.TTS_STREAM,
            config=ConsumerConfig(
                ack_wait=cfg["ack_wait"] / 1e9, max_deliver=cfg["max_deliver"], max_ack_pending=cfg["max_ack_pending"]
            ),
        )
        self.subs = [
            await self.nc.subscribe(subjects.TTS_CANCEL, cb=self._on_cancel),
            await self.nc.subscribe(subjects.CONTROL_ALL, cb=self._on_control),
            await self.nc.subscribe(subjects.tts_alive(self.id), cb=self._on_alive),
            await self.nc.subscribe(subjects.TTS_HELD_ALL, cb=self._on_peer_held),
        ]
        await self.nc.publish(subjects.tts_held(self.id), b"")  # here (see _on_peer_held)
        await self.nc.flush()
        self.loops = [
            asyncio.create_task(self._pull_loop(), name="tts-pull"),
            asyncio.create_task(self._keep_loop(), name="tts-keep"),
            asyncio.create_task(self._peer_loop(), name="tts-peers"),
        ]
        for task in self.loops:
            task.add_done_callback(self._loop_ended)

    @property
    def healthy(self) -> bool:
        """Both loops run: without them no request is taken or kept (/healthz says 503)."""
        return bool(self.loops) and not any(t.done() for t in self.loops)

    def _loop_ended(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.stats["loop_errors"] += 1
            log.critical("%s stopped: this worker takes no more requests until it restarts", task.get_name(), exc_info=task.exception())

    async def stop(self) -> None:
        for task in [*self.loops, *self.probes]:
            task.cancel()
        await asyncio.gather(*self.loops, return_exceptions=True)
        self.loops = []
        if self.reporting:
            # Chunks said whose events are still being stored are acked once
            # stored (below), not handed to another worker to be said again.
            await asyncio.wait(set(self.reporting), timeout=bus.PUBLISH_PATIENCE)
        # Stopping cleanly: what this worker held goes to another one now,
        # not after the ack wait.
        for msg in [*self.to_ack]:
            try:
                await msg.ack()
            except Exception:  # noqa: BLE001 - closed: the server redelivers
                pass
        for msg in list(self.held.values()):
            try:
                await msg.nak()
            except Exception:  # noqa: BLE001
                pass
        self.held.clear()
        self.to_ack = []
        if self.pull is not None:
            try:
                await self.pull.unsubscribe()
            except Exception:  # noqa: BLE001 - the connection may already be closed
                pass
            self.pull = None
        for sub in self.subs:
            try:
                await sub.unsubscribe()
            except Exception:  # noqa: BLE001 - the connection may already be closed
                pass
        self.subs = []
        tasks = [*self.runners.values(), *(t for ts in self.ahead.values() for t in ts)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.runners.clear()
        self.ahead.clear()
        if self.reporting:  # what already happened is still told before the connection goes
            await asyncio.wait(set(self.reporting), timeout=bus.PUBLISH_PATIENCE)

    # ------------------------------------------------------------- requests
    async def _pull_loop(self) -> None:
        """Pull one stored request at a time while fewer than max_held are held."""
        while True:
            await self.room.wait()
            try:
                msgs = await self.pull.fetch(1, timeout=5.0)
            except nats.errors.TimeoutError:
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reconnecting, server restart: pull again
                self.stats["pull_errors"] += 1
                log.warning("pulling TTS requests failed: %s", exc, extra={"error": str(exc)})
                await asyncio.sleep(0.25)
                continue
            for msg in msgs:
                try:
                    await self._on_request(msg)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - one request's failure must not stop the pulling
                    await self._request_failed(msg)

    async def _request_failed(self, msg: Msg) -> None:
        """A request this worker broke on: logged, counted, let go at once (another worker may take it)."""
        self.stats["request_errors"] += 1
        log.exception("a TTS request failed here", extra={"subject": msg.subject})
        for key in [k for k, m in self.held.items() if m is msg]:
            del self.held[key]
        if len(self.held) < self.settings.max_held:
            self.room.set()
        try:
            await msg.nak()
        except Exception as exc:  # noqa: BLE001 - the server redelivers after the ack wait anyway
            log.warning("could not hand back a failed TTS request: %s", exc)

    async def _keep_loop(self) -> None:
        """Ack what was released; tell the server the held requests are in hand."""
        while True:
            await asyncio.sleep(bus.TTS_PROGRESS_S)
            released, self.to_ack = self.to_ack, []
            try:
                while released:
                    await released[0].ack()
                    released.pop(0)
                for msg in list(self.held.values()):
                    await msg.in_progress()
            except asyncio.CancelledError:
                self.to_ack[:0] = released
                raise
            except Exception as exc:  # noqa: BLE001 - a closed connection: try again next round (the server may redeliver first)
                self.to_ack[:0] = released
                self.stats["ack_errors"] += 1
                log.warning("acking TTS requests failed (%d left for the next round): %s", len(released), exc)

    def _hold(self, key: tuple[str, int, int], msg: Msg) -> bool:
        """Keep the request until its chunk is done; False if this worker
        already holds it (a redelivery of what it is still working on)."""
        old = self.held.get(key)
        self.held[key] = msg  # acking the newest delivery acks the request
        if len(self.held) >= self.settings.max_held:
            self.room.clear()
        return old is None

    def _release(self, key: tuple[str, int, int]) -> None:
        msg = self.held.pop(key, None)
        if msg is not None:
            self.to_ack.append(msg)
        if len(self.held) < self.settings.max_held:
            self.room.set()

    async def _on_alive(self, msg: Msg) -> None:
        if msg.reply:
            await msg.respond(b"1")

    # ------------------------------------------------------------- peers
    async def _on_peer_held(self, msg: Msg) -> None:
        """A peer took a request (the body: its ack subject), or, with no
        body, says it is here (at its start, and back to a newcomer). Every
        live worker must know every other: the one with the lowest id hands a
        dead peer's requests back, and a worker that knew of no lower one
        would hand them back too; a -NAK on an old delivery redelivers the
        request again (measured, nats-server 2.15): said twice."""
        peer = msg.subject.rsplit(".", 1)[-1]
        if peer == self.id:
            return
        new = peer not in self.peer_held
        held = self.peer_held.setdefault(peer, deque(maxlen=PEER_HELD_MAX))
        if new:
            await self.nc.publish(subjects.tts_held(self.id), b"")  # so the newcomer knows this worker too
        if not msg.data:
            return
        now = asyncio.get_running_loop().time()
        held.append((now, msg.data.decode(errors="replace")))
        while held and held[0][0] < now - PEER_HELD_KEEP_S:
            held.popleft()

    async def _peer_loop(self) -> None:
        """Find a dead peer within PEER_PROBE_S and hand its requests back.
        Each question is a task of its own: one the peer died holding waits out
        its timeout without holding up the next round's."""
        while True:
            await asyncio.sleep(PEER_PROBE_S)
            for peer in list(self.peer_held):
                task = self._spawn(self._probe_peer(peer), f"tts-probe-{peer}")
                self.probes.add(task)
                task.add_done_callback(self.probes.discard)

    async def _probe_peer(self, peer: str) -> None:
        try:
            await self.nc.request(subjects.tts_alive(peer), b"", timeout=PEER_PROBE_TIMEOUT_S)
            return
        except nats.errors.NoRespondersError:
            pass
        except Exception:  # noqa: BLE001 - slow or reconnecting: not evidence of death
            return
        held = self.peer_held.pop(peer, None)
        if not held:
            return
        self.stats["peers_gone"] += 1
        if any(other < self.id for other in self.peer_held):
            return  # a live peer with a lower id hands them back (one NAK each, not one per survivor)
        for _, reply in held:
            await self.nc.publish(reply, b"-NAK")
        self.stats["peer_requests_handed_back"] += len(held)
        log.warning("TTS worker gone: the requests it held go back to the stream now", extra={"gone": peer, "requests": len(held)})

    async def _on_request(self, msg: Msg) -> None:
        try:
            cmd = contract.decode_command(msg.data)
            if not isinstance(cmd, contract.Synthesize):
                raise ValueError(f"expected Synthesize, got {contract.type_name(cmd)}")
            subjects.session_token(cmd.session)
        except (contract.DecodeError, contract.ValidationError, ValueError) as exc:
            self._bad("tts request", exc)
            if msg.reply:
                await msg.term()  # never worth delivering again
            return
        self.stats["requests"] += 1
        redelivered = self._delivered_again(msg, cmd)
        ckey = (cmd.session, cmd.run, cmd.chunk)
        if msg.reply and not self._hold(ckey, msg):
            return
        if msg.reply:
            await self.nc.publish(subjects.tts_held(self.id), msg.reply.encode())
        now = asyncio.get_running_loop().time()
        trace = tuple((k, v) for k, v in (msg.headers or {}).items() if k in ("traceparent", "tracestate"))
        job = Job(cmd.session, cmd.run, cmd.chunk, spoken(cmd.text), received=now, trace=trace, provider=cmd.provider, redelivered=redelivered)
        admit = self.lanes.submit(job, now)
        if admit is Admit.START:
            self.runners[job.key] = self._spawn(self._run(job.key), f"tts-{job.session}-{job.run}")
        elif admit is Admit.AHEAD:
            # The gateway is waiting for this chunk (its first worker died):
            # said now, not after the later chunk this worker is speaking.
            log.info("earlier chunk synthesized beside the run's current one", extra={"session_id": job.session, "run_id": job.run, "chunk": job.chunk})
            task = self._spawn(self._run_ahead(job), f"tts-{job.session}-{job.run}-{job.chunk}")
            self.ahead.setdefault(job.key, set()).add(task)
        elif admit in (Admit.CANCELLED, Admit.ENDED):
            self._release(ckey)
            self.stats["dropped_late"] += 1
            log.info(
                "synthesize for a %s run dropped",
                admit.value,
                extra={"session_id": job.session, "run_id": job.run, "chunk": job.chunk},
            )

    def _delivered_again(self, msg: Msg, cmd: contract.Synthesize) -> bool:
        """Did another (dead or stalled) worker hold this request before?"""
        try:
            again = msg.metadata.num_delivered > 1
        except (ValueError, AttributeError, TypeError):
            return False  # not from the stream (a test's core request)
        if again:
            self.stats["redelivered"] += 1
            log.info("synthesize delivered again (its worker died or stalled)", extra={"session_id": cmd.session, "run_id": cmd.run, "chunk": cmd.chunk})
        return again

    async def _on_cancel(self, msg: Msg) -> None:
        try:
            cmd = contract.decode_command(msg.data)
            if not isinstance(cmd, contract.CancelTTS):
                raise ValueError(f"expected CancelTTS, got {contract.type_name(cmd)}")
        except (contract.DecodeError, contract.ValidationError, ValueError) as exc:
            self._bad("tts cancel", exc)
            return
        key = (cmd.session, cmd.run)
        dropped = self.lanes.cancel(key, asyncio.get_running_loop().time())
        running = self._stop_runner(key)
        self._release_run(key)
        self.stats["cancels"] += 1
        self.stats["dropped_queued"] += len(dropped)
        if running or dropped:
            log.info(
                "run cancelled",
                extra={"session_id": cmd.session, "run_id": cmd.run, "dropped_chunks": len(dropped), "was_running": running},
            )

    async def _on_control(self, msg: Msg) -> None:
        try:
            ctl = contract.decode(msg.data, contract.SessionControl)
        except (contract.DecodeError, contract.ValidationError) as exc:
            self._bad("session control", exc)
            return
        if ctl.action != "end":
            return
        try:
            own = msg.subject == subjects.control(ctl.session)
        except ValueError:
            own = False
        if not own:  # only a session's own control subject may end it
            self._bad("session control", ValueError(f"for {ctl.session[:64]!r} on {msg.subject}"))
            return
        lanes = self.lanes.end(ctl.session, asyncio.get_running_loop().time())
        for key, dropped in lanes.items():
            self._stop_runner(key)
            self.stats["dropped_queued"] += len(dropped)
        for key in {(s, r) for s, r, _ in self.held if s == ctl.session}:
            self._release_run(key)
        self.stats["sessions_ended"] += 1
        if lanes:
            log.info("session ended: runs dropped", extra={"session_id": ctl.session, "runs": [k[1] for k in lanes]})

    def _release_run(self, key: Key) -> None:
        for ckey in [k for k in self.held if k[:2] == key]:
            self._release(ckey)

    def _stop_runner(self, key: Key) -> bool:
        ahead = self.ahead.pop(key, set())
        for t in ahead:
            t.cancel()
        task = self.runners.pop(key, None)
        if task is None or task.done():
            return bool(ahead)
        task.cancel()
        return True

    def _bad(self, what: str, exc: Exception) -> None:
        self.stats["bad_messages"] += 1
        log.warning("bad %s dropped: %s", what, exc, extra={"error": str(exc)})

    # ------------------------------------------------------------- synthesis
    def _spawn(self, coro, name: str) -> asyncio.Task:
        """A runner's task (kept by the caller in ``runners`` or ``ahead``):
        a failure that escapes it is logged and counted."""
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._runner_ended)
        return task

    def _runner_ended(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.stats["runner_errors"] += 1
            log.error("tts runner %s failed: its run's later chunks are lost", task.get_name(), exc_info=task.exception())

    async def _run(self, key: Key) -> None:
        """One lane's runner: its chunks one after the other, until it is empty."""
        me = asyncio.current_task()
        try:
            while (job := self.lanes.take(key)) is not None:
                try:
                    await self._synthesize(job)
                except Exception as exc:  # noqa: BLE001 - one chunk's failure must not strand the rest
                    await self._chunk_broke(job, exc)
                finally:
                    # Done, failed (reported) or cancelled: not to be said again.
                    self._release_when_stored((job.session, job.run, job.chunk))
        finally:
            if self.runners.get(key) is me:
                del self.runners[key]
            await self._report_usage(key)

    async def _run_ahead(self, job: Job) -> None:
        """One chunk of a lane, beside its runner (``Admit.AHEAD``)."""
        me = asyncio.current_task()
        try:
            await self._synthesize(job)
        except Exception as exc:  # noqa: BLE001 - reported as the runner's are
            await self._chunk_broke(job, exc)
        finally:
            self._release_when_stored((job.session, job.run, job.chunk))
            self.lanes.done_ahead(job.key)
            tasks = self.ahead.get(job.key)
            if tasks is not None:
                tasks.discard(me)
                if not tasks:
                    del self.ahead[job.key]

    async def _chunk_broke(self, job: Job, exc: Exception) -> None:
        """A chunk that failed outside synthesis (publishing, storing an
        event): logged, counted, and the session told, so its run does not
        wait for the chunk."""
        self.stats["chunks_failed"] += 1
        log.error("chunk failed", exc_info=exc, extra={"session_id": job.session, "run_id": job.run, "chunk": job.chunk})
        message = f"tts worker: {type(exc).__name__}: {exc}"
        try:
            await self._event(contract.TTSError(session=job.session, at=time.time(), run=job.run, chunk=job.chunk, message=message))
        except Exception:  # noqa: BLE001 - the bus itself is failing: the log and the count stand
            log.exception("could not report a failed chunk", extra={"session_id": job.session, "run_id": job.run, "chunk": job.chunk})

    async def _report_usage(self, key: Key) -> None:
        used = self.usage.pop(key, None)
        for provider, chars in (used or {}).items():
            self.tel.counter("parley.usage.tts_characters", "1", "characters sent to a TTS provider").add(chars, {"provider": provider})
            if not self.usage_events:
                continue
            try:
                await self._event(contract.Usage(session=key[0], at=time.time(), service="tts", provider=provider, unit="characters", amount=chars))
            except Exception as exc:  # noqa: BLE001 - usage is bookkeeping: never breaks speech
                log.warning("usage not reported: %s", exc, extra={"session_id": key[0], "run_id": key[1], "provider": provider})

    async def _synthesize(self, job: Job) -> None:
        if job.redelivered:
            job = replace(job, from_piece=await self._resume_point(job))
        said = await self._speak(job)
        if said is None:  # the run was cancelled while it spoke
            return
        # The final message of the chunk, even after a failure: the gateway
        # waits for it before it moves on to the next chunk.
        await self.nc.publish(subjects.tts_audio(job.session, job.run), b"", headers=self._headers(job, said.seq, said.rate, last=True))
        if said.first_at is None:
            said.first_at = asyncio.get_running_loop().time()
            await self._event(contract.TTSChunkStarted(session=job.session, at=time.time(), run=job.run, chunk=job.chunk))
        await self._report(job, said)

    async def _speak(self, job: Job) -> _Said | None:
        """Say the chunk with the first voice that can: a provider that fails
        hands the rest of the text (from its last word out) to the next voice.
        None once the run is cancelled."""
        loop = asyncio.get_running_loop()
        said = _Said(rate=self.voice.sample_rate)
        text = job.text
        voices = await self._voices_for(job)
        for i, voice in enumerate(voices):
            nxt = voices[i + 1].name if i + 1 < len(voices) else ""
            breaker = self.breakers[voice.name]
            if nxt and not breaker.allows(loop.time()):
                await self._skipped(job, voice.name, breaker.last_error, nxt)
                continue
            if i > 0:
                self.stats["fallback_chunks"] += 1
            used = self.usage.setdefault(job.key, {})
            used[voice.name] = used.get(voice.name, 0) + len(text)
            try:
                if not await self._stream(job, voice, text, said):
                    return None
                breaker.succeeded()
                said.error = ""
                break
            except ProviderError as exc:
                if not self.lanes.live(job.key):
                    return None
                breaker.failed(exc, loop.time())
                said.error = str(exc)
                rest = text[exc.spoken :].lstrip() if exc.spoken > 0 else text
                await self._provider_failed(job, exc, nxt, said_again=bool(nxt) and exc.spoken <= 0 and said.first_at is not None)
                if not nxt:
                    break
                if exc.spoken > 0 and not rest:
                    said.error = ""  # every word was out before it failed
                    break
                text = rest
            except Exception as exc:  # noqa: BLE001 - reported as TTSError, and the chunk still ends
                if not isinstance(exc, SynthesisError):
                    log.exception("synthesis broke", extra={"session_id": job.session, "run_id": job.run, "chunk": job.chunk})
                said.error = str(exc) or type(exc).__name__
                break
        return said if self.lanes.live(job.key) else None

    async def _resume_point(self, job: Job) -> int:
        """The first piece the gateway carrying the call needs of a chunk this
        worker was given again (0: all of it, also when nobody answers: a call
        that ended, or a gateway from before this question)."""
        ask = contract.TtsResume(session=job.session, run=job.run, chunk=job.chunk, worker=self.id)
        try:
            reply = await self.nc.request(subjects.tts_resume(job.session), contract.encode(ask), timeout=RESUME_ASK_S)
            at = contract.decode(reply.data, contract.TtsResumeAt).from_piece
        except Exception as exc:  # noqa: BLE001 - no answer: the whole chunk, as before
            log.info("no resume point for a chunk given again: said whole", extra={"session_id": job.session, "run_id": job.run, "chunk": job.chunk, "error": type(exc).__name__})
            return 0
        self.stats["resumed"] += at > 0
        log.info("chunk given again resumes where the call's audio stopped", extra={"session_id": job.session, "run_id": job.run, "chunk": job.chunk, "from_piece": at})
        return max(0, at)

    async def _stream(self, job: Job, voice: Voice, text: str, said: _Said) -> bool:
        """Publish ``voice``'s audio of ``text`` as it comes; False once the run is cancelled.
        Pieces before ``job.from_piece`` are counted, not sent (the gateway has them)."""
        said.rate = voice.sample_rate
        subject = subjects.tts_audio(job.session, job.run)
        async with aclosing(voice.stream(replace(job, text=text, from_piece=max(0, job.from_piece - said.seq)))) as pieces:
            async for pcm in pieces:
                if not self.lanes.live(job.key):
                    return False
                if said.seq >= job.from_piece:
                    await self.nc.publish(subject, pcm, headers=self._headers(job, said.seq, said.rate))
                else:
                    self.stats["pieces_skipped"] += 1
                said.seq += 1
                said.audio_ms += len(pcm) / audio.SAMPLE_BYTES * 1000.0 / said.rate
                if said.first_at is None:
                    said.first_at = asyncio.get_running_loop().time()
                    await self._event(contract.TTSChunkStarted(session=job.session, at=time.time(), run=job.run, chunk=job.chunk))
        return True

    def _headers(self, job: Job, seq: int, rate: int, last: bool = False) -> dict[str, str]:
        return bus.audio_headers(seq, rate, chunk=job.chunk, last=last, worker=self.id) | dict(job.trace)

    async def _report(self, job: Job, said: _Said) -> None:
        """The chunk's span, log line and event: TTSChunkDone, or TTSError with why."""
        now = asyncio.get_running_loop().time()
        audio_ms = int(round(said.audio_ms))
        self._trace_chunk(job, said.first_at, now, audio_ms, said.error)
        extra = {
            "session_id": job.session,
            "run_id": job.run,
            "chunk": job.chunk,
            "audio_ms": audio_ms,
            "first_audio_ms": round((said.first_at - job.received) * 1000, 1),
            "total_ms": round((now - job.received) * 1000, 1),
        }
        if said.error:
            self.stats["chunks_failed"] += 1
            log.warning("tts chunk failed: %s", said.error, extra=extra)
            await self._event(contract.TTSError(session=job.session, at=time.time(), run=job.run, chunk=job.chunk, message=said.error))
        else:
            self.stats["chunks_done"] += 1
            self.stats["audio_ms"] += audio_ms
            log.debug("tts chunk done", extra=extra)
            await self._event(contract.TTSChunkDone(session=job.session, at=time.time(), run=job.run, chunk=job.chunk, audio_ms=audio_ms))

    async def _voices_for(self, job: Job) -> list[Voice]:
        """The voices for this chunk, in order: the session's own choice
        (``tts`` parameter) when this worker has it (then that one only: a
        session that chose the embedded voice never goes to the cloud),
        else the worker's (told to the session once)."""
        if not job.provider or job.provider == self.voices[0].name:
            return self.voices
        chosen = [v for v in self.voices if v.name == job.provider]
        if chosen:
            return chosen
        if (job.session, "?" + job.provider) not in self._told_skipped:
            self._told_skipped.add((job.session, "?" + job.provider))
            log.warning("session asked for a TTS provider this deployment has not configured",
                        extra={"session_id": job.session, "provider": job.provider, "using": self.voices[0].name})  # fmt: skip
            await self._event(contract.ProviderFailed(session=job.session, at=time.time(), service="tts", provider=job.provider,
                                                      error="not configured on this deployment", fallback=self.voices[0].name,
                                                      run=job.run, chunk=job.chunk))  # fmt: skip
        return self.voices

    async def _provider_failed(self, job: Job, exc: ProviderError, fallback: str, said_again: bool) -> None:
        """Loud: a warning, a counter, and ProviderFailed on the session."""
        self.stats["provider_failures"] += 1
        self._told_skipped.add((job.session, exc.provider))  # while it recovers, this session already knows
        self.tel.counter("parley.provider.failures", "1", "a cloud provider failed a piece of work").add(
            1, {"service": "tts", "provider": exc.provider, "kind": exc.kind}
        )
        log.warning(
            "tts provider failed: %s", exc,
            extra={"session_id": job.session, "run_id": job.run, "chunk": job.chunk, "provider": exc.provider, "kind": exc.kind,
                   "fallback": fallback or None, "spoken_chars": exc.spoken, "said_again_from_start": said_again},
        )  # fmt: skip
        note = f" (the chunk is said again from its start: {exc.provider} gives no word timing)" if said_again else ""
        await self._event(
            contract.ProviderFailed(
                session=job.session, at=time.time(), service="tts", provider=exc.provider, error=f"{exc.kind}: {exc}{note}",
                fallback=fallback, run=job.run, chunk=job.chunk,
            )
        )  # fmt: skip

    async def _skipped(self, job: Job, provider: str, last_error: str, fallback: str) -> None:
        """The provider's breaker is open: the fallback speaks; the session is told once."""
        self.stats["provider_skipped"] += 1
        if (job.session, provider) in self._told_skipped:
            return
        if len(self._told_skipped) > 10_000:
            self._told_skipped.clear()
        self._told_skipped.add((job.session, provider))
        log.warning(
            "tts provider skipped while it recovers", extra={"session_id": job.session, "run_id": job.run, "provider": provider, "error": last_error}
        )
        await self._event(
            contract.ProviderFailed(
                session=job.session, at=time.time(), service="tts", provider=provider,
                error=f"skipped while it recovers (last error: {last_error})", fallback=fallback, run=job.run, chunk=job.chunk,
            )
        )  # fmt: skip

    def _trace_chunk(self, job: Job, first_at: float, done_at: float, audio_ms: int, error: str) -> None:
        """The chunk's span (request -> last audio) under the turn, and its time to first audio."""
        tel = self.tel
        wall = time.time() - done_at  # loop clock -> wall clock
        first_ms = (first_at - job.received) * 1000
        tel.histogram("parley.tts.ttfa", "ms", "Synthesize received -> first audio published").record(first_ms)
        tel.record_span(
            "tts.chunk",
            session=job.session,
            parent=telemetry.extract(dict(job.trace)) if job.trace else telemetry.session_context(job.session),
            start=wall + job.received,
            end=wall + done_at,
            attributes={
                "run.id": job.run,
                "tts.chunk": job.chunk,
                "tts.first_audio_ms": round(first_ms, 1),
                "tts.audio_ms": audio_ms,
                "tts.error": error or None,
                "messaging.system": "nats",
                "messaging.destination.name": subjects.TTS_REQUEST,
                "messaging.consumer.group.name": subjects.TTS_CONSUMER,
            },
        )

    async def _event(self, event: contract.Event) -> None:
        """Store one event of the session, after the session's earlier ones,
        without waiting for it: the audio never waits for the event stream (a
        NATS node leading it killed leaves it without a leader for seconds,
        and an answer that stopped that long mid-sentence is one the caller
        takes as finished, and talks after). An event reports what already
        happened (audio went out, a chunk ended), so nothing cancels its
        storing: each runs in its own task to its end (``reporting``), and a
        session's tasks store one after the other, in the order they were
        made (``_storing`` holds the newest)."""
        before = self._storing.get(event.session)
        task = asyncio.create_task(self._store(before, event), name=f"tts-event-{event.session}")
        self._storing[event.session] = task
        self.reporting.add(task)
        task.add_done_callback(functools.partial(self._reported, event.session))

    async def _store(self, before: asyncio.Task | None, event: contract.Event) -> None:
        if before is not None and not before.done():
            await asyncio.wait([before])  # its failure is its own (logged, counted): this one is stored anyway
        await bus.publish_event(self.nc, event)

    def _reported(self, session: str, task: asyncio.Task) -> None:
        self.reporting.discard(task)
        if self._storing.get(session) is task:
            del self._storing[session]
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.stats["events_lost"] += 1
            log.error("tts event not stored: %s", exc, exc_info=exc)

    def _release_when_stored(self, key: tuple[str, int, int]) -> None:
        """Ack a chunk's request once the events it made are stored: a worker
        that dies before then has it delivered again, so the session still
        hears that the chunk began and ended."""
        last = self._storing.get(key[0])
        if last is None:
            self._release(key)
        else:
            last.add_done_callback(lambda _task: self._release(key))
