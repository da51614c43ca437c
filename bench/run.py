"""``make bench``: Parley's latency and capacity on this machine, in one run.

Writes ``docs/BENCHMARKS.md`` and ``docs/bench-latency.png`` (and the raw
numbers to ``var/bench/results.json``). Everything is measured in the same
run, so that ratios compare like with like on this noisy, shared machine:

1. ``embedded``: the whole stack with the embedded models (Whisper tiny.en,
   the demo receptionist, Piper); one ``/ws/pcm`` caller says ten things;
   voice-to-voice per turn with the gateway's stage split.
2. ``fixed``: the stack with the fixed-latency providers
   (``PARLEY_PROVIDERS=fixed``):
   * one ``/ws/pcm`` call (it also warms the stack up) for the gateway's own
     latency notices;
   * barge-in: Twilio callers who talk over every reply;
   * capacity: Twilio-protocol calls at real-time pace, stepped 1, 10, 25, 50,
     75, 100, ... until a step fails the pass rule or the time budget ends;
     the 1-, 10- and 50-call steps give the orchestration overhead.
3. ``stop``: the audible stop of a barge-in from the caller's side, by
   transport (``bench/audible_stop.py``: ``/ws/pcm``, Twilio, WebRTC through
   Chromium), and what the Twilio marks cost (the gateway at two mark
   intervals under the same load);
4. ``reducer``: ``reduce()`` over the sessions recorded in 1 and 2.
5. ``resample``: ``bench/resample.py``'s section, pasted in.
5b. ``recording``: what recording calls costs the gateway (CPU per call,
   disk per call-minute): the same Twilio load with PARLEY_RECORDINGS off,
   then all.
6. ``scenarios``: the turn-taking suite (``scenarios/*.yaml``) with the
   embedded models, every scenario over ``/ws/pcm`` and over the Twilio
   protocol, one call at a time (``parley scenarios run``): voice-to-voice,
   answers inside a caller's pause, answers killed by noises and
   backchannels, interruptions that stop the agent, audible stop.

    uv run python bench/run.py                       # all of it (make bench)
    BENCH_QUICK=1 uv run python bench/run.py         # a few minutes' smoke run
    uv run python bench/run.py --only fixed --steps 1,10,50
    uv run python bench/run.py --only reducer        # on the last run's sessions
    uv run python bench/run.py --only scenarios      # the turn-taking suite alone
    uv run python bench/run.py --only fuzz           # every fuzz target, 100,000 inputs each

A partial run (``--only``, or ``BENCH_QUICK=1``) writes
``var/bench/BENCHMARKS.partial.md`` instead of the docs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from parley import contract

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(HERE))

import reducer_speed  # noqa: E402
import stages  # noqa: E402
import utterances  # noqa: E402
from meter import Meter  # noqa: E402
from stack import Stack  # noqa: E402

from parley import contract  # noqa: E402
from parley_orchestrator.replay import to_jsonl  # noqa: E402

VAR = ROOT / "var" / "bench"
DOCS = ROOT / "docs"
SERVICES = ("media-gateway", "asr", "orchestrator", "tts")
PROCS = (*SERVICES, "nats-server")
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
BUDGET_S = float(os.environ.get("BENCH_BUDGET_S", "240" if QUICK else "570"))
FLOOR_MS = round(sum(stages.FLOOR_MS.values()))  # endpointing silence + ASR final + LLM first token + TTS first audio
PASS_MARGIN_MS = 200
STEPS = (1, 10) if QUICK else (1, 10, 25, 50, 75, 100, 125, 150, 200)
TURNS = 2 if QUICK else 3
EMBEDDED_TURNS = 3 if QUICK else 10
PREEMPTIVE_TURNS = 2 if QUICK else 5
BARGE_CALLS = 3 if QUICK else 10
BARGE_TURNS = 3 if QUICK else 4  # the first utterance, then one barge-in per later one
BARGE_AFTER_S = 1.0
STOP_CALLS = 2 if QUICK else 3  # concurrent callers per transport in the audible-stop phase
STOP_BARGES = 3 if QUICK else 6  # barge-ins per caller (WebRTC: calls x barges in one call)
MARK_COST_CALLS = 10 if QUICK else 25
RECORDING_CALLS = 10 if QUICK else 25
PROFILE_AT = 50  # py-spy the services during this capacity step (if py-spy is installed)
CORPUS_PER_STEP = 12  # sessions per capacity step kept for the reducer corpus
LOADGEN = "bench/loadgen.py"


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (p99 of 150 samples is the 2nd largest)."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


def med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# ---------------------------------------------------------------- machine


def machine() -> dict:
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "commit": sha,
    }


# ---------------------------------------------------------------- the stack


NO_ADMISSION_LIMIT = {
    "PARLEY_MAX_CALLS": "100000", "PARLEY_ASR_CAPACITY": "0", "PARLEY_ORCHESTRATOR_CAPACITY": "0", "PARLEY_TTS_CAPACITY": "0",
}  # fmt: skip


def start_stack(kind: str, env: dict[str, str]) -> Stack:
    root = VAR / "stack" / kind
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.monotonic()
    # The bench's callers come from one address, hundreds of them (no rate
    # limit); its Twilio load generator opens media streams directly, as
    # Twilio does after a webhook (the insecure development mode); the
    # WebRTC caller is the page itself (local demo mode, as under make run).
    env = {"PARLEY_SESSION_RATE": "0", "PARLEY_TWILIO_INSECURE": "1", "PARLEY_DEMO": "local", **env}
    stack = Stack(root, env=env, replicas=replicas_from_env(), nice=nice_from_env())
    try:
        stack.start(timeout=240)
    except BaseException:
        stack.stop()
        raise
    stack.started_in = time.monotonic() - t0  # type: ignore[attr-defined]
    return stack


def replicas_from_env() -> dict[str, int]:
    """BENCH_REPLICAS="orchestrator=2,asr=2,tts=2": that many processes of each
    (the meter adds a service's replicas up)."""
    out: dict[str, int] = {}
    for part in filter(None, os.environ.get("BENCH_REPLICAS", "").split(",")):
        name, _, n = part.partition("=")
        if name.strip() not in SERVICES or not n.strip().isdigit() or int(n) < 1:
            raise SystemExit(f"BENCH_REPLICAS: {part!r} is not service=count (services: {', '.join(SERVICES)})")
        out[name.strip()] = int(n)
    return out


def nice_from_env() -> dict[str, int]:
    """BENCH_NICE="media-gateway=-5": that scheduling priority (nice value) for
    every process of the service (docs/BENCHMARKS.md section 7, "Capacity in
    session 8": the gateway's turn on two shared cores; a negative value needs
    root or CAP_SYS_NICE)."""
    out: dict[str, int] = {}
    for part in filter(None, os.environ.get("BENCH_NICE", "").split(",")):
        name, _, n = part.partition("=")
        try:
            value = int(n)
        except ValueError:
            value = None
        if name.strip() not in SERVICES or value is None or not -20 <= value <= 19:
            raise SystemExit(f"BENCH_NICE: {part!r} is not service=nice (-20..19; services: {', '.join(SERVICES)})")
        out[name.strip()] = value
    return out


def pids(stack: Stack) -> dict[str, int]:
    out = {key: proc.pid for key, proc in stack.procs.items()}
    out["nats-server"] = stack.nats.proc.pid
    return out


def gateway_metrics(stack: Stack) -> dict[str, float]:
    """The gateway's own latency histograms (sum and count by transport), from /metrics."""
    out: dict[str, float] = {}
    try:
        text = httpx.get(f"{stack.gateway}/metrics", timeout=5).text
    except httpx.HTTPError:
        return out
    for line in text.splitlines():
        if line.startswith(("parley_voice_to_voice_milliseconds_", "parley_bargein_reaction_milliseconds_")) and ("_sum{" in line or "_count{" in line):
            name = line.split("{", 1)[0]
            transport = line.split('transport="', 1)[1].split('"', 1)[0] if 'transport="' in line else ""
            out[f"{name}|{transport}"] = float(line.rsplit(" ", 1)[1])
    return out


def gateway_mean(before: dict, after: dict, metric: str, transport: str) -> tuple[float | None, int]:
    s = after.get(f"{metric}_sum|{transport}", 0.0) - before.get(f"{metric}_sum|{transport}", 0.0)
    n = after.get(f"{metric}_count|{transport}", 0.0) - before.get(f"{metric}_count|{transport}", 0.0)
    return (s / n if n else None), int(n)


def run_loadgen(stack: Stack, tag: str, meter: Meter | None, transport: str, calls: int, speech: list[Path], *extra: str, query: str = "") -> dict:
    path = ("/twilio/media" if transport == "twilio" else "/ws/pcm") + query
    out = VAR / "load" / f"{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    args = ["--transport", transport, "--calls", str(calls), "--speech", *[str(p.relative_to(ROOT)) for p in speech], *extra]
    cmd = [sys.executable, LOADGEN, "--url", f"{stack.gateway_ws}{path}", *args, f"--api-key={stack.api_key}", "--out", str(out)]
    before = gateway_metrics(stack)
    proc = subprocess.Popen(cmd, cwd=ROOT)
    if meter is not None:
        try:
            meter.add("loadgen", proc.pid)
        except psutil.Error:
            pass
    if proc.wait() != 0:
        raise RuntimeError(f"load generator failed: {' '.join(cmd)}")
    if meter is not None:
        meter.sample()
        meter.remove("loadgen")
    result = json.loads(out.read_text())
    result["gateway_before"], result["gateway_after"] = before, gateway_metrics(stack)
    result["command"] = "uv run python bench/loadgen.py --url ws://127.0.0.1:PORT" + path + " " + " ".join(args)
    return result


# ---------------------------------------------------------------- turning raw results into numbers


def caller_turns(result: dict, sessions: dict[str, list], by_call: bool) -> list[dict]:
    """Per caller turn: answer latency and (where the tap saw it) the stage split."""
    off = result["wall_minus_mono"]
    call_map = stages.session_of_call(sessions) if by_call else {}
    out = []
    for c in result["callers"]:
        session = call_map.get(str(c["index"])) if by_call else c["session"]
        reps = stages.replies(sessions.get(session, [])) if session else []
        for k, t in enumerate(c["turns"]):
            if not t["speech_end"] or t["first_media"] is None:
                continue
            row = {
                "call": c["index"],
                "turn": k,
                "barge": t["barge"],
                "answer_ms": (t["first_media"] - t["speech_end"]) * 1000,
                "play_ms": (t["first_play"] - t["speech_end"]) * 1000 if t["first_play"] else None,
                "speech_end": t["speech_end"],
                "latency_notice": t["latency"],
            }
            rep = stages.match(reps, t["speech_end"] + off, t["first_media"] + off)
            if rep is not None:
                row["stages"] = stages.split(t["speech_end"] + off, t["first_media"] + off, rep)
            out.append(row)
    return out


def load_summary(result: dict, turns: list[dict], meter: Meter | None, idle: dict | None) -> dict:
    callers = result["callers"]
    answers = [t["answer_ms"] for t in turns if not t["barge"]]
    underruns = [u for c in callers for u in c["underruns"]]
    failed = [c for c in callers if c["failures"]]
    s = {
        "calls": result["calls"],
        "turns_done": len(answers),
        "turns_planned": result["calls"] * result["turns"],
        "failed_calls": len(failed),
        "failures": sorted({f for c in failed for f in c["failures"]})[:6],
        "underruns": len(underruns),
        "calls_with_underruns": sum(1 for c in callers if c["underruns"]),
        "worst_gap_ms": max((u[1] * 1000 for u in underruns), default=0.0),
        "audio_while_speaking": sum(c["audio_while_speaking"] for c in callers),
        "answer_p50": pct(answers, 50),
        "answer_p99": pct(answers, 99),
        "answer_max": max(answers, default=None),
        "answers": answers,
        "overheads": [a - FLOOR_MS for a in answers],
        "stages": [t["stages"] for t in turns if t.get("stages") and not t["barge"]],
        "generator": {"cpu_s": result["cpu_s"], "wall_s": result["wall_s"], "late_ms": result["ticker_late_ms"], "resyncs": result["ticker_resyncs"]},
        "command": result["command"],
        "wall_s": result["wall_s"],
        "turn_period_s": med(turn_periods(turns)),
    }
    gw, n = gateway_mean(result["gateway_before"], result["gateway_after"], "parley_voice_to_voice_milliseconds", result["transport"])
    s["gateway_v2v_mean"], s["gateway_v2v_n"] = gw, n
    if meter is not None:
        # The window in which every call is up: after the last caller's first
        # utterance started, until the first caller could have hung up.
        t0 = result["started_at"]
        start = t0 + 2.0 + 5.0 + 0.5 if result["calls"] > 1 else t0 + 0.5
        end = min(t0 + result["wall_s"], start + 20.0)
        rates = meter.rates(start, end, list(PROCS))
        peaks = meter.peak_rss(t0, t0 + result["wall_s"])
        s["cpu"] = rates
        s["cpu_window_s"] = end - start
        s["rss_peak"] = peaks
        if idle:
            s["cpu_per_call"] = {n: (rates.get(n, 0) - idle["cpu"].get(n, 0)) / result["calls"] for n in (*PROCS, "stack")}
            s["rss_per_call_mb"] = {n: (peaks.get(n, 0) - idle["rss"].get(n, 0)) / result["calls"] / 2**20 for n in PROCS}
            s["rss_per_call_mb"]["stack"] = sum(s["rss_per_call_mb"].values())
        s["loadgen_cpu"] = rates.get("loadgen")
        s["machine_other_cpu"] = rates.get("machine_other")
    return s


def turn_periods(turns: list[dict]) -> list[float]:
    """Seconds from one utterance's end to the caller's next one's, per caller."""
    ends: dict[int, list[float]] = {}
    for t in turns:
        ends.setdefault(t["call"], []).append(t["speech_end"])
    return [b - a for v in ends.values() for a, b in zip(sorted(v), sorted(v)[1:])]


def stage_medians(rows: list[dict], q: float = 50) -> dict[str, float]:
    return {k: pct([r[k] for r in rows], q) for k in stages.STAGES} if rows else {}


def save_corpus(kind: str, sessions: dict[str, list], limit: int | None = None) -> int:
    d = VAR / "sessions" / kind
    d.mkdir(parents=True, exist_ok=True)
    n = 0
    for session, steps in sessions.items():
        if limit is not None and n >= limit:
            break
        recorded = [s for _, s in steps]
        if not recorded or [s.index for s in recorded] != list(range(len(recorded))):
            continue  # incomplete: not a replayable log
        (d / f"{session}.jsonl").write_text(to_jsonl(recorded))
        n += 1
    return n


# ---------------------------------------------------------------- phases


def phase_embedded(res: dict) -> None:
    speech = utterances.paths()["embedded_pcm16k"]
    stack = start_stack("embedded", {})
    try:
        with stages.Tap(stack.nats_url) as tap, Meter(pids(stack)) as meter:
            idle_rss = meter.sample().rss
            result = run_loadgen(
                stack, "embedded", meter, "pcm", 1, speech, "--turns", str(EMBEDDED_TURNS), "--greeting", "--settle", "2.0", "--quiet", "1.2",
                "--spread", "0", "--connect-spread", "0", "--answer-timeout", "25", "--reply-timeout", "60",
            )  # fmt: skip
            time.sleep(1.0)
            sessions = stages.by_session(tap.take())
        turns = caller_turns(result, sessions, by_call=False)
        heard = {}
        caller = result["callers"][0]
        for _, n in caller["notices"]:
            if n.get("type") == "transcript" and n.get("final"):
                heard[n["utterance"]] = n["text"]
        said = [n["text"] for _, n in caller["notices"] if n.get("type") == "agent_text"]
        res["embedded"] = {
            "started_in_s": stack.started_in,
            "turns": turns,
            "texts": list(utterances.EMBEDDED_TEXTS[: len(turns)]),
            "heard": [heard.get(k) for k in sorted(heard)],
            "agent_said": said,
            "failures": caller["failures"],
            "underruns": len(caller["underruns"]),
            "rss_mb": {n: v / 2**20 for n, v in idle_rss.items()},
            "command": result["command"],
            "corpus": save_corpus("embedded", sessions),
        }
        res["embedded"]["preemptive"] = preemptive_comparison(stack, speech[:PREEMPTIVE_TURNS])
    finally:
        stack.stop()


def preemptive_comparison(stack: Stack, speech: list[Path]) -> dict:
    """The same first requests again with preemptive generation on (a session
    parameter): does starting the LLM on the latest partial help?"""
    with stages.Tap(stack.nats_url) as tap:
        result = run_loadgen(
            stack, "embedded-preemptive", None, "pcm", 1, speech, "--turns", str(len(speech)), "--greeting", "--settle", "2.0", "--quiet", "1.2",
            "--spread", "0", "--connect-spread", "0", "--answer-timeout", "25", "--reply-timeout", "60", query="?preemptive=true",
        )  # fmt: skip
        time.sleep(1.0)
        sessions = stages.by_session(tap.take())
    started = restarted = 0
    for steps in sessions.values():
        for _, step in steps:
            starts = [c for c in step.commands if isinstance(c, contract.StartLLM) and c.step == 0]
            if starts and isinstance(step.event, contract.SpeechStopped):
                started += 1
            if isinstance(step.event, contract.TranscriptFinal) and any(isinstance(c, contract.CancelLLM) for c in step.commands):
                restarted += 1
    return {
        "turns": caller_turns(result, sessions, by_call=False),
        "preemptive_starts": started,
        "restarted": restarted,
        "command": result["command"],
    }


def phase_fixed(res: dict, steps: tuple[int, ...], started: float, reserve_s: float) -> None:
    paths = utterances.paths()
    # The capacity steps measure what the stack carries, not where admission
    # refuses: the gateway's PARLEY_MAX_CALLS (100) and the services' reported
    # capacities (100 each; the warm-up calls' sessions and the reports' lag
    # counted on top refused calls of the 100-call step) are lifted here.
    stack = start_stack("fixed", {"PARLEY_PROVIDERS": "fixed", **NO_ADMISSION_LIMIT})
    out: dict = {"started_in_s": stack.started_in, "vad_floor": vad_floor(paths["fixed_ulaw"][0].read_bytes())}
    res["fixed"] = out
    try:
        with stages.Tap(stack.nats_url) as tap, Meter(pids(stack)) as meter:
            # /ws/pcm, one call: the gateway's own split (and a warm-up).
            result = run_loadgen(stack, "fixed-pcm", meter, "pcm", 1, paths["fixed_pcm16k"], "--turns", str(TURNS), "--spread", "0", "--connect-spread", "0")
            time.sleep(1.0)
            sessions = stages.by_session(tap.take())
            save_corpus("fixed-pcm", sessions)
            turns = caller_turns(result, sessions, by_call=False)
            out["pcm"] = {"turns": turns, "summary": load_summary(result, turns, None, None)}

            # Idle: what the stack costs with no call.
            time.sleep(2.0)
            a = meter.sample()
            time.sleep(4.0)
            b = meter.sample()
            idle = {"cpu": meter.rates(a.at, b.at, list(PROCS)), "rss": b.rss}
            out["idle"] = idle

            # Barge-in: Twilio callers talk over every reply.
            result = run_loadgen(
                stack, "fixed-bargein", meter, "twilio", BARGE_CALLS, paths["fixed_ulaw"], "--turns", str(BARGE_TURNS),
                "--barge-after", str(BARGE_AFTER_S), "--spread", "3",
            )  # fmt: skip
            time.sleep(1.0)
            sessions = stages.by_session(tap.take())
            save_corpus("fixed-bargein", sessions)
            out["bargein"] = bargein_summary(result, sessions)

            # Capacity ramp.
            out["steps"] = []
            baseline = None
            last_wall = 45.0
            for n in steps:
                left = BUDGET_S - (time.monotonic() - started) - reserve_s
                if left < last_wall + 10:
                    out["stopped"] = f"time budget: {left:.0f} s left before the {n}-call step (needs ~{last_wall + 10:.0f} s)"
                    break
                time.sleep(2.0)  # let the previous step's calls end everywhere
                profiler = Profiler(pids(stack), 40) if n == PROFILE_AT else None
                result = run_loadgen(stack, f"fixed-twilio-{n}", meter, "twilio", n, paths["fixed_ulaw"], "--turns", str(TURNS), "--spread", "5")
                if profiler:
                    out["profile"] = profiler.finish()
                    out["profile"]["calls"] = n
                time.sleep(1.0)
                sessions = stages.by_session(tap.take())
                save_corpus("fixed-twilio", sessions, limit=CORPUS_PER_STEP)
                turns = caller_turns(result, sessions, by_call=True)
                s = load_summary(result, turns, meter, idle)
                s["steps_per_turn"] = steps_per_turn(sessions, s["turns_done"])
                last_wall = result["wall_s"]
                if baseline is None:
                    baseline = s["answer_p50"]
                    out["baseline_ms"] = baseline
                s["threshold_ms"] = baseline + PASS_MARGIN_MS if baseline is not None else None
                s["verdict"], s["why"] = verdict(s)
                out["steps"].append(s)
                print(
                    f"[bench] {n:>4} calls: {s['verdict']} ({s['why']}); answer p50 {s['answer_p50']:.0f} p99 {s['answer_p99']:.0f} ms; "
                    f"stack CPU {s['cpu'].get('stack', 0) * 100:.0f}% of a core, other load {(s['machine_other_cpu'] or 0) * 100:.0f}%",
                    flush=True,
                )
                if s["verdict"] != "pass":
                    break
            out["idle_after"] = {"rss": meter.sample().rss}
    finally:
        stack.stop()


def phase_stop(res: dict) -> None:
    import asyncio

    import audible_stop

    stack = start_stack("stop", {"PARLEY_PROVIDERS": "fixed"})
    out: dict = {}
    res["stop"] = out
    try:
        transports = os.environ.get("BENCH_STOP_TRANSPORTS", "pcm,twilio,webrtc").split(",")  # one transport alone, for an A/B
        rows = asyncio.run(audible_stop.measure(stack.gateway_ws, stack.nats_url, utterances, STOP_CALLS, STOP_BARGES, transports, api_key=stack.api_key))
        out["rows"] = rows
        out["summary"] = audible_stop.summarize(rows)
        for t, v in out["summary"].items():
            print(f"[bench] audible stop {t}: p50 {v['stop_ms_50'] or 0:.0f} p95 {v['stop_ms_95'] or 0:.0f} ms over {v['n']} (onset -> VAD p50 {v['vad_ms_50'] or 0:.0f} ms)", flush=True)
        if "twilio" in transports:
            out["mark_cost"] = mark_cost(stack)
    except Exception as exc:  # noqa: BLE001 - the report says what failed
        out["error"] = f"{type(exc).__name__}: {exc}"
        print(f"[bench] audible stop failed: {out['error']}", flush=True)
    finally:
        stack.stop()
    # After a pause that resumes: does the caller hear the answer again from where it stopped? (its own gateway)
    import resume_error

    try:
        with tempfile.TemporaryDirectory() as tmp:
            rows = asyncio.run(resume_error.measure(transports, STOP_CALLS - 1 if QUICK else 2, resume_error.PAUSES, Path(tmp)))
        out["resume"] = {"rows": rows, "summary": resume_error.summarize(rows), "load": os.getloadavg()[0]}
        for t, v in out["resume"]["summary"].items():
            print(f"[bench] resume error {t}: p50 {v['error_p50_ms'] or 0:+.0f} ms, |error| p95 {v['abs_error_p95_ms'] or 0:.0f} ms over {v['n']}", flush=True)
    except Exception as exc:  # noqa: BLE001 - the report says what failed
        out["resume"] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"[bench] resume error failed: {out['resume']['error']}", flush=True)


