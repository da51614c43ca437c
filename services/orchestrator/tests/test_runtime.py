"""The runtime around a real nats-server: events in, state in KV, log in JetStream, commands out."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import msgspec
import pytest
from nats.js.errors import KeyNotFoundError

from parley import bus, contract as c, fakeclock, subjects, telemetry
from parley.natsd import NatsServer, free_port
from parley_orchestrator.adapters.fixed import FixedLatencyBrain
from parley_orchestrator.adapters.llm import Done, ToolCallOut, Token
from parley_orchestrator.cli import fetch
from parley_orchestrator.observe import StepObserver
from parley_orchestrator.replay import replay
from parley_orchestrator.records import decode_stored
from parley_orchestrator.runtime import Runtime


class OneTool:
    """A registry with one tool that records its calls."""

    def __init__(self):
        self.calls = []

    def schemas(self):
        return [{"type": "function", "function": {"name": "book_appointment", "parameters": {"type": "object"}}}]

    async def call(self, name, arguments, call_id=""):
        self.calls.append((name, arguments))
        return True, json.dumps({"booked": True})


class ToolThenText:
    name = "scripted"

    async def stream(self, messages, tools):
        if messages[-1].role == "tool":
            yield Token(text="You're booked. ")
            yield Done()
        else:
            yield Token(text="One moment. ")
            yield ToolCallOut(call_id="c1", name="book_appointment", arguments='{"time": "15:00"}')
            yield Done(finish_reason="tool_calls")


@pytest.fixture
def nats(tmp_path):
    with NatsServer(free_port(), tmp_path / "nats") as server:
        yield server


async def _collect(nc, subject, into):
    async def cb(msg):
        into.append(msg)

    return await nc.subscribe(subject, cb=cb)


async def _first_turn(nc, session: str, text: str) -> None:
    """A session starts and the caller says ``text``: the events the gateway
    and the ASR would store."""
    now = time.time()
    for ev in [
        c.SessionStarted(session=session, at=now),
        c.SpeechStarted(session=session, at=now, utterance=0),
        c.SpeechStopped(session=session, at=now, utterance=0),
        c.TranscriptFinal(session=session, at=now, utterance=0, text=text),
    ]:
        await bus.publish_event(nc, ev)


async def _wait(pred, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.02)
    raise TimeoutError


def test_a_turn_with_a_tool_goes_through_kv_and_the_log(nats):
    async def scenario():
        nc = await bus.connect(nats.url)
        tools = OneTool()
        rt = Runtime(nc=nc, brain=ToolThenText(), tools=tools, defaults={"greeting": ""})
        rt.observer = StepObserver(telemetry.setup("orchestrator-test"))
        await rt.start()
        synth, play = [], []
        await _collect(nc, subjects.TTS_REQUEST, synth)
        await _collect(nc, subjects.playback("s1"), play)
        await _first_turn(nc, "s1", "book me at 3")
        await _wait(lambda: len(synth) >= 2)
        texts = [contract_text(m) for m in synth]
        assert texts == ["One moment.", "You're booked."]
        assert tools.calls == [("book_appointment", '{"time": "15:00"}')]
        # Stale output is dropped and logged as such.
        await bus.publish_event(nc, c.LLMToken(session="s1", at=time.time(), run=42, step=0, text="stale"))
        for chunk in (0, 1):
            await bus.publish_event(nc, c.PlaybackProgress(session="s1", at=time.time(), run=1, chunk=chunk, finished=True))
        kv = await nc.jetstream().key_value(subjects.SESSIONS_BUCKET)

        async def phase():
            return decode_stored((await kv.get("s1")).value).state

        for _ in range(200):
            st = await phase()
            if st.phase == "Listening" and st.history:
                break
            await asyncio.sleep(0.02)
        assert [m.role for m in st.history] == ["user", "assistant", "tool", "assistant"]
        await rt.stop()
        await nc.close()
        steps, digest = await fetch("s1", nats.url)
        assert any(s.dropped == "stale" for s in steps)
        result = replay(steps, digest)
        assert result.ok and result.digest_checked

    asyncio.run(scenario())


async def _stream_commands(nc, stream):
    """Every command a stream holds, in order."""
    js = nc.jetstream()
    info = await js.stream_info(stream)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        out.append(c.decode_command((await js.get_msg(stream, seq)).data))
    return out


def contract_text(msg):
    return c.decode_command(msg.data).text


async def _balanced(*runtimes, timeout=15):
    """Wait until every replica owns its fair share of the partitions."""
    fair = -(-runtimes[0].partitions // len(runtimes))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        owned = [len(r.ownership.owned()) for r in runtimes]
        if sum(owned) == runtimes[0].partitions and max(owned) <= fair:
            return owned
        await asyncio.sleep(0.05)
    raise TimeoutError(f"not balanced: {[r.ownership.owned() for r in runtimes]}")


def test_two_replicas_reduce_each_session_in_order_and_share_the_sessions(nats):
    """Two replicas: the partitions are shared out, each session is reduced by
    one replica, every event exactly once and in the order it was published."""

    async def scenario():
        nc1, nc2 = await bus.connect(nats.url), await bus.connect(nats.url)
        r1 = Runtime(nc=nc1, brain=FixedLatencyBrain(first_token=0.0, per_token=0.0), tools=OneTool())
        r2 = Runtime(nc=nc2, brain=FixedLatencyBrain(first_token=0.0, per_token=0.0), tools=OneTool())
        await r1.start()
        await r2.start()
        # The partitions are spread over the replicas, not all on the first.
        await _balanced(r1, r2)
        pub = await bus.connect(nats.url)
        now = time.time()
        sessions = [f"o{i}" for i in range(16)]
        n = 30
        for s in sessions:
            # No re-prompt inside the test, however slow the machine: only the published events are reduced.
            await bus.publish_event(pub, c.SessionStarted(session=s, at=now, params={"reprompt_after": "3600"}))

        async def partials(s):
            for i in range(n):
                await bus.publish_event(pub, c.TranscriptPartial(session=s, at=now, utterance=0, text=f"p{i}"))

        await asyncio.gather(*(partials(s) for s in sessions))
        kv = await nc1.jetstream().key_value(subjects.SESSIONS_BUCKET)

        async def consumed(s):
            try:
                return decode_stored((await kv.get(s)).value).consumed
            except KeyNotFoundError:
                return 0

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and [await consumed(s) for s in sessions] != [n + 1] * len(sessions):
            await asyncio.sleep(0.05)
        assert [await consumed(s) for s in sessions] == [n + 1] * len(sessions)
        assert r1.stats["events"] + r2.stats["events"] == len(sessions) * (n + 1)
        assert r1.stats["events"] > 0 and r2.stats["events"] > 0, "both replicas took part"
        for s in sessions:
            steps, digest = await fetch(s, nats.url)
            assert [st.index for st in steps] == list(range(n + 1))
            assert [st.event.text for st in steps[1:]] == [f"p{i}" for i in range(n)], "reduced in publish order"
            assert replay(steps, digest).ok
        for r, nc in ((r1, nc1), (r2, nc2)):
            await r.stop()
            await nc.close()
        await pub.close()

    asyncio.run(scenario())


def test_a_reducer_bug_is_logged_counted_and_ends_the_session(nats, monkeypatch, caplog):
    from parley_orchestrator import reducer

    async def scenario():
        nc = await bus.connect(nats.url)
        rt = Runtime(nc=nc, brain=FixedLatencyBrain(first_token=0.0, per_token=0.0), tools=OneTool())
        await rt.start()
        play, control = [], []
        await _collect(nc, subjects.playback("s3"), play)
        await _collect(nc, subjects.control("s3"), control)
        now = time.time()
        await bus.publish_event(nc, c.SessionStarted(session="s3", at=now))
        key = (reducer.LISTENING, c.Dtmf)
        monkeypatch.setitem(reducer._ROWS, key, msgspec.structs.replace(reducer._ROWS[key], handler=lambda fx, e: 1 / 0))
        await bus.publish_event(nc, c.Dtmf(session="s3", at=now, digit="1"))
        await _wait(lambda: control and play)
        assert isinstance(c.decode_command(play[-1].data), c.EndSession)
        assert c.decode(control[-1].data, c.SessionControl).reason == "internal error"
        assert rt.stats["bugs"] == 1 and rt.stats["rejected"] == 0
        await rt.stop()
        await nc.close()
        steps, _ = await fetch("s3", nats.url)
        assert steps[-1].error.startswith("reducer bug: ZeroDivisionError") and steps[-1].state_to == "Ended"

    with caplog.at_level("ERROR", logger="parley.orchestrator"):
        asyncio.run(scenario())
    bug = [rec for rec in caplog.records if rec.levelname == "ERROR" and "reducer bug" in rec.getMessage()]
    assert bug and "ZeroDivisionError" in bug[0].getMessage()


_REPLICA = """
import asyncio, sys
from parley import bus
from parley_orchestrator.adapters.fixed import FixedLatencyBrain
from parley_orchestrator.runtime import Runtime

