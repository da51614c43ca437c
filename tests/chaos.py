"""The chaos run: calls that must survive kill -9 of any worker process.

A ``Stack`` with two processes of every worker service (orchestrator, ASR,
TTS) and fixed-latency providers carries ``calls`` Twilio-protocol calls
(``bench/loadgen.py``'s caller, at real-time pace). While they talk, processes
are killed with SIGKILL, each at a moment when at least a third of the calls
are hearing an answer ("mid-answer"), and started again a little later (a
supervisor's job). Afterwards, from the callers' side and from every
session's event log:

* every turn was answered, and within ``answer_limit`` of the caller's end of
  speech (``answer_ms``), and every reply came to an end;
* every session's log is whole and replays to the same decisions; its LLM
  outputs were reduced in the order they were produced (per attempt), with no
  gap and no duplicate reduced (a duplicate the reducer dropped is counted,
  not a fault);
* no utterance was answered twice (one LLM run per caller turn);
* the heard history is exact: each assistant turn is the fixed reply, or,
  for a reply cut short, a prefix of it, word for word; one user turn per turn;
* a TTS worker killed mid-answer: the answers it was speaking go on from the
  next chunk (the gateways say so in their logs), and no caller hearing an
  answer at the kill waits more than ``tts_gap_limit`` in silence before its
  answer goes on (``tts_gap_ms``: the silences those callers heard).

Figures per kind of kill (``after_kill`` in the summary): for every kill and
every call, the first turn answered after it (the one in flight at the kill,
or the next), caller's end of speech to first agent audio. The slowest of
them come with a timeline (``slowest``): the session's logged steps and the
services' takeover lines, in ms from the caller's end of speech, which is
where the time of a slow takeover is found.

``tests/test_chaos.py`` runs a bounded plan (one kill of each kind) in ``make
test``; ``make chaos`` runs ``python tests/chaos.py`` (random kills for
minutes) and prints the figures that go to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

import loadgen  # noqa: E402
import utterances  # noqa: E402
from stack import Stack  # noqa: E402

from parley import bus, contract, subjects  # noqa: E402

KINDS = ("orchestrator", "tts", "asr")
BOUNDED_PLAN = ((6.0, "orchestrator"), (5.0, "tts"), (5.0, "asr"))
REPLICAS = {"orchestrator": 2, "asr": 2, "tts": 2}


@dataclass
class Kill:
    key: str
    at: float  # time.monotonic()
    mid_answer: int  # calls hearing an answer at that moment
    hearing: list[int] = field(default_factory=list)  # their indices


@dataclass
class ChaosResult:
    calls: int
    turns: int
    kills: list[Kill] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    answer_ms: list[float] = field(default_factory=list)
    answer_after_kill_ms: list[float] = field(default_factory=list)  # first turn of each call that ended after a kill
    takeovers: int = 0
    tts_gap_ms: list[float] = field(default_factory=list)  # silences heard mid-answer after a TTS kill
    tts_chunks_skipped: int = 0  # chunks the gateways ended where their dead worker left them
    # LLM tokens (core NATS, never stored) lost in flight to a NATS node killed
    # under them: a gap the reducer sees and repairs by restarting the step.
    token_gaps_repaired: int = 0
    tts_redelivered: int = 0  # requests a killed TTS worker held, delivered again to another
    call_sids: list[str] = field(default_factory=list)  # per call index (Twilio's CallSid: the gateway logs it with the session)
    # kind -> answer ms of the first turn answered after each kill of that kind, per call
    after_kill: dict[str, list[float]] = field(default_factory=dict)
    slowest: list[dict] = field(default_factory=list)  # timelines of the slowest turns after a kill
    slow_candidates: list[tuple[float, int, int, int]] = field(default_factory=list)  # (ms, call, turn, kill)
    undisturbed_p50_ms: float | None = None  # answers before the first kill: how fast this machine is this run
    answer_limit_ms: float | None = None  # the bound the answers were held to (2 s plus the machine's slowness)
    duplicates_dropped: int = 0  # events delivered twice that the reducer dropped (not answered twice)
    sessions: int = 0
    wall_s: float = 0.0

    def summary(self) -> dict:
        def pct(xs, q):
            return round(sorted(xs)[min(len(xs) - 1, int(len(xs) * q))], 0) if xs else None

        return {
            "calls": self.calls,
            "turns": self.turns,
            "kills": [k.key for k in self.kills],
            "wall_s": round(self.wall_s, 1),
            "sessions": self.sessions,
            "takeovers": self.takeovers,
            "answer_ms": {"p50": pct(self.answer_ms, 0.5), "p99": pct(self.answer_ms, 0.99), "max": max(self.answer_ms, default=None)},
            "answer_limit_ms": self.answer_limit_ms,
            "undisturbed_p50_ms": self.undisturbed_p50_ms,
            "answer_after_kill_ms": {"n": len(self.answer_after_kill_ms), "p50": pct(self.answer_after_kill_ms, 0.5), "max": max(self.answer_after_kill_ms, default=None)},
            "after_kill": {
                kind: {"kills": sum(1 for k in self.kills if _kind(k.key) == kind), "n": len(xs), "p50": pct(xs, 0.5), "p90": pct(xs, 0.9), "p99": pct(xs, 0.99), "max": max(xs, default=None)}
                for kind, xs in sorted(self.after_kill.items())
            },
            "tts_kill": {
                "gaps": len(self.tts_gap_ms), "gap_max_ms": max(self.tts_gap_ms, default=None), "chunks_skipped": self.tts_chunks_skipped,
                "redelivered": self.tts_redelivered,
            },  # fmt: skip
            "token_gaps_repaired": self.token_gaps_repaired,
            "duplicates_dropped": self.duplicates_dropped,
            "problems": self.problems,
            "slowest": self.slowest,
        }


def _kind(key: str) -> str:
    return key.split("#")[0]


# A caller takes this long with nothing to hear for the end of a reply. Longer
# than the silence a TTS kill may leave mid-answer (TTS_GAP_LIMIT_MS: the
# request goes to another worker after the ack wait, 0.8 s), or a caller
# would talk into the rest of the answer and be heard as interrupting it.
QUIET_S = 1.5
TTS_GAP_LIMIT_MS = 1000.0
# An undisturbed turn's answer on a quiet machine (the capacity benchmark's 1-call
# step with these providers: 744 ms, 2026-11-29): the 2 s bound is for that speed.
QUIET_ANSWER_MS = 750.0


def caller_args(url: str, calls: int, turns: int, answer_timeout: float = 10.0) -> SimpleNamespace:
    return SimpleNamespace(
        url=url, transport="twilio", calls=calls, turns=turns, jitter=0.06, quiet=QUIET_S, pause=0.3, settle=0.5,
        spread=6.0, connect_spread=2.0, greeting=False, barge_after=0.0, answer_timeout=answer_timeout, reply_timeout=40.0,
    )  # fmt: skip


async def _run_calls(stack: Stack, calls: int, turns: int, plan, result: ChaosResult, answer_timeout: float = 10.0) -> None:
    args = caller_args(f"{stack.gateway_ws}/twilio/media", calls, turns, answer_timeout)
    callers = loadgen.callers_for(args, utterances.paths()["fixed_ulaw"])
    async with loadgen.placed(callers, args) as (t0, scripts):
        killer = asyncio.create_task(_killer(stack, callers, plan, result))
        await asyncio.gather(*scripts)
        killer.cancel()
        with_exc = await asyncio.gather(killer, return_exceptions=True)
        if with_exc and isinstance(with_exc[0], Exception):
            result.problems.append(f"killer failed: {with_exc[0]!r}")
    result.wall_s = time.monotonic() - t0
    result.records = [asdict(c.rec) for c in callers]
    result.call_sids = [c.call_sid for c in callers]


async def _killer(stack: Stack, callers, plan, result: ChaosResult) -> None:
    """Kill per plan: (pause s, key) pairs; each kill waits for a moment when
    at least a third of the calls are hearing an answer."""
    for pause, key in plan:
        await asyncio.sleep(pause)
        while True:
            hearing = [c.i for c in callers if c.playing and not c.speaking and not c.closed]
            if len(hearing) * 3 >= len(callers):
                break
            await asyncio.sleep(0.05)
        if key == "nats-leader":  # the node leading the event stream: the worst node to lose
            key = "nats-" + await _event_stream_leader(stack)
        stack.kill(key)
        result.kills.append(Kill(key, time.monotonic(), len(hearing), hearing))
        await asyncio.sleep(2.0)
        await asyncio.to_thread(stack.restart, key)


async def _event_stream_leader(stack: Stack) -> str:
    nc = await bus.connect(stack.nats_url)
    try:
        info = await nc.jetstream().stream_info(subjects.EVENTS_STREAM)
        return info.cluster.leader
    finally:
        await nc.close()


async def _check_logs(stack: Stack, result: ChaosResult, reply: str) -> None:
    from parley_orchestrator.cli import fetch
    from parley_orchestrator.replay import replay

    nc = await bus.connect(stack.nats_url)
    try:
        kv = await nc.jetstream().key_value(subjects.SESSIONS_BUCKET)
        sessions = [k for k in await kv.keys()]
    finally:
        await nc.close()
    result.sessions = len(sessions)
    if len(sessions) != result.calls:
        result.problems.append(f"{len(sessions)} sessions for {result.calls} calls")
    reply_words = reply.split()
    # Tokens travel on core NATS: a NATS node killed under them loses those in
    # flight, which the reducer must see as a gap and repair (not a problem).
    nats_killed = any(k.key.startswith("nats-") for k in result.kills)
    for s in sessions:
        gaps: list[str] = []
        steps, digest = await fetch(s, stack.nats_url)
        outcome = replay(steps, digest)
        if not outcome.ok:
            result.problems.append(f"{s}: replay differs: {outcome.mismatches[:3]}")
        seqs: dict[tuple[int, int, int], int] = {}
        runs = 0
        for st in steps:
            ev = st.event
            if isinstance(ev, contract.Takeover):
                result.takeovers += 1
            if isinstance(ev, contract.LLMEvent) and not st.dropped and ev.seq >= 0:
                key = (ev.run, ev.step, ev.attempt)
                if ev.seq != seqs.get(key, -1) + 1 and not (nats_killed and "gap:" in st.note):
                    # (a gap the reducer saw and repaired at this very step is fine after a NATS kill)
                    result.problems.append(f"{s}: LLM output {key} #{ev.seq} reduced after #{seqs.get(key, -1)}")
                seqs[key] = ev.seq
            if st.dropped == "duplicate":
                # Delivered twice and dropped by the reducer: the dedupe at
                # work (an ASR worker killed just after a final, before the
                # gateway's next progress check, has that utterance heard
                # again). Answering it twice would be the fault: see runs below.
                result.duplicates_dropped += 1
            if "gap:" in st.note:
                gaps.append(f"{s}: step {st.index}: {st.note}")
                result.token_gaps_repaired += 1
            runs += sum(1 for c in st.commands if isinstance(c, contract.StartLLM) and c.step == 0 and c.attempt == 0)
        if gaps and not nats_killed:
            result.problems += gaps
        if runs != result.turns:
            result.problems.append(f"{s}: {runs} answers started for {result.turns} caller turns")
        state = outcome.final_state
        if state is None:
            continue
        users = [m for m in state.history if m.role == "user"]
        if len(users) != result.turns:
            result.problems.append(f"{s}: {len(users)} user turns in history for {result.turns} said")
        for m in state.history:
            if m.role != "assistant" or not m.content:
                continue
            words = m.content.split()
            if m.interrupted and words == reply_words[: len(words)]:
                continue
            if words != reply_words:
                result.problems.append(f"{s}: assistant turn not as said: {m.content!r} (interrupted={m.interrupted})")


def _check_calls(result: ChaosResult, answer_limit_ms: float, tts_gap_limit_ms: float = TTS_GAP_LIMIT_MS, jitter_ms: float = 60.0) -> None:
    for k in result.kills:
        if not k.key.startswith("tts"):
            continue
        for i in k.hearing:
            for at, gap in result.records[i]["underruns"]:
                # A silence heard mid-answer that ended within a few seconds of the kill.
                if k.at <= at <= k.at + 6.0:
                    ms = gap * 1000 - jitter_ms
                    result.tts_gap_ms.append(round(ms))
                    if ms > tts_gap_limit_ms:
                        result.problems.append(f"call {i}: {ms:.0f} ms of silence mid-answer after the TTS kill")
    first_kill = min((k.at for k in result.kills), default=float("inf"))
    undisturbed = sorted(
        (t["first_media"] - t["speech_end"]) * 1000 for rec in result.records for t in rec["turns"]
        if t["first_media"] is not None and t["speech_end"] and t["first_media"] < first_kill
    )  # fmt: skip
    if undisturbed:
        # The bound is the 2 s on a machine that answers an undisturbed turn
        # in QUIET_ANSWER_MS; a machine slower than that this run (a loaded CI box)
        # adds its own slowness, measured on the turns answered before any kill.
        result.undisturbed_p50_ms = round(undisturbed[len(undisturbed) // 2])
        answer_limit_ms += max(0.0, result.undisturbed_p50_ms - QUIET_ANSWER_MS)
    result.answer_limit_ms = round(answer_limit_ms)
    for rec in result.records:
        for f in rec["failures"]:
            result.problems.append(f"call {rec['index']}: {f}")
        after_kill = {k.key: False for k in result.kills}
        answered_after = [False] * len(result.kills)
        for n, t in enumerate(rec["turns"]):
            if t["first_media"] is None or not t["speech_end"]:
                continue
            ms = (t["first_media"] - t["speech_end"]) * 1000
            result.answer_ms.append(ms)
            for k in result.kills:
                if not after_kill[k.key] and t["speech_end"] > k.at:
                    after_kill[k.key] = True
                    result.answer_after_kill_ms.append(ms)
            for j, k in enumerate(result.kills):
                # The first turn answered after the kill: in flight at it, or the next.
                if not answered_after[j] and t["first_media"] > k.at:
                    answered_after[j] = True
                    result.after_kill.setdefault(_kind(k.key), []).append(round(ms))
                    result.slow_candidates.append((ms, rec["index"], n, j))
            if ms > answer_limit_ms:
                result.problems.append(f"call {rec['index']} turn {n + 1}: answered after {ms:.0f} ms")


def run_chaos(
    root: Path, calls: int, turns: int, plan, answer_limit_ms: float = 2000.0, extra_env: dict | None = None,
    replicas: dict[str, int] | None = None, nats_nodes: int = 1, stack_options: dict | None = None,
) -> ChaosResult:  # fmt: skip
    from parley_orchestrator.adapters.fixed import CANNED_REPLY

    # The callers play Twilio's side of the media streams directly (no webhook):
    # the gateway's insecure development mode.
    # The canned voice sends its audio 2 s ahead of real time, as a voice that
    # generates faster than it speaks does (Piper here ~10x; cloud voices stream
    # ahead): a chunk a killed worker was speaking is spoken again from its
    # start by another, and a voice that only kept pace with real time would
    # leave the caller a silence as long as what was already said of it (1.4-1.6 s
    # measured with the default 300 ms lead; docs/BENCHMARKS.md section 7).
    env = {"PARLEY_PROVIDERS": "fixed", "PARLEY_TWILIO_INSECURE": "1", "PARLEY_TTS_FIXED_LEAD_MS": "2000", **(extra_env or {})}
    result = ChaosResult(calls=calls, turns=turns)
    options = {"replicas": dict(REPLICAS if replicas is None else replicas), "nats_nodes": nats_nodes, **(stack_options or {})}
    wall_minus_mono = time.time() - time.monotonic()
    with Stack(root, env=env, **options) as stack:
        asyncio.run(_run_calls(stack, calls, turns, plan, result, answer_timeout=max(10.0, answer_limit_ms / 1000 + 5)))
        _check_calls(result, answer_limit_ms)
        asyncio.run(_check_logs(stack, result, CANNED_REPLY))
        logs = "".join(stack.log(k) for k in stack.procs if k.startswith("orchestrator"))
        result.problems += [f"orchestrator error: {line[:300]}" for line in logs.splitlines() if '"level": "error"' in line or "Traceback" in line][:5]
        gateway = "".join(stack.log(k) for k in stack.procs if k.startswith("media-gateway"))
        result.tts_chunks_skipped = sum(1 for line in gateway.splitlines() if "the answer goes on from the next chunk" in line)
        tts = "".join(stack.log(k) for k in stack.procs if k.startswith("tts"))
        result.tts_redelivered = sum(1 for line in tts.splitlines() if "synthesize delivered again" in line)
        asyncio.run(_timelines(stack, result, wall_minus_mono))
        # Requests a killed TTS worker held are delivered again to another
        # worker (tts_redelivered). Whether the caller then heard a gap, a
        # skipped chunk or nothing at all (the survivor said it in time) is
        # reported, not judged: an answer that never went on would fail the
        # checks above (every reply comes to an end, history as said).
    return result


# Log lines of the services that say where a takeover's time went.
_TIMELINE_LOGS = (
    "orchestrator replica gone", "partition gained", "partition handed over", "partition lost", "session taken over",
    "synthesize delivered again", "chunk given again", "TTS worker gone", "chunk given up", "re-claim", "reclaim", "ASR worker",
)  # fmt: skip
SLOWEST = 4  # timelines kept: the slowest first turns after a kill


async def _timelines(stack: Stack, result: ChaosResult, wall_minus_mono: float) -> None:
    """The slowest first turns after a kill, each as a timeline in ms from the
    caller's end of speech: kills, logged steps of its session, service lines."""
    from parley_orchestrator.cli import fetch

    sessions: dict[str, str] = {}
    lines: list[tuple[float, str, dict]] = []
    for key in stack.procs:
        for raw in stack.log(key).splitlines():
            if not raw.startswith("{"):
                continue
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            if rec.get("call_sid") and rec.get("session_id"):
                sessions.setdefault(rec["call_sid"], rec["session_id"])
            if any(m in str(rec.get("msg", "")) for m in _TIMELINE_LOGS) and "ts" in rec:
                lines.append((rec["ts"], key, rec))
    seen: set[tuple[int, int]] = set()
    for ms, call, n, j in sorted(result.slow_candidates, key=lambda c: (-c[0], -c[3])):
        if (call, n) in seen:
            continue  # the same turn after an earlier kill too: shown once, with the latest kill before it
        seen.add((call, n))
        if len(seen) > SLOWEST:
            break
        turn = result.records[call]["turns"][n]
        end = turn["speech_end"] + wall_minus_mono
        until = turn["first_media"] + wall_minus_mono
        session = sessions.get(result.call_sids[call], "") if call < len(result.call_sids) else ""
        kill = result.kills[j]
        at = lambda wall: round((wall - end) * 1000)  # noqa: E731
        entry: list[str] = [f"{at(kill.at + wall_minus_mono):+} kill {kill.key}", f"{at(until):+} first agent audio"]
        if session:
            steps, _ = await fetch(session, stack.nats_url)
            for st in steps:
                if end - 1.0 <= st.event.at <= until + 0.2:
                    cmds = ",".join(sorted({type(c).__name__ for c in st.commands}))
                    entry.append(f"{at(st.event.at):+} {type(st.event).__name__} -> {st.state_to}" + (f" [{cmds}]" if cmds else "") + (f" ({st.dropped or st.note})" if st.dropped or st.note else ""))
        for ts, key, rec in lines:
            if end - 1.0 <= ts <= until + 0.2 and (rec.get("session_id") in (None, session)):
                extra = {k: rec[k] for k in ("partition", "gone", "took_ms", "load_ms", "since_gained_ms", "chunk", "from_piece") if k in rec}
                entry.append(f"{at(ts):+} {key}: {rec['msg'][:70]}" + (f" {extra}" if extra else ""))
        entry.sort(key=lambda e: int(e.split(" ", 1)[0]))
        result.slowest.append({"ms": round(ms), "call": call, "turn": n + 1, "kill": kill.key, "session": session, "timeline": entry})