def mark_cost(stack: Stack) -> dict:
    """The gateway's CPU per Twilio call with a mark every frame and every
    ten frames: the same load, the gateway restarted at each interval."""
    paths = utterances.paths()
    runs = []
    result: dict = {}
    for mark_ms in (200, 20):
        proc = stack.procs["media-gateway"]
        proc.terminate()
        proc.wait(15)
        stack.env["PARLEY_TWILIO_MARK_MS"] = str(mark_ms)
        stack.start_service("media-gateway")
        stack.wait_healthy(60)
        time.sleep(1.0)
        with Meter({"media-gateway": stack.procs["media-gateway"].pid}) as meter:
            result = run_loadgen(stack, f"marks-{mark_ms}", meter, "twilio", MARK_COST_CALLS, paths["fixed_ulaw"], "--turns", str(TURNS), "--spread", "5")
            t0 = result["started_at"]
            start = t0 + 2.0 + 5.0 + 0.5
            rates = meter.rates(start, min(t0 + result["wall_s"], start + 20.0), ["media-gateway"])
        marks = sum(c["marks"] for c in result["callers"])
        audio_s = sum(c["media_in"] for c in result["callers"]) * 0.02
        runs.append({"mark_ms": mark_ms, "marks_per_audio_s": marks / audio_s if audio_s else 0.0, "gateway_cpu_per_call": rates.get("media-gateway", 0.0) / MARK_COST_CALLS})
    return {"calls": MARK_COST_CALLS, "runs": runs, "command": result.get("command", "")}