class NoTools:
    def schemas(self):
        return []

async def main():
    nc = await bus.connect(sys.argv[1])
    brain = FixedLatencyBrain(first_token=float(sys.argv[2]), per_token=float(sys.argv[3]))
    rt = Runtime(nc=nc, brain=brain, tools=NoTools(), replica="doomed")
    await rt.start()
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def doomed_replica(url: str, first_token: float = 0.0, per_token: float = 0.0):
    """A replica named "doomed" in a process of its own (to be killed with
    SIGKILL); it prints "ready" once it pulls. Its LLM is the fixed one."""
    env = {**os.environ, **fakeclock.child_env(os.environ)}
    return subprocess.Popen([sys.executable, "-c", _REPLICA, url, str(first_token), str(per_token)], stdout=subprocess.PIPE, env=env)


def test_a_replica_killed_mid_answer_is_taken_over_and_the_answer_goes_on(nats):
    """kill -9 of the replica streaming a reply: another replica takes the
    session over, restarts the LLM step, and the reply is synthesized whole,
    each chunk once, in order."""
    from parley_orchestrator.adapters.fixed import CANNED_REPLY

    async def scenario():
        proc = doomed_replica(nats.url, first_token=0.05, per_token=0.08)
        try:
            assert proc.stdout.readline().strip() == b"ready"
            nc = await bus.connect(nats.url)
            synth, steps = [], []
            await _collect(nc, subjects.TTS_REQUEST, synth)
            await _collect(nc, subjects.observe("k1"), steps)
            await _first_turn(nc, "k1", "book me in")
            # Mid-answer: the first chunk went to TTS, the LLM is still streaming.
            await _wait(lambda: len(synth) >= 1)
            proc.kill()
            proc.wait()
            survivor = Runtime(nc=nc, brain=FixedLatencyBrain(first_token=0.05, per_token=0.01), tools=OneTool(), replica="survivor")
            await survivor.start()
            await _wait(lambda: any(isinstance(c.decode_step(m.data).event, c.LLMDone) for m in steps), timeout=20)
            # The survivor sends the last batch's Synthesize again (the old
            # owner may have died before it left); core subscribers see both,
            # the TTS stream, which workers pull from, keeps one (by chunk id).
            stored = await _stream_commands(nc, subjects.TTS_STREAM)
            texts = [cmd.text for cmd in stored]
            assert [(cmd.run, cmd.chunk) for cmd in stored] == [(1, k) for k in range(len(stored))]
            assert " ".join(texts).split() == CANNED_REPLY.split(), texts
            decoded = [c.decode_step(m.data) for m in steps]
            assert any(isinstance(s.event, c.Takeover) and s.event.owner == "survivor" for s in decoded)
            for chunk in range(len(texts)):
                await bus.publish_event(nc, c.PlaybackProgress(session="k1", at=time.time(), run=1, chunk=chunk, finished=True))
            kv = await nc.jetstream().key_value(subjects.SESSIONS_BUCKET)
            await _wait(lambda: decoded_phase(steps) == "Listening")
            stored = decode_stored((await kv.get("k1")).value)
            assert stored.owner == "survivor" and stored.state.history[-1].content == CANNED_REPLY
            assert any(name == "max_call" for name, _, _ in stored.timers), "timers kept with their deadlines"
            await survivor.stop()
            await nc.close()
            logged, digest = await fetch("k1", nats.url)
            assert [s.index for s in logged] == list(range(len(logged)))
            assert replay(logged, digest).ok
        finally:
            proc.kill()

    asyncio.run(scenario())


