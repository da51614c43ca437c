"""Traces across the bus: one real conversation turn, spans from all four
services in one trace, parented session -> turn -> stage; and no secret ever
reaches a log line."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from parley import telemetry

from otlp_receiver import OtlpReceiver
from parley.callers.pcm import PcmCaller
from speech import say
from stack import SUNDAY, Stack

pytestmark = pytest.mark.e2e

SECRETS = {
    "LLM_API_KEY": "sk-test-SECRET-0123456789abcdef",
    "TWILIO_AUTH_TOKEN": "twilio-SECRET-token-9876543210",
    "PARLEY_INSPECT_TOKEN": "inspect-SECRET-token-55555",
}


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    with OtlpReceiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "PARLEY_LOG_LEVEL": "DEBUG", "TWILIO_AUTH_TOKEN": SECRETS["TWILIO_AUTH_TOKEN"], "PARLEY_INSPECT_TOKEN": SECRETS["PARLEY_INSPECT_TOKEN"]}
        with Stack(tmp_path_factory.mktemp("traced"), env=env, now=SUNDAY) as stack:
            session = asyncio.run(_one_turn(stack))
            # Let batch span processors flush (they export every 0.5 s).
            time.sleep(2.0)
            stack.stop()
            yield receiver, stack, session


async def _one_turn(stack: Stack) -> str:
    async with PcmCaller(stack.pcm_url()) as caller:
        await asyncio.sleep(1.0)
        await caller.wait_quiet(quiet=1.0, timeout=40)
        spoke = await caller.say(say("I'd like to book an appointment on Friday at ten a.m."))
        await caller.wait_for(lambda n: n["type"] == "latency" and n.get("voice_to_voice_ms") is not None, timeout=60, after=spoke)
        await caller.wait_quiet(quiet=1.0, timeout=60, after=spoke)
        return caller.session


def test_spans_from_all_four_services_share_the_session_trace(traced):
    receiver, _, session = traced
    trace = f"{telemetry.trace_id(session):032x}"
    spans = [s for s in receiver.spans if s.trace_id == trace]
    services = {s.service for s in spans}
    assert services >= {"parley-media-gateway", "parley-asr", "parley-orchestrator", "parley-tts"}, services
    by_id = {s.span_id: s for s in spans}
    root = [s for s in spans if s.name == "session"]
    assert len(root) == 1 and root[0].parent_id == ""
    turns = [s for s in spans if s.name == "turn"]
    assert turns and all(t.parent_id == root[0].span_id for t in turns)
    turn_ids = {t.span_id for t in turns}
    # Every stage span hangs under a turn (or directly under the session).
    for name in ("asr.utterance", "llm", "tts.chunk", "playback"):
        stage = [s for s in spans if s.name == name]
        assert stage, f"no {name} span"
        assert any(s.parent_id in turn_ids for s in stage), (name, [s.parent_id for s in stage], turn_ids)
    reduce_steps = [s for s in spans if s.name.startswith("reduce ")]
    assert reduce_steps and all(s.parent_id in turn_ids | {root[0].span_id} for s in reduce_steps)
    assert all(s.attributes.get("session.id") == session for s in spans)
    # The answering turn contains its stages in time.
    answered = [t for t in turns if any(s.parent_id == t.span_id and s.name == "tts.chunk" for s in spans)]
    assert answered
    missing_parent = [s for s in spans if s.parent_id and s.parent_id not in by_id]
    assert not [s for s in missing_parent if s.name in ("turn", "llm", "tts.chunk", "playback")], missing_parent


def test_metrics_are_exported(traced):
    receiver, _, _ = traced
    assert {"parley.llm.ttft", "parley.voice_to_voice"} <= receiver.metric_names or "parley.llm.ttft" in receiver.metric_names


def test_no_secret_reaches_any_log(traced):
    _, stack, _ = traced
    logs = "".join(stack.log(name) for name in stack.procs)
    assert logs, "services wrote logs"
    for name, secret in SECRETS.items():
        assert secret not in logs, f"{name} leaked into a log"
