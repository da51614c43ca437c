"""A service speaks only for itself on the bus: per-producer event subjects.

Each event type has one producer (``contract.PRODUCERS``), events travel on
``parley.evt.<session>.<producer>``, and each service's NATS credentials may
publish under its own producer token only. Against a real nats-server with
the generated permissions and an orchestrator runtime on the orchestrator's
credentials:

* the ASR worker's credentials cannot publish on the gateway's or the
  orchestrator's event subjects (the server refuses, nothing is stored), nor
  create or change the event stream;
* an event type published under the wrong producer's token (an ASR worker's
  ``SessionEnded`` or ``ToolResult``, a TTS worker's transcript), or naming
  another session than its subject, is refused by the orchestrator: never
  reduced, counted (``events_forged``), logged as an error; the call goes on
  and the genuine events after it are reduced.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from pathlib import Path

import nats
import pytest

from parley import bus, contract as c, natsauth, subjects
from parley.natsd import NatsServer, free_port
from parley_orchestrator.adapters.fixed import FixedLatencyBrain
from parley_orchestrator.records import decode_stored
from parley_orchestrator.runtime import Runtime
from parley_orchestrator.tools import ToolRegistry

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def secured(tmp_path):
    password = secrets.token_urlsafe(12)
    made = natsauth.ensure(tmp_path / "secrets", ROOT / "deploy" / "nats.conf", [natsauth.user_block("test", user="test", password=password)])
    srv = NatsServer(free_port(), tmp_path / "nats", made.config).start(log=tmp_path / "nats.log")
    try:
        yield srv, made, f"nats://test:{password}@127.0.0.1:{srv.port}"
    finally:
        srv.stop()


async def _as(role, srv, made, errors=None):
    creds = natsauth.Credentials(seed=made.seeds[role], role=role)
    if errors is None:
        return await bus.connect(srv.url, name=role, credentials=creds)

    async def on_error(exc):  # nats-py wants a coroutine function
        errors.append(str(exc))

    return await nats.connect(srv.url, name=role, error_cb=on_error, **creds.connect_options())


async def _stored(nc, session):
    """The subjects of ``session``'s events still in the stream."""
    reply = await nc.request(f"$JS.API.STREAM.INFO.{subjects.EVENTS_STREAM}", json.dumps({"subjects_filter": subjects.stored_events(session)}).encode())
    return json.loads(reply.data)["state"].get("subjects") or {}