def decoded_phase(steps):
    return c.decode_step(steps[-1].data).state_to if steps else None


class PressesTwo:
    """A model on a call Parley placed: it presses 2, then says nothing."""

    name = "keys"

    def __init__(self):
        self.seen = []

    async def stream(self, messages, tools):
        self.seen.append(messages)
        if messages[-1].role != "tool":
            yield ToolCallOut(call_id="k1", name="send_digits", arguments='{"digits": "2"}')
            yield Done(finish_reason="tool_calls")
        else:
            yield Done()


def test_keys_go_to_the_gateway_and_its_answer_lets_the_model_go_on(nats):
    async def scenario():
        nc = await bus.connect(nats.url)
        brain = PressesTwo()
        rt = Runtime(nc=nc, brain=brain, tools=OneTool())
        await rt.start()
        play = []
        await _collect(nc, subjects.playback("s4"), play)
        now = time.time()
        await bus.publish_event(nc, c.SessionStarted(session="s4", at=now, params={"direction": "outbound"}))
        await bus.publish_event(nc, c.Dtmf(session="s4", at=now, digit="9"))  # a turn of the other end
        await _wait(lambda: play)
        (press,) = [c.decode_command(m.data) for m in play]
        assert isinstance(press, c.SendDigits) and (press.digits, press.call_id) == ("2", "k1")
        await bus.publish_event(nc, c.DigitsSent(session="s4", at=time.time(), digits="2", call_id="k1"))
        await _wait(lambda: len(brain.seen) == 2)
        told = brain.seen[1][-1]
        assert told.role == "tool" and json.loads(told.content)["sent"] == "2"
        await rt.stop()
        await nc.close()

    asyncio.run(scenario())


