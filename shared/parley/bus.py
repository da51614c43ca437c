"""Thin helpers over nats-py: connecting, and publishing contract messages and audio.

Session events go through ``publish_event`` and nothing else: it publishes to
JetStream (stream ``subjects.EVENTS_STREAM``) and waits for the stream's ack,
so an event that returned is stored until an orchestrator has reduced it. A
retry after a lost ack carries the same ``Nats-Msg-Id``, and the stream stores
it once. Audio never travels as JSON or base64 and never through the stream: a
message body is raw PCM16 LE mono on core NATS, and the sequence number, sample
rate (and for TTS the chunk and end-of-chunk flag) ride in NATS headers, named
in ``parley.subjects``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import weakref

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.nuid import NUID

from . import contract, natsauth, subjects

log = logging.getLogger("parley.bus")

# How long publish_event keeps trying (a server restart, a stream not created
# yet) before it gives up loudly.
PUBLISH_PATIENCE = 15.0
# How long the stream remembers a message id: retries come within seconds.
DUPLICATE_WINDOW = 30.0


class EventNotStored(RuntimeError):
    """publish_event could not get the event stored within PUBLISH_PATIENCE."""


async def connect(url: str | None = None, name: str = "parley", credentials: natsauth.Credentials | None = None, replicas: int = 1, **options) -> Client:
    """Connect with reconnects on and errors logged rather than raised.

    ``credentials``: the service's nkey (and TLS CA), from
    ``natsauth.Credentials.from_env``; without them, the URL's own (a
    ``user:password@`` in it) or none. ``replicas``: copies of each stream
    and KV bucket this connection creates (``PARLEY_NATS_REPLICAS``: 1 for
    one server, 3 for a three-node cluster).
    """

    async def error_cb(exc: Exception) -> None:
        log.warning("nats error: %s", exc)

    async def disconnected_cb() -> None:
        log.warning("nats disconnected")

    async def reconnected_cb() -> None:
        log.info("nats reconnected")

    nc = await nats.connect(
        servers(url or os.environ.get("NATS_URL", "nats://127.0.0.1:4222")),
        name=name,
        error_cb=error_cb,
        disconnected_cb=disconnected_cb,
        reconnected_cb=reconnected_cb,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        **{**(credentials.connect_options() if credentials else {}), **options},
    )
    _replicas[nc] = replicas
    _stream_makers[nc] = not (credentials and credentials.seed) or (
        credentials.role in natsauth.ROLES and natsauth.may_publish(credentials.role, natsauth.CREATE_EVENT_STREAM)
    )
    return nc


def servers(url: str) -> list[str]:
    """NATS_URL may list every server of a cluster, comma-separated
    (``nats://a:4222,nats://b:4222,nats://c:4222``): a client then connects
    to any that answers and fails over to the others (nats-py also learns the
    cluster's members from the server it reached)."""
    out = [u.strip() for u in url.split(",") if u.strip()]
    if not out:
        raise ValueError(f"NATS_URL names no server: {url!r}")
    return out


# Copies the NATS cluster keeps of each stream and KV bucket, per connection
# (``bus.connect(..., replicas=settings.nats_replicas)``): whatever creates a
# stream or bucket over that connection asks for that many.
_replicas: "weakref.WeakKeyDictionary[Client, int]" = weakref.WeakKeyDictionary()


def replicas(nc: Client) -> int:
    """How many copies of each stream and KV bucket made over ``nc`` (1
    unless ``connect`` was told otherwise)."""
    return _replicas.get(nc, 1)


def event_stream_config(partitions: int = subjects.EVENT_PARTITIONS, replicas: int = 1) -> dict:
    """The event stream, as the JetStream API takes it."""
    return {
        "name": subjects.EVENTS_STREAM,
        "subjects": [subjects.EVENTS_ALL, subjects.EVENT_BEATS],
        "retention": "workqueue",
        "storage": "file",
        "allow_direct": True,
        "duplicate_window": int(DUPLICATE_WINDOW * 1e9),
        # Events not reduced within a day are not going to be.
        "max_age": 24 * 3600 * 10**9,
        "num_replicas": replicas,
        # parley.evt.<session>.<producer> -> parley.evt.<partition>.<session>.<producer>:
        # the partition hashes the session only, so one session's events
        # stay in order whoever produced them.
        "subject_transform": {
            "src": subjects.EVENTS_ALL,
            "dest": f"{subjects.PREFIX}.evt.{{{{partition({partitions},1)}}}}.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}",
        },
    }


# TTS requests (issue 10 point 4): a worker holding a Synthesize says it is
# still at it every TTS_PROGRESS_S; one that died stops, and the request goes
# to another worker TTS_ACK_WAIT_S after its last word (measured on 2.15:
# redelivery comes exactly ack_wait after the last ack/progress).
TTS_ACK_WAIT_S = 0.8
TTS_PROGRESS_S = 0.25
TTS_MAX_DELIVER = 4  # a request that killed three workers is not tried a fourth time


def tts_stream_config(replicas: int = 1) -> dict:
    """The TTS request stream: work queue, so a Synthesize is gone once a
    worker finished with it; a minute old, it is not worth saying."""
    return {
        "name": subjects.TTS_STREAM,
        "subjects": [subjects.TTS_REQUEST],
        "retention": "workqueue",
        "storage": "file",
        "duplicate_window": int(DUPLICATE_WINDOW * 1e9),
        "max_age": 60 * 10**9,
        "num_replicas": replicas,
    }


def tts_consumer_config() -> dict:
    return {
        "durable_name": subjects.TTS_CONSUMER,
        "ack_policy": "explicit",
        "ack_wait": int(TTS_ACK_WAIT_S * 1e9),
        "max_deliver": TTS_MAX_DELIVER,
        "max_ack_pending": 10_000,
        "num_replicas": 0,  # the stream's
    }


STREAM_WAIT = 120.0  # s a service that may not make a stream waits for the orchestrator to


async def ensure_stream(nc: Client, cfg: dict, update: bool = False) -> None:
    """Create a stream if it does not exist (the orchestrator, or a client
    without credentials; the other services wait until it exists).
    ``update`` (the orchestrator, at start): an existing stream whose
    subjects or transform differ from ours (an older layout, or one somebody
    else made) is brought to ours, loudly."""
    name = cfg["name"]
    if not _may_make_stream(nc):
        await _wait_for_stream(nc, name)
        return
    reply = await nc.request(f"$JS.API.STREAM.CREATE.{name}", json.dumps(cfg).encode(), timeout=5)
    error = json.loads(reply.data).get("error")
    if error and error.get("err_code") != 10058:  # 10058: exists with another config
        raise RuntimeError(f"cannot create stream {name}: {error}")
    if not error or not update:
        return
    info = json.loads((await nc.request(f"$JS.API.STREAM.INFO.{name}", b"", timeout=5)).data)
    have = info.get("config", {})
    if sorted(have.get("subjects", [])) == sorted(cfg["subjects"]) and have.get("subject_transform") == cfg.get("subject_transform"):
        return
    log.warning(
        "stream layout changed: updating it",
        extra={"stream": name, "had_subjects": have.get("subjects"), "had_transform": have.get("subject_transform"), "subjects": cfg["subjects"]},
    )
    new = {**have, "subjects": cfg["subjects"], "subject_transform": cfg.get("subject_transform")}
    answer = json.loads((await nc.request(f"$JS.API.STREAM.UPDATE.{name}", json.dumps(new).encode(), timeout=5)).data)
    if answer.get("error"):
        raise RuntimeError(f"cannot update stream {name} to the current layout: {answer['error']}")


async def _wait_for_stream(nc: Client, name: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STREAM_WAIT
    while True:
        try:
            reply = json.loads((await nc.request(f"$JS.API.STREAM.INFO.{name}", b"", timeout=2)).data)
            if not reply.get("error"):
                return
            problem = str(reply["error"])
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.errors.ConnectionReconnectingError) as exc:
            problem = type(exc).__name__
        if loop.time() > deadline:
            raise RuntimeError(f"stream {name} does not exist (the orchestrator makes it): {problem}")
        log.info("waiting for the orchestrator to make a stream", extra={"stream": name, "error": problem})
        await asyncio.sleep(1.0)


async def ensure_event_stream(nc: Client, update: bool = False) -> None:
    """Create the event stream if it does not exist (see ensure_stream)."""
    await ensure_stream(nc, event_stream_config(replicas=replicas(nc)), update=update)


_nuids: "weakref.WeakKeyDictionary[Client, NUID]" = weakref.WeakKeyDictionary()
# Connections that may create streams: without credentials (a server
# without authorization: unit tests) or the orchestrator's. The others may
# not (natsauth.ROLES): a worker that could create the event stream could
# also give it a transform that relabels its events as another producer's.
_stream_makers: "weakref.WeakKeyDictionary[Client, bool]" = weakref.WeakKeyDictionary()


def _may_make_stream(nc: Client) -> bool:
    return _stream_makers.get(nc, True)


async def publish_event(nc: Client, event: contract.Event, headers: dict[str, str] | None = None, acked: bool = True) -> None:
    """Store one session event (see the module doc); raises EventNotStored when
    the stream could not be reached for PUBLISH_PATIENCE seconds.

    ``acked=False`` does not wait for the stream's ack: only for numbered
    streams of events whose loss the reducer detects as a gap and repairs
    (LLM tokens, ``contract.LLMEvent.seq``), where waiting for each ack
    would slow the stream down under load."""
    nuid = _nuids.get(nc)
    if nuid is None:
        # First event on this connection: make sure the stream is there (a
        # core subscriber on the subject would otherwise hide its absence).
        await _try(nc, ensure_event_stream(nc))
        nuid = _nuids[nc] = NUID()
    hdrs = {**(headers or {}), "Nats-Msg-Id": nuid.next().decode()}
    data = contract.encode(event)
    subject = subjects.event_from(event.session, contract.producer_of(event))
    if not acked:
        await nc.publish(subject, data, headers=hdrs)
        return
    await publish_stored(nc, subject, data, hdrs, event_stream_config, f"{contract.type_name(event)} of {event.session}", event.session)


async def publish_synthesize(nc: Client, cmd: contract.Synthesize, headers: dict[str, str] | None = None) -> None:
    """Store a TTS request (stream ``subjects.TTS_STREAM``), once: its id is
    the chunk's, so a new orchestrator owner sending it again (the outbox) is
    a duplicate the stream drops, whether or not the first one got there."""
    hdrs = {**(headers or {}), "Nats-Msg-Id": f"{cmd.session}.{cmd.run}.{cmd.chunk}"}
    await publish_stored(nc, subjects.TTS_REQUEST, contract.encode(cmd), hdrs, tts_stream_config, f"Synthesize {cmd.run}/{cmd.chunk} of {cmd.session}", cmd.session)


async def publish_stored(nc: Client, subject: str, data: bytes, hdrs: dict[str, str], config, what: str, session: str) -> None:
    """A JetStream publish that waits for the stream's ack and retries (same
    headers, so same ``Nats-Msg-Id``) for PUBLISH_PATIENCE seconds; creates
    the stream (``config(replicas=...)``) when nobody answers."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PUBLISH_PATIENCE
    pause = 0.05
    while True:
        try:
            reply = await nc.request(subject, data, timeout=2.0, headers=hdrs)
        except nats.errors.NoRespondersError:
            # No stream yet (the first service up publishes before any
            # orchestrator made it): make it.
            problem = "no stream"
            await _try(nc, ensure_stream(nc, config(replicas=replicas(nc))))
        except (nats.errors.TimeoutError, nats.errors.ConnectionReconnectingError, nats.errors.OutboundBufferLimitError) as exc:
            problem = type(exc).__name__
            if isinstance(exc, nats.errors.TimeoutError):
                await _try(nc, ensure_stream(nc, config(replicas=replicas(nc))))
        else:
            answer = json.loads(reply.data)
            if "error" not in answer:
                return
            problem = str(answer["error"])
        if loop.time() > deadline:
            raise EventNotStored(f"{what} not stored: {problem}")
        log.warning("message not stored yet, retrying", extra={"session_id": session, "subject": subject, "error": problem})
        await asyncio.sleep(pause)
        pause = min(pause * 2, 1.0)


async def through_election(op, what: str, session: str = "", reads: bool = False):
    """``await op()`` (a KV write or read), again while no server answers it,
    for up to PUBLISH_PATIENCE: in a NATS cluster, a stream or KV bucket has
    no leader for a few seconds after its leader's node died (RAFT election:
    4-9 s after a kill -9, measured), and a request to it then finds "no
    responders". Such a request reached no stream, so it was not applied and
    is safe to send again; a timeout (or the API's "no leader", 503) may
    have been applied and is raised, unless ``reads`` (the op changes
    nothing: a read is always safe again)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PUBLISH_PATIENCE
    pause = 0.05
    while True:
        try:
            return await op()
        except (
            nats.js.errors.NoStreamResponseError, nats.errors.NoRespondersError, nats.errors.ConnectionReconnectingError, nats.errors.TimeoutError,
            nats.js.errors.ServiceUnavailableError,  # an API read (MSG.GET) while the stream has no leader
        ) as exc:  # fmt: skip
            unsure = isinstance(exc, (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError))
            if loop.time() > deadline or (unsure and not reads):
                raise
            log.warning("%s: no leader answers yet, retrying", what, extra={"session_id": session, "error": type(exc).__name__})
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)


async def _try(nc: Client, coro) -> None:
    if not _may_make_stream(nc):
        coro.close()  # the orchestrator makes it; until then, publishing retries
        return
    try:
        await coro
    except Exception as exc:  # noqa: BLE001 - the caller retries and reports
        log.warning("could not create a stream: %s", exc)


def audio_headers(seq: int, rate: int, chunk: int | None = None, last: bool = False, worker: str | None = None, encoding: str | None = None) -> dict[str, str]:
    h = {subjects.H_SEQ: str(seq), subjects.H_RATE: str(rate)}
    if encoding:
        h[subjects.H_ENCODING] = encoding
    if chunk is not None:
        h[subjects.H_CHUNK] = str(chunk)
        h[subjects.H_LAST] = "1" if last else "0"
    if worker:
        h[subjects.H_WORKER] = worker
    return h


class AudioMeta:
    """Parsed audio headers; raises ValueError on missing or malformed ones."""

    __slots__ = ("seq", "rate", "chunk", "last", "worker", "encoding")

    def __init__(self, headers: dict[str, str] | None):
        h = headers or {}
        try:
            self.seq = int(h[subjects.H_SEQ])
            self.rate = int(h[subjects.H_RATE])
            self.chunk = int(h[subjects.H_CHUNK]) if subjects.H_CHUNK in h else None
        except (KeyError, ValueError) as exc:
            raise ValueError(f"bad audio headers {h!r}") from exc
        self.last = h.get(subjects.H_LAST) == "1"
        self.worker = h.get(subjects.H_WORKER, "")
        self.encoding = h.get(subjects.H_ENCODING, "pcm16")