def phase_recording(res: dict) -> None:
    """The gateway's CPU per Twilio call with recording off and on, under the
    same load (the gateway restarted between), and the disk it wrote."""
    paths = utterances.paths()
    stack = start_stack("recording", {"PARLEY_PROVIDERS": "fixed"})
    out: dict = {"calls": RECORDING_CALLS, "runs": []}
    res["recording"] = out
    folder = stack.root / "data" / "recordings"
    try:
        for mode in ("off", "all", "off", "all"):  # twice each, interleaved: the machine's load drifts
            proc = stack.procs["media-gateway"]
            proc.terminate()
            proc.wait(15)
            stack.env["PARLEY_RECORDINGS"] = mode
            stack.start_service("media-gateway")
            stack.wait_healthy(60)
            time.sleep(1.0)
            shutil.rmtree(folder, ignore_errors=True)
            with Meter({"media-gateway": stack.procs["media-gateway"].pid}) as meter:
                result = run_loadgen(stack, f"recording-{mode}", meter, "twilio", RECORDING_CALLS, paths["fixed_ulaw"], "--turns", str(TURNS), "--spread", "5")
                t0 = result["started_at"]
                start = t0 + 2.0 + 5.0 + 0.5
                rates = meter.rates(start, min(t0 + result["wall_s"], start + 20.0), ["media-gateway"])
            time.sleep(1.5)  # the last calls' recordings are finished
            wavs = list(folder.glob("*.wav")) if folder.exists() else []
            secs = sum(json.loads(w.with_suffix(".json").read_text()).get("seconds", 0) for w in wavs if w.with_suffix(".json").exists())
            disk = sum(w.stat().st_size for w in wavs)
            out["runs"].append({"mode": mode, "gateway_cpu_per_call": rates.get("media-gateway", 0.0) / RECORDING_CALLS, "files": len(wavs),
                                "recorded_s": secs, "mb_per_minute": (disk / 1e6) / (secs / 60) if secs else None})  # fmt: skip
            print(f"[bench] recording {mode}: gateway {rates.get('media-gateway', 0.0) / RECORDING_CALLS * 100:.2f} % of a core per call, {len(wavs)} files", flush=True)
        out["command"] = result.get("command", "")
    except Exception as exc:  # noqa: BLE001 - the report says what failed
        out["error"] = f"{type(exc).__name__}: {exc}"
        print(f"[bench] recording cost failed: {out['error']}", flush=True)
    finally:
        stack.stop()