async def _wait(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await pred():
            return True
        await asyncio.sleep(0.05)
    return False


def test_each_producer_may_publish_only_its_own_events_in_the_table():
    for role in natsauth.ROLES:
        for producer in subjects.PRODUCERS:
            assert natsauth.may_publish(role, subjects.event_from("s1", producer)) == (role == producer), (role, producer)
        assert natsauth.may_publish(role, natsauth.CREATE_EVENT_STREAM) == (role == "orchestrator"), role
    # Every event type has a producer (a new event type without one fails
    # here, not in production), and every producer is a service that exists.
    import typing

    assert set(typing.get_args(c.AnyEvent)) == set(c.PRODUCERS) | set(c.PRODUCERS_BY_SERVICE)
    assert set(c.PRODUCERS.values()) | {p for m in c.PRODUCERS_BY_SERVICE.values() for p in m.values()} == set(subjects.PRODUCERS)
    assert c.producer_of(c.Usage(session="s", at=0, service="llm", provider="p", unit="u", amount=1)) == "orchestrator"
    assert not c.may_produce(c.ProviderFailed(session="s", at=0, service="tts", provider="p", error="e"), "asr")


def test_asr_cannot_speak_for_another_service_and_a_forged_event_is_refused_loudly(secured, caplog):
    srv, made, test_url = secured

    async def scenario():
        orch = await _as("orchestrator", srv, made)
        rt = Runtime(nc=orch, brain=FixedLatencyBrain(), tools=ToolRegistry(), defaults={"greeting": ""})
        await rt.start()
        gateway = await _as("gateway", srv, made)
        asr_errors: list[str] = []
        asr = await _as("asr", srv, made, asr_errors)
        tts = await _as("tts", srv, made)
        test = await nats.connect(test_url)
        kv = await test.jetstream().key_value(subjects.SESSIONS_BUCKET)

        async def state(session):
            try:
                return decode_stored((await kv.get(session)).value)
            except Exception:  # noqa: BLE001 - not written yet
                return None

        await bus.publish_event(gateway, c.SessionStarted(session="f1", at=time.time()))
        assert await _wait(lambda: _consumed(state, "f1", 1))

        # 1. NATS refuses: the ASR credentials on the gateway's and the orchestrator's subjects.
        for forged in (c.SessionEnded(session="f1", at=time.time(), reason="forged"), c.ToolResult(session="f1", at=time.time(), run=1, call_id="x", name="book", result="{}")):
            await asr.publish(subjects.event_from("f1", c.producer_of(forged)), c.encode(forged))
        for verb in ("STREAM.CREATE", "STREAM.UPDATE", "STREAM.DELETE"):
            await asr.publish(f"$JS.API.{verb}.{subjects.EVENTS_STREAM}", json.dumps(bus.event_stream_config()).encode())
        await asr.flush()
        assert await _wait(lambda: _true(len([e for e in asr_errors if "permissions violation" in e.lower()]) >= 5)), asr_errors
        assert set(await _stored(test, "f1")) <= {f"parley.evt.{p}.f1.gateway" for p in range(subjects.EVENT_PARTITIONS)}

        # 2. Allowed by NATS (their own token) but not their type: the orchestrator refuses.
        forgeries = [
            (asr, c.SessionEnded(session="f1", at=time.time(), reason="forged"), "asr"),
            (asr, c.ToolResult(session="f1", at=time.time(), run=1, call_id="x", name="book", result="{}"), "asr"),
            (tts, c.TranscriptFinal(session="f1", at=time.time(), utterance=0, text="transfer me"), "tts"),
            (gateway, c.LLMToken(session="f1", at=time.time(), run=1, step=0, text="hi"), "gateway"),
            (gateway, c.SessionEnded(session="f2", at=time.time()), "gateway"),  # names another session
        ]
        for nc, event, producer in forgeries:
            reply = await nc.request(subjects.event_from("f1", producer), c.encode(event), timeout=5)
            assert "error" not in json.loads(reply.data)  # stored: the stream cannot tell, the orchestrator can
        assert await _wait(lambda: _true(rt.stats["events_forged"] == len(forgeries))), rt.stats

        # 3. The call goes on: genuine events after the forgeries are reduced.
        await bus.publish_event(asr, c.SpeechStarted(session="f1", at=time.time(), utterance=0))
        assert await _wait(lambda: _consumed(state, "f1", 2))
        stored = await state("f1")
        assert stored.state.phase != "Ended"
        assert rt.stats["events_forged"] == len(forgeries)
        assert await state("f2") is None  # the event naming f2 touched nothing
        await rt.stop()
        for nc in (orch, gateway, asr, tts, test):
            await nc.close()

    with caplog.at_level(logging.ERROR):
        asyncio.run(scenario())
    refused = [r for r in caplog.records if r.getMessage() == "forged event refused"]
    assert len(refused) == 5
    assert {(getattr(r, "event"), getattr(r, "producer")) for r in refused} >= {("SessionEnded", "asr"), ("ToolResult", "asr"), ("TranscriptFinal", "tts")}


async def _true(value):
    return value


async def _consumed(state, session, n):
    stored = await state(session)
    return stored is not None and stored.consumed >= n


def test_the_role_of_a_seed_file_follows_make_run_and_compose_names(tmp_path):
    """Only the orchestrator's connection makes streams: its role must be
    known from the seed file's name under make run and docker compose alike."""
    from parley.settings import ServiceSettings

    made = natsauth.ensure(tmp_path / "s")
    compose = tmp_path / "nats_orchestrator"
    compose.write_text(made.seeds["orchestrator"])
    for path in (made.seed_file("orchestrator"), compose):
        assert natsauth.Credentials.from_env({natsauth.SEED_FILE_ENV: str(path)}).role == "orchestrator"
        assert ServiceSettings.from_env({natsauth.SEED_FILE_ENV: str(path)}).nats_credentials.role == "orchestrator"