def random_plan(duration_s: float, seed: int, pause_s: tuple[float, float] = (4.0, 10.0), kinds: tuple[str, ...] = KINDS) -> list[tuple[float, str]]:
    rng = random.Random(seed)
    plan, t = [], 8.0
    while t < duration_s - 15:
        pause = rng.uniform(*pause_s)
        kind = rng.choice(kinds)
        plan.append((pause, kind + rng.choice(["", "#2"])))
        t += pause + 4
    return plan


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--root", default=str(ROOT / "var" / "chaos"))
    ap.add_argument("--out", default="")
    ap.add_argument("--bounded", action="store_true", help="the plan of tests/test_chaos.py: one kill of each kind")
    ap.add_argument("--pause", default="4,10", help="seconds between a restart and the next kill: MIN,MAX (random)")
    ap.add_argument("--kinds", default=",".join(KINDS), help="kinds of process to kill, comma-separated")
    ap.add_argument("--answer-limit", type=float, default=2000.0, help="ms: the bound every turn is held to")
    a = ap.parse_args(argv)
    turn_s = 10.0  # a 2.4 s utterance, the answer, the fixed reply played out
    turns = max(3, int(a.minutes * 60 / turn_s))
    low, high = (float(x) for x in a.pause.split(","))
    plan = random_plan(turns * turn_s, a.seed, (low, high), tuple(a.kinds.split(",")))
    if a.bounded:
        turns, plan = 6, list(BOUNDED_PLAN)
    result = run_chaos(Path(a.root) / time.strftime("%Y%m%d-%H%M%S"), a.calls, turns, plan, answer_limit_ms=a.answer_limit)
    text = json.dumps(result.summary(), indent=2)
    print(text)
    if a.out:  # with every figure behind the per-kind percentiles, to pool several runs
        Path(a.out).write_text(json.dumps({**result.summary(), "after_kill_samples": result.after_kill}, indent=2))
    return 0 if not result.problems else 1


if __name__ == "__main__":
    sys.exit(main())