def vad_floor(ulaw: bytes, silence_s: float = 1.5) -> dict:
    """When can the ASR stop the canned utterance, at the earliest? The same
    path as a Twilio call, without any waiting: 20 ms μ-law frames -> PCM16 ->
    the gateway's 8->16 kHz resampler -> 32 ms Silero windows as soon as they
    are complete -> the ASR's endpointer with its default settings. Returns the
    frame (counted from the last speech frame) whose arrival completes the
    window that decides the stop, in ms, and where the VAD saw silence begin."""
    import numpy as np

    from parley.audio import Resampler, ulaw_to_pcm16
    from parley_asr import endpointer
    from parley_asr.settings import Settings
    from parley_asr.vad import SileroVad, StreamBank

    cfg = Settings.from_env({}).endpointing()
    bank = StreamBank(SileroVad(), capacity=1)
    slot = np.array([bank.open()])
    resampler = Resampler(8000, 16000)
    data = ulaw + bytes([0xFF]) * int(8000 * silence_s)
    speech_frames = len(ulaw) // 160
    pending = np.zeros(0, np.int16)
    state = endpointer.State()
    for k in range(len(data) // 160):
        pcm = np.frombuffer(resampler.process(ulaw_to_pcm16(data[k * 160 : (k + 1) * 160])), np.int16)
        pending = np.concatenate([pending, pcm])
        while len(pending) >= endpointer.WINDOW_SAMPLES:
            window, pending = pending[: endpointer.WINDOW_SAMPLES], pending[endpointer.WINDOW_SAMPLES :]
            p = float(bank.run(slot, window[None, :].astype(np.float32) / 32768)[0])
            state, d = endpointer.step(state, p, cfg)
            if isinstance(d, endpointer.Stop):
                return {
                    "decided_ms": (k + 1 - speech_frames) * 20,
                    "silence_from_ms": d.end * endpointer.WINDOW_MS - len(ulaw) / 8,
                    "silence_windows": cfg.silence_windows,
                    "window_ms": endpointer.WINDOW_MS,
                    "tick_ms": Settings.tick_ms,
                }
    return {}


def steps_per_turn(sessions: dict[str, list], turns: int) -> float | None:
    total = sum(len(v) for v in sessions.values())
    return total / turns if turns else None


def verdict(s: dict) -> tuple[str, str]:
    why = []
    if s["failed_calls"]:
        why.append(f"{s['failed_calls']} failed calls ({'; '.join(s['failures'])})")
    if s["turns_done"] < s["turns_planned"] and not s["failed_calls"]:
        why.append(f"{s['turns_planned'] - s['turns_done']} turns missing")
    if s["underruns"]:
        why.append(f"{s['underruns']} underruns in {s['calls_with_underruns']} calls (worst gap {s['worst_gap_ms']:.0f} ms)")
    if s["answer_p99"] is None or s["threshold_ms"] is None or s["answer_p99"] > s["threshold_ms"]:
        why.append(f"p99 {s['answer_p99'] or 0:.0f} ms > {s['threshold_ms'] or 0:.0f} ms")
    return ("fail", "; ".join(why)) if why else ("pass", "no failed call, no underrun, p99 within the margin")


def bargein_summary(result: dict, sessions: dict[str, list]) -> dict:
    off = result["wall_minus_mono"]
    call_map = stages.session_of_call(sessions)
    rows = []
    for c in result["callers"]:
        events = stages.barge_ins(sessions.get(call_map.get(str(c["index"]), ""), []))
        for t in c["turns"]:
            if not t["barge"] or not t["speech_start"]:
                continue
            row = {"call": c["index"]}
            start = t["speech_start"]
            if t["clear_at"] is not None:
                row["clear_ms"] = (t["clear_at"] - start) * 1000
            if t["last_media_before_clear"] is not None:
                row["last_media_ms"] = (t["last_media_before_clear"] - start) * 1000
            ev = next((e for e in events if start + off - 0.05 <= e["speech_started"] <= start + off + 2.0), None)
            if ev:
                row["vad_ms"] = (ev["speech_started"] - start - off) * 1000
                if "flushed" in ev:
                    row["flush_ms"] = (ev["flushed"] - start - off) * 1000
            rows.append(row)
    gw, n = gateway_mean(result["gateway_before"], result["gateway_after"], "parley_bargein_reaction_milliseconds", "twilio")

    def col(k):
        return [r[k] for r in rows if k in r]

    return {
        "rows": rows,
        "calls": result["calls"],
        "failures": sorted({f for c in result["callers"] for f in c["failures"]}),
        "clear": col("clear_ms"),
        "last_media": col("last_media_ms"),
        "vad": col("vad_ms"),
        "flush": col("flush_ms"),
        "gateway_mean": gw,
        "gateway_n": n,
        "barge_after": BARGE_AFTER_S,
        "command": result["command"],
    }


class Profiler:
    """py-spy on every service for ``seconds`` (non-blocking sampling at 20 Hz)."""

    RATE = 20

    def __init__(self, procs: dict[str, int], seconds: int):
        # The venv's (uv pip install py-spy), or a uv tool's (uv tool install py-spy), or PATH's.
        where = os.pathsep.join([str(Path(sys.executable).parent), str(Path.home() / ".local" / "bin"), os.environ.get("PATH", "")])
        self.exe = shutil.which("py-spy", path=where)
        self.seconds = seconds
        self.jobs: dict[str, tuple[subprocess.Popen, Path]] = {}
        if not self.exe:
            return
        for name, pid in procs.items():
            if name == "nats-server":
                continue
            raw = VAR / "profile" / f"{name}.txt"
            raw.parent.mkdir(parents=True, exist_ok=True)
            cmd = [self.exe, "record", "--nonblocking", "-r", str(self.RATE), "-d", str(seconds), "-f", "raw", "-o", str(raw), "-p", str(pid)]
            self.jobs[name] = (subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), raw)

    def finish(self) -> dict:
        if not self.exe:
            return {"error": "py-spy is not installed, so no profile this run (`uv tool install py-spy` adds it without touching the lock)."}
        out = {}
        for name, (proc, raw) in self.jobs.items():
            try:
                proc.wait(self.seconds + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
            out[name] = top_functions(raw, self.seconds, self.RATE) if raw.exists() else {"error": "no profile"}
        return out


def top_functions(raw: Path, seconds: float, rate: int, n: int = 8) -> dict:
    """From py-spy's collapsed stacks: share of a core, and the top functions
    by own time and by inclusive time (excluding the event loop's frames)."""
    total = 0
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        if not line.strip():
            continue
        stack, count = line.rsplit(" ", 1)
        k = int(count)
        total += k
        frames = [f.rsplit(":", 1)[0] + ")" if ":" in f else f for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + k
        for f in set(frames):
            incl[f] = incl.get(f, 0) + k
    skip = ("runpy", "__main__", "uvicorn/", "asyncio/runners", "asyncio/base_events", "asyncio/events", "_compat.py", "threading.py", "concurrent/futures")

    def top(d):
        items = [(f, v) for f, v in d.items() if not any(s in f for s in skip)]
        return [(f, round(v / total * 100, 1)) for f, v in sorted(items, key=lambda x: -x[1])[:n]] if total else []

    return {"core_share": total / (rate * seconds), "samples": total, "own": top(own), "inclusive": top(incl)}


SCENARIO_FILES = sorted((ROOT / "scenarios").glob("*.yaml"))


def phase_scenarios(res: dict, files: list[Path] | None = None) -> None:
    """Every shipped scenario (or those of ``files``) over both transports, on
    a stack pinned to the suite's date. Each scenario runs over /ws/pcm and
    then over Twilio, so the two transports see the same machine load as
    nearly as can be."""
    import asyncio
    from dataclasses import asdict

    from parley.scenarios import report as scenario_report
    from parley.scenarios.cli import run_all
    from parley.scenarios.runner import Target
    from parley.scenarios.spec import load_path

    files = files or SCENARIO_FILES
    suites = [load_path(f) for f in files]
    scenarios = [s for suite in suites for s in suite.scenarios]
    if QUICK:
        scenarios = scenarios[::6]
    nows = sorted({s.now for s in scenarios})
    out: dict = {"files": [str(f.resolve().relative_to(ROOT)) if f.resolve().is_relative_to(ROOT) else str(f) for f in files], "scenarios": len(scenarios), "now": nows, "results": []}
    res["scenarios"] = out
    for now in nows:
        stack = start_stack("scenarios", {"PARLEY_NOW": now} if now else {})
        out["started_in_s"] = stack.started_in
        try:
            target = Target(stack.gateway_ws, stack.nats_url, gateway_http=stack.gateway, api_key=stack.api_key)
            only = os.environ.get("BENCH_SCENARIO_TRANSPORTS", "")  # e.g. "twilio": one line alone, for an A/B
            runs = [(s, t) for s in scenarios if s.now == now for t in s.transports if not only or t in only.split(",")]
            t0 = time.monotonic()
            results = asyncio.run(
                run_all(target, runs, cache=VAR / "scenario-audio", out_dir=VAR / "scenarios", echo=lambda line: print(f"[bench] {line}", flush=True))
            )
            out["wall_s"] = out.get("wall_s", 0.0) + time.monotonic() - t0
            out["results"] += [asdict(r) for r in results]
        finally:
            stack.stop()

    out["summary"] = scenario_report.summary([_result(r) for r in out["results"]])
    out["command"] = "uv run parley scenarios run %s" % " ".join(out["files"]) + " --out var/scenarios  (against `PARLEY_NOW=%s make run`)" % (nows[0] if nows else "")


def _result(d: dict):
    from parley.scenarios.judge import Check, Result

    d = dict(d)
    d["checks"] = [Check(**c) for c in d.get("checks", [])]
    return Result(**d)


def phase_reducer(res: dict) -> None:
    dirs = [d for d in (VAR / "sessions").iterdir() if d.is_dir()] if (VAR / "sessions").exists() else []
    r = reducer_speed.measure(dirs)
    r["corpus"] = {d.name: len(list(d.glob("*.jsonl"))) for d in dirs}
    res["reducer"] = r


def phase_fuzz(res: dict) -> None:
    """Every fuzz target, FUZZ_RUNS inputs each (bench/fuzz.py; 100,000 by default)."""
    env = {**os.environ, "FUZZ_RUNS": os.environ.get("FUZZ_RUNS", "5000" if QUICK else "100000")}
    p = subprocess.run([sys.executable, "bench/fuzz.py"], cwd=ROOT, capture_output=True, text=True, timeout=7200, env=env)
    res["fuzz_md"] = p.stdout if p.stdout.strip() else f"(bench/fuzz.py failed: {p.stderr[-800:]})"


def phase_resample(res: dict) -> None:
    p = subprocess.run([sys.executable, "bench/resample.py"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    res["resample_md"] = p.stdout if p.returncode == 0 else f"(bench/resample.py failed: {p.stderr[-500:]})"


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma list of: embedded, fixed, stop, recording, reducer, resample, scenarios, fuzz")
    ap.add_argument("--steps", default="", help="capacity steps, e.g. 1,10,50 (default %s)" % ",".join(map(str, STEPS)))
    ap.add_argument("--scenarios", default="", help="phase scenarios: only these files (comma list; default every scenarios/*.yaml)")
    ap.add_argument("--out", default="", help="where to write the markdown (default docs/BENCHMARKS.md for a full run)")
    args = ap.parse_args(argv)
    phases = [p for p in args.only.split(",") if p] or ["embedded", "fixed", "stop", "recording", "reducer", "resample", "scenarios", "fuzz"]
    steps = tuple(int(x) for x in args.steps.split(",")) if args.steps else STEPS
    full = not args.only and not args.steps and not QUICK
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    logging.getLogger("parley").setLevel(logging.ERROR)  # the tap's "nats disconnected" on drain is expected
    started = time.monotonic()
    VAR.mkdir(parents=True, exist_ok=True)
    res: dict = {"machine": machine(), "quick": QUICK, "phases": phases, "budget_s": BUDGET_S}
    utterances.paths()  # synthesize (once) before anything is timed
    if "fixed" in phases or "embedded" in phases:
        shutil.rmtree(VAR / "sessions", ignore_errors=True)
    for phase in phases:
        t0 = time.monotonic()
        print(f"[bench] {phase} ...", flush=True)
        if phase == "embedded":
            phase_embedded(res)
        elif phase == "fixed":
            reserve = 25.0 if "reducer" in phases else 5.0
            phase_fixed(res, steps, started, reserve)
        elif phase == "stop":
            phase_stop(res)
        elif phase == "recording":
            phase_recording(res)
        elif phase == "reducer":
            phase_reducer(res)
        elif phase == "resample":
            phase_resample(res)
        elif phase == "scenarios":
            phase_scenarios(res, [Path(f) for f in args.scenarios.split(",") if f] or None)
        elif phase == "fuzz":
            phase_fuzz(res)
        else:
            raise SystemExit(f"unknown phase {phase!r}")
        res.setdefault("phase_s", {})[phase] = time.monotonic() - t0
        print(f"[bench] {phase} done in {time.monotonic() - t0:.0f} s", flush=True)
    res["total_s"] = time.monotonic() - started
    (VAR / "results.json").write_text(json.dumps(res, indent=1, default=str))

    import report  # matplotlib is imported only now

    md_path = Path(args.out) if args.out else (DOCS / "BENCHMARKS.md" if full else VAR / "BENCHMARKS.partial.md")
    png_path = md_path.parent / "bench-latency.png"
    report.plot(res, png_path)
    md_path.write_text(report.render(res, png_path.name))
    print(f"[bench] wrote {md_path.relative_to(ROOT) if md_path.is_relative_to(ROOT) else md_path} and {png_path.name} in {res['total_s']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
