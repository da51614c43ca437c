"""``parley scenarios``: run scenario files against a running Parley stack.

    parley scenarios run FILE... [--transport pcm,twilio] [--only NAME] [--tag TAG]
                                 [--gateway URL] [--nats URL] [--out DIR] [--json FILE]
    parley scenarios check FILE...          validate; list the scenarios and their turns
    parley scenarios render FILE --out DIR  write the caller's audio of every step as WAV
    parley scenarios judge FILE... --records DIR
                                            judge saved calls again (``run --out DIR``), e.g.
                                            after editing the expectations

``run`` dials one call per scenario and transport, one at a time, and prints
a line per call, every failure with its timeline, and the numbers by
transport. It exits 0 when every check passed, 1 when one failed, 2 for a
bad file or usage, 3 when the stack cannot be reached.

The stack is the one ``make run`` starts unless told otherwise: the gateway
on PARLEY_GATEWAY_PORT (8080), NATS on NATS_URL or PARLEY_NATS_PORT (4222).
The runner watches the calls' reducer steps on NATS, so it needs the stack's
NATS. A file's ``now:`` must match the stack's pinned clock
(``PARLEY_NOW=... make run``); a mismatch fails the scenario and says so.
The format is documented in docs/SCENARIOS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from . import report
from .spec import TRANSPORTS, Scenario, ScenarioError, load_path


def _urls(gateway: str) -> tuple[str, str]:
    """(ws://..., http://...) from either form."""
    g = gateway.rstrip("/")
    if g.startswith(("ws://", "wss://")):
        return g, "http" + g[2:]
    if g.startswith(("http://", "https://")):
        return "ws" + g[4:], g
    return f"ws://{g}", f"http://{g}"


async def run_all(target, runs: list[tuple[Scenario, str]], *, cache: Path | None = None, out_dir: Path | None = None, timing=None, echo=print) -> list:
    """Carry out (scenario, transport) runs in order; returns the Results."""
    from .runner import Runner, Timing
    from .sounds import Renderer

    results = []
    async with Runner(target, renderer=Renderer(cache), out_dir=out_dir, timing=timing or Timing()) as runner:
        for scenario, transport in runs:
            _, result = await runner.run(scenario, transport)
            results.append(result)
            if echo:
                echo(report.one_line(result))
    return results


def _select(files: list[str], only: list[str], tags: list[str], transports: list[str]) -> list[tuple[Scenario, str]]:
    runs = []
    for f in files:
        suite = load_path(f)
        for s in suite.select(tuple(only), tuple(tags)):
            for t in s.transports:
                if t in transports:
                    runs.append((s, t))
    return runs


def _cache_dir(arg: str) -> Path:
    if arg:
        return Path(arg)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "parley" / "scenarios"


def _api_key() -> str:
    if os.environ.get("PARLEY_API_KEY"):
        return os.environ["PARLEY_API_KEY"]
    kept = Path("var") / "secrets" / "api_key"
    return kept.read_text().strip() if kept.exists() else ""


# long: argparse declarations of the scenarios command, one option per line
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="parley scenarios", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_run = sub.add_parser("run", help="run scenario files against a stack")
    p_run.add_argument("files", nargs="+")
    p_run.add_argument("--transport", default=",".join(TRANSPORTS), help="comma list of pcm, twilio (default both, as each scenario allows)")
    p_run.add_argument("--only", action="append", default=[], help="scenario name (NAME* for a prefix); repeatable")
    p_run.add_argument("--tag", action="append", default=[], help="only scenarios with this tag; repeatable")
    p_run.add_argument("--gateway", default=f"http://127.0.0.1:{os.environ.get('PARLEY_GATEWAY_PORT', '8080')}")
    p_run.add_argument("--nats", default=os.environ.get("NATS_URL", f"nats://127.0.0.1:{os.environ.get('PARLEY_NATS_PORT', '4222')}"))
    p_run.add_argument("--twilio-auth-token", default=os.environ.get("TWILIO_AUTH_TOKEN", ""), help="dial Twilio calls through the signed /twilio/voice webhook")
    p_run.add_argument("--api-key", default=_api_key(), help="the gateway's PARLEY_API_KEY, to mint /ws/pcm session tokens (default: PARLEY_API_KEY, else the key make run keeps in var/secrets/api_key)")
    p_run.add_argument("--out", default="", help="keep each call's record (JSON) and a stereo WAV (left: caller, right: what it heard)")
    p_run.add_argument("--json", default="", help="write every result and the summary as JSON")
    p_run.add_argument("--cache", default="", help="where rendered caller audio is kept (default ~/.cache/parley/scenarios)")
    p_check = sub.add_parser("check", help="validate scenario files")
    p_check.add_argument("files", nargs="+")
    p_judge = sub.add_parser("judge", help="judge the calls saved by `run --out DIR` again")
    p_judge.add_argument("files", nargs="+")
    p_judge.add_argument("--records", required=True)
    p_judge.add_argument("--json", default="")
    p_render = sub.add_parser("render", help="write the caller's audio of every step as WAV")
    p_render.add_argument("file")
    p_render.add_argument("--out", required=True)
    p_render.add_argument("--cache", default="")
    args = ap.parse_args(argv)

    try:
        if args.cmd == "check":
            return _check(args.files)
        if args.cmd == "render":
            return _render(args.file, Path(args.out), _cache_dir(args.cache))
        if args.cmd == "judge":
            return _rejudge(args.files, Path(args.records), args.json)
        transports = [t.strip() for t in args.transport.split(",") if t.strip()]
        bad = [t for t in transports if t not in TRANSPORTS]
        if bad:
            print(f"parley scenarios: unknown transport(s) {bad}; use {', '.join(TRANSPORTS)}", file=sys.stderr)
            return 2
        runs = _select(args.files, args.only, args.tag, transports)
    except ScenarioError as exc:
        print(f"parley scenarios: {exc}", file=sys.stderr)
        return 2
    if not runs:
        print("parley scenarios: no scenario matches", file=sys.stderr)
        return 2
    from .runner import Target

    ws, http = _urls(args.gateway)
    target = Target(ws, args.nats, gateway_http=http, twilio_auth_token=args.twilio_auth_token, api_key=args.api_key)
    print(f"{len(runs)} call(s) against {http} (NATS {args.nats})", flush=True)
    problem = _preflight(http)
    if problem:
        print(f"parley scenarios: {problem}; is the stack running (make run)? --gateway and --nats say where it is", file=sys.stderr)
        return 3
    try:
        results = asyncio.run(run_all(target, runs, cache=_cache_dir(args.cache), out_dir=Path(args.out) if args.out else None, echo=lambda s: print(s, flush=True)))
    except (OSError, TimeoutError) as exc:
        print(f"parley scenarios: cannot reach the stack ({exc}); is it running (make run)? --gateway and --nats say where it is", file=sys.stderr)
        return 3
    return _conclude(results, args.json)


def _conclude(results: list, json_path: str) -> int:
    failed = [r for r in results if not r.ok]
    for r in failed:
        print(report.failure(r))
    s = report.summary(results)
    print()
    print(report.table(s))
    print(f"\n{len(results) - len(failed)} passed, {len(failed)} failed")
    if json_path:
        Path(json_path).write_text(json.dumps({"results": [asdict(r) for r in results], "summary": s}, indent=1, default=str))
    return 1 if failed else 0


def _rejudge(files: list[str], records: Path, json_path: str) -> int:
    from .judge import Record, judge

    scenarios = {s.name: s for f in files for s in load_path(f).scenarios}
    results = []
    for path in sorted(records.glob("*.json")):
        name, _, transport = path.stem.rpartition(".")
        if name not in scenarios:
            continue
        saved = json.loads(path.read_text())
        result = judge(scenarios[name], Record.from_json(saved["record"]))
        results.append(result)
        print(report.one_line(result))
    if not results:
        print(f"parley scenarios: no saved call in {records} matches a scenario of {', '.join(files)}", file=sys.stderr)
        return 2
    return _conclude(results, json_path)


def _preflight(http: str) -> str:
    """"" if the gateway answers /healthz, else what went wrong."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{http}/healthz", timeout=5) as r:  # noqa: S310 - the gateway the user named
            return "" if r.status == 200 else f"the gateway at {http} answered /healthz with {r.status}"
    except (urllib.error.URLError, OSError) as exc:
        return f"the gateway at {http} does not answer ({getattr(exc, 'reason', exc)})"


def _check(files: list[str]) -> int:
    total = 0
    for f in files:
        suite = load_path(f)
        print(f"{f}: {len(suite.scenarios)} scenario(s)")
        for s in suite.scenarios:
            total += 1
            turns = s.turns()
            pauses = sum(len(t.mid_pauses) for t in turns)
            print(f"  {s.name} [{', '.join(s.transports)}] {len(turns)} turn(s)" + (f", {pauses} mid-turn pause(s)" if pauses else "") + (f"; tags {', '.join(s.tags)}" if s.tags else ""))
    print(f"{total} scenario(s) valid")
    return 0


def _render(file: str, out: Path, cache: Path) -> int:
    import wave

    from .sounds import RATE, Renderer

    suite = load_path(file)
    renderer = Renderer(cache)
    out.mkdir(parents=True, exist_ok=True)
    for s in suite.scenarios:
        for i, step in enumerate(s.steps):
            if not step.audible:
                continue
            pcm = renderer(step.kind, step.text, step.audio)
            path = out / f"{s.name}.{i:02d}.wav"
            with wave.open(str(path), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(RATE)
                w.writeframes(pcm.astype("<i2").tobytes())
            print(f"{path}  {len(pcm) / RATE:.2f} s  {step.label()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
