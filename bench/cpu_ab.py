"""CPU seconds per call of any checkout of Parley, old or new, for A/B runs
back to back on a shared machine (docs/BENCHMARKS.md section 7).

``bench/cpu_per_call.py`` needs this tree's helpers; this script brings its
own caller settings (the chaos callers' of 2026-11-28: 0.8 s of quiet ends a
reply) and only needs TREE's ``tests/stack.py`` and ``bench/loadgen.py``, so
it runs against commits from before the durable event path too:

    TREE/.venv/bin/python bench/cpu_ab.py TREE --calls 30 [--spy DIR]

It starts TREE's whole stack (fixed-latency providers), places one warm-up
call, then ``--calls`` Twilio-protocol calls of three turns, and prints each
process's user+system CPU seconds over them (children included), the calls'
failures and underruns, and the load average at start and end. ``--spy``
samples every service with py-spy (non-blocking, 20 Hz; ``uv tool install
py-spy``) into DIR as raw collapsed stacks.
"""
import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import psutil

HERE = Path(__file__).resolve().parent.parent


def caller_args(url: str, calls: int, turns: int) -> SimpleNamespace:
    return SimpleNamespace(
        url=url, transport="twilio", calls=calls, turns=turns, jitter=0.06, quiet=0.8, pause=0.3, settle=0.5,
        spread=5.0, connect_spread=2.0, greeting=False, barge_after=0.0, answer_timeout=10.0, reply_timeout=40.0, api_key="",
    )  # fmt: skip


async def offer(loadgen, utterances, stack, calls: int, turns: int) -> list[dict]:
    args = caller_args(f"{stack.gateway_ws}/twilio/media", calls, turns)
    speech = [loadgen.frames_of(p.read_bytes(), 160, True) for p in utterances.paths()["fixed_ulaw"]]
    silence = loadgen.frames_of(b"\xff" * 160, 160, True)[0]
    callers = [loadgen.Caller(i, args, speech, silence) for i in range(calls)]
    stop = asyncio.Event()
    tick = asyncio.create_task(loadgen.ticker(callers, {"late_ms": [], "resyncs": 0}, stop))
    t0 = time.monotonic()
    scripts = []
    for i, c in enumerate(callers):
        start_at = t0 + args.connect_spread * i / calls + args.settle + args.spread * i / calls
        scripts.append(asyncio.create_task(c.script(start_at)))
        await asyncio.sleep(args.connect_spread / calls)
    await asyncio.gather(*scripts)
    stop.set()
    await tick
    return [asdict(c.rec) for c in callers]


LOOP = "uvloop"


def run(coro):
    """The callers on uvloop's event loop (``--loop``) whatever TREE's load
    generator does (as bench/loadgen.py since capacity8), so both arms of an
    A/B share the cores with the same caller side."""
    try:
        import uvloop
    except ImportError:
        uvloop = None
    return uvloop.run(coro) if uvloop is not None and LOOP == "uvloop" else asyncio.run(coro)


def kind(subject: str) -> str:
    """A subject without its session, partition and sequence tokens."""
    parts = subject.split(".")
    if parts[0] == "$JS" and parts[1] == "ACK":
        return "$JS.ACK." + ".".join(parts[2:4])
    if parts[0] == "_INBOX":
        return "_INBOX"
    if parts[:2] == ["parley", "evt"] and len(parts) >= 4:
        return "parley.evt.<s>." + parts[-1]
    keep = [p for p in parts[:6] if not any(c.isdigit() for c in p) or p in ("v1",)]
    return ".".join(keep[:5])


async def tapped(work, url: str, counts: dict[str, int]):
    import nats

    nc = await nats.connect(url)

    async def count(msg) -> None:
        k = kind(msg.subject)
        counts[k] = counts.get(k, 0) + 1
        if k.startswith("parley.evt"):
            try:
                from parley import contract

                ev = type(contract.decode_event(msg.data)).__name__
            except Exception:  # noqa: BLE001
                ev = "?"
            counts[k + ":" + str(ev)] = counts.get(k + ":" + str(ev), 0) + 1

    await nc.subscribe(">", cb=count)
    try:
        return await work
    finally:
        await nc.drain()


def usage(procs: dict[str, psutil.Process]) -> dict[str, tuple[float, float, int, int]]:
    """Per process (children included): user s, system s, read and write system calls."""
    out = {}
    for key, proc in procs.items():
        user = system = reads = writes = 0
        try:
            for p in [proc, *proc.children(recursive=True)]:
                t = p.cpu_times()
                user, system = user + t.user, system + t.system
                try:
                    io = p.io_counters()
                    reads, writes = reads + io.read_count, writes + io.write_count
                except (psutil.Error, AttributeError):
                    pass
        except psutil.Error:
            pass
        out[key] = (user, system, reads, writes)
    return out