class BilledText:
    """An LLM that says what each step billed (as OpenAI's stream_options.include_usage does)."""

    name = "billed"
    model = "billed-model"

    async def stream(self, messages, tools):
        yield Token(text="Hello there. ")
        yield Done(input_tokens=120, output_tokens=4)


def test_the_tokens_an_llm_billed_are_usage_on_the_session_and_on_metrics(nats):
    # A meter of the test's own: the process-wide one may have been shut down by another
    # test's app in this process (make test runs several files per process).
    from opentelemetry import trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    tel = telemetry.Telemetry("orchestrator-test", trace.get_tracer("test"), MeterProvider(metric_readers=[reader]).get_meter("parley"))

    def counted() -> dict[str, float]:
        out: dict[str, float] = {}
        data = reader.get_metrics_data()
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == "parley.usage.llm_tokens":
                        for p in m.data.data_points:
                            if p.attributes.get("provider") == "billed-model":
                                out[p.attributes["kind"]] = p.value
        return out

    async def scenario():
        before = counted()
        nc = await bus.connect(nats.url)
        rt = Runtime(nc=nc, brain=BilledText(), tools=OneTool(), defaults={"greeting": ""}, tel=tel)
        await rt.start()
        synth = []
        await _collect(nc, subjects.TTS_REQUEST, synth)
        await _first_turn(nc, "u1", "hello")
        await _wait(lambda: synth)
        usage: list = []
        for _ in range(100):
            steps, _digest = await fetch("u1", nats.url)
            usage = [s.event for s in steps if isinstance(s.event, c.Usage)]
            if len(usage) >= 2:
                break
            await asyncio.sleep(0.05)
        await rt.stop()
        await nc.close()
        return before, usage, counted()

    before, usage, after = asyncio.run(scenario())
    assert sorted((u.service, u.provider, u.unit, u.amount) for u in usage) == [
        ("llm", "billed-model", "input_tokens", 120), ("llm", "billed-model", "output_tokens", 4),
    ]  # fmt: skip
    assert before == {} and after == {"input_tokens": 120, "output_tokens": 4}


def test_events_queued_when_a_partition_changes_hands_mid_batch_are_reduced_in_order(nats):
    """A batch still writing its state when its partition is lost and gained
    again (a NATS node's kill -9: the consumer's new leader moves the pin while
    the KV write waits out the election) must not leave the session cached as
    warm: the events the loss took out of its queue are in the stream, unacked,
    and only a read from the stream finds them. Cached as warm, the next event
    was reduced without them and their redelivery dropped as already applied:
    a caller's final transcript lost, the turn never answered (seen once in
    tests/test_nats_cluster.py under load)."""

    async def scenario():
        nc = await bus.connect(nats.url)
        rt = Runtime(nc=nc, brain=FixedLatencyBrain(first_token=0.0, per_token=0.0), tools=OneTool(), defaults={"greeting": ""})
        await rt.start()
        now = time.time()
        await bus.publish_event(nc, c.SessionStarted(session="s5", at=now, params={"reprompt_after": "3600"}))
        await _wait(lambda: "s5" in rt.cache and "s5" in rt.listed)
        commit, gate, held = rt._commit, asyncio.Event(), asyncio.Event()

        async def slow_commit(session, cached, stored):
            if not gate.is_set():
                held.set()
                await gate.wait()  # the KV write waits out an election
            return await commit(session, cached, stored)

        rt._commit = slow_commit
        await bus.publish_event(nc, c.SpeechStarted(session="s5", at=now, utterance=0))
        await asyncio.wait_for(held.wait(), 10)
        await bus.publish_event(nc, c.SpeechStopped(session="s5", at=now, utterance=0))
        await bus.publish_event(nc, c.TranscriptFinal(session="s5", at=now, utterance=0, text="book me at 3"))
        await _wait(lambda: rt.queues["s5"].qsize() == 2)
        p = rt.partition_of["s5"]
        rt._on_lost(p)  # the pin moved: the queue is emptied, unacked
        rt._on_gained(p)  # and came back to this replica
        await _wait(lambda: rt.queues["s5"].qsize() >= 1)  # the live session is touched
        gate.set()
        await bus.publish_event(nc, c.SpeechOnset(session="s5", at=now, utterance=1))
        kv = await nc.jetstream().key_value(subjects.SESSIONS_BUCKET)

        async def consumed():
            return decode_stored((await kv.get("s5")).value).consumed

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and await consumed() < 5:
            await asyncio.sleep(0.05)
        await rt.stop()
        await nc.close()
        steps, _ = await fetch("s5", nats.url)
        return [type(st.event).__name__ for st in steps]

    reduced = asyncio.run(scenario())
    assert reduced == ["SessionStarted", "SpeechStarted", "SpeechStopped", "TranscriptFinal", "SpeechOnset"]