def spy(procs: dict, into: str, rate: int = 20) -> list[subprocess.Popen]:
    Path(into).mkdir(parents=True, exist_ok=True)
    exe = shutil.which("py-spy") or str(Path.home() / ".local" / "bin" / "py-spy")
    return [
        subprocess.Popen([exe, "record", "-r", str(rate), "--nonblocking", "-f", "raw", "-o", f"{into}/{key}.txt", "-p", str(proc.pid)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for key, proc in procs.items()
    ]  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tree", help="the checkout to measure (run with its own .venv/bin/python)")
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--spy", default="", help="py-spy every service into this directory")
    ap.add_argument("--spy-rate", type=int, default=20, help="py-spy samples per second")
    ap.add_argument("--tap", action="store_true", help="count the messages through nats-server by subject kind (adds one subscriber to everything)")
    ap.add_argument("--replicas", default="", help='processes per service, as BENCH_REPLICAS: "orchestrator=2,asr=2,tts=2"')
    ap.add_argument("--idle", type=float, default=0.0, help="also measure each process's CPU over this many idle seconds (after the warm-up call)")
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="the callers' event loop")
    a = ap.parse_args(argv)
    global LOOP
    LOOP = a.loop
    tree = Path(a.tree).resolve()
    sys.path[:0] = [str(tree / "bench"), str(tree / "tests")]
    import loadgen
    import utterances
    from stack import Stack

    commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    env = {"PARLEY_PROVIDERS": "fixed", "PARLEY_TWILIO_INSECURE": "1"}
    replicas = {k: int(n) for k, n in (part.split("=") for part in filter(None, a.replicas.split(",")))}
    stack = Stack(HERE / "var" / "cpu-ab" / f"{commit}-{time.strftime('%H%M%S')}", env=env, replicas=replicas).start()
    idle: dict[str, float] = {}
    try:
        run(offer(loadgen, utterances, stack, 1, 1))  # warm-up call
        procs = {k: psutil.Process(p.pid) for k, p in stack.procs.items()}
        if a.idle:
            procs["nats-server"] = psutil.Process(stack.nats.proc.pid)
            time.sleep(2.0)  # the warm-up call's tail
            first = usage(procs)
            time.sleep(a.idle)
            last = usage(procs)
            idle = {k: round(100 * (last[k][0] + last[k][1] - first[k][0] - first[k][1]) / a.idle, 1) for k in procs}
        spies = spy({k: p for k, p in procs.items() if k != "nats-server"}, a.spy, a.spy_rate) if a.spy else []
        procs["nats-server"] = psutil.Process(stack.nats.proc.pid)
        load_start = psutil.getloadavg()
        before = usage(procs)
        t0, callers0 = time.monotonic(), time.process_time()
        counts: dict[str, int] = {}
        records = run(tapped(offer(loadgen, utterances, stack, a.calls, a.turns), stack.nats_url, counts) if a.tap else offer(loadgen, utterances, stack, a.calls, a.turns))
        wall, callers_cpu = time.monotonic() - t0, time.process_time() - callers0
        after = usage(procs)
        for s in spies:
            s.send_signal(signal.SIGINT)
        for s in spies:
            try:
                s.wait(20)
            except subprocess.TimeoutExpired:
                s.kill()
    finally:
        stack.stop()
    used = {k: round(after[k][0] + after[k][1] - before[k][0] - before[k][1], 2) for k in procs}
    system = {k: round(after[k][1] - before[k][1], 2) for k in procs}
    calls_io = {k: [round((after[k][i] - before[k][i]) / a.calls) for i in (2, 3)] for k in procs}
    total = sum(used.values())
    print(json.dumps({
        "commit": commit, "calls": a.calls, "wall_s": round(wall, 1), **({"replicas": replicas} if replicas else {}),
        **({"idle_cpu_pct": idle, "idle_cpu_pct_total": round(sum(idle.values()), 1)} if idle else {}),
        "load_avg_start": [round(x, 1) for x in load_start], "load_avg_end": [round(x, 1) for x in psutil.getloadavg()],
        "failed_calls": sum(1 for r in records if r["failures"]), "failures": sorted({f for r in records for f in r["failures"]})[:5],
        "underruns": sum(len(r["underruns"]) for r in records),
        **({"msgs_per_call": {k: round(v / a.calls, 1) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}} if a.tap else {}),
        "cpu_s": used, "cpu_s_total": round(total, 2), "cpu_s_per_call": round(total / a.calls, 3),
        "system_s": system, "syscalls_per_call": calls_io,
        "callers_cpu_s": round(callers_cpu, 2),  # this process: the Twilio side (and the tap), not the stack
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
