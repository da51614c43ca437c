"""Turning judged calls into what a person reads: one line per call, the
failures with their timelines, and the suite's numbers by transport against
the goals of issue 9.

The numbers (``summary``):

* **voice-to-voice**: p50/p95 of every answered turn's caller-side latency;
* **answered mid-utterance**: of the calls with a mid-turn pause (the caller
  paused inside a turn that began while the agent was quiet), the share in
  which the caller heard the agent start inside that turn; and, from the
  system's side, the share in which a reply was *started* inside it (heard
  or not: on a slow machine the caller may resume before it plays);
* **killed by a noise or a backchannel**: of the talk-overs whose step says
  ``expect: keeps_talking``, the share that stopped the agent;
* **real interruptions that stopped the agent**: of the talk-overs that say
  ``expect: stops``, the share that did;
* **audible stop**: p50/p95 over those real interruptions, from the caller's
  onset to the last agent audio it heard.
"""

from __future__ import annotations

import math

from .judge import Result

GOALS = {
    "v2v_p50_ms": ("<=", 700.0),
    "mid_turn_rate": ("<=", 0.05),
    "killed_rate": ("<=", 0.0),
    "stopped_rate": (">=", 0.95),
    "stop_p95_ms": ("<=", 250.0),
}


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


def _heard_by_kind(pause_runs: list[Result]) -> dict[str, tuple[int, int]]:
    """Per kind of pause: (calls heard inside such a pause, calls with one)."""
    return {
        kind: (sum(1 for r in pause_runs if any(m["pause_turn"] and m.get("kind") == kind for m in r.mid_turn)), sum(1 for r in pause_runs if kind in r.pause_kinds))
        for kind in ("mid-sentence", "after-sentence")
    }


def summary(results: list[Result]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for transport in sorted({r.transport for r in results}):
        rs = [r for r in results if r.transport == transport]
        v2v = [v for r in rs for v in r.v2v_ms]
        pause_runs = [r for r in rs if r.pause_turns]
        heard_early = [r for r in pause_runs if any(m["pause_turn"] for m in r.mid_turn)]
        started_early = [r for r in pause_runs if any(m["pause_turn"] for m in r.early_runs)]
        keep = [o for r in rs for o in r.overlaps if o.get("expect") == "keeps_talking" and o.get("outcome") in ("stops", "keeps_talking")]
        stop = [o for r in rs for o in r.overlaps if o.get("expect") == "stops" and o.get("outcome") in ("stops", "keeps_talking")]
        stops_ms = [o["stop_ms"] for o in stop if o.get("stop_ms") is not None]
        into = [m["into_pause_ms"] for r in heard_early for m in r.mid_turn if m["pause_turn"]]
        split = [st for r in rs for st in r.v2v_stages]
        out[transport] = {
            "calls": len(rs),
            "passed": sum(1 for r in rs if r.ok),
            "errors": sum(1 for r in rs if r.error),
            "v2v_n": len(v2v),
            "v2v_p50_ms": pct(v2v, 50),
            "v2v_p95_ms": pct(v2v, 95),
            "v2v_stage_p50_ms": {k: pct([st[k] for st in split if k in st], 50) for k in ("endpoint", "asr", "reply")},
            "pause_calls": len(pause_runs),
            "mid_turn_heard": len(heard_early),
            "mid_turn_rate": len(heard_early) / len(pause_runs) if pause_runs else None,
            "mid_turn_into_pause_ms": sorted(into),
            "mid_turn_by_kind": _heard_by_kind(pause_runs),
            "mid_turn_started": len(started_early),
            "mid_turn_started_rate": len(started_early) / len(pause_runs) if pause_runs else None,
            "keep_n": len(keep),
            "killed": sum(1 for o in keep if o["outcome"] == "stops"),
            "killed_rate": sum(1 for o in keep if o["outcome"] == "stops") / len(keep) if keep else None,
            "stop_n": len(stop),
            "stopped": sum(1 for o in stop if o["outcome"] == "stops"),
            "stopped_rate": sum(1 for o in stop if o["outcome"] == "stops") / len(stop) if stop else None,
            "stop_p50_ms": pct(stops_ms, 50),
            "stop_p95_ms": pct(stops_ms, 95),
            "not_over": sum(1 for r in rs for o in r.overlaps if o.get("outcome") == "not_over"),
        }
    return out


def meets(key: str, value: float | None) -> str:
    if value is None or key not in GOALS:
        return ""
    op, goal = GOALS[key]
    ok = value <= goal if op == "<=" else value >= goal
    return "yes" if ok else "no"


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0f} ms"


def _rate(num: int, den: int) -> str:
    return "n/a" if not den else f"{num}/{den} ({num / den * 100:.1f} %)"


def _by_kind(m: dict, kind: str) -> str:
    counts = m.get("mid_turn_by_kind", {}).get(kind)  # absent from summaries written before the split
    return _rate(*counts) if counts else "n/a"


def table(s: dict[str, dict]) -> str:
    """The numbers by transport, as a Markdown table."""
    ts = list(s)
    rows = [
        ("calls passing every check", lambda m: f"{m['passed']}/{m['calls']}", None, ""),
        ("voice-to-voice p50 (caller's ear)", lambda m: _ms(m["v2v_p50_ms"]), "v2v_p50_ms", "<= 700 ms"),
        ("voice-to-voice p95", lambda m: _ms(m["v2v_p95_ms"]) + f" (n={m['v2v_n']})", None, ""),
        ("  of which, p50: end of speech to the VAD's stop", lambda m: _ms(m["v2v_stage_p50_ms"]["endpoint"]), None, ""),
        ("  VAD's stop to the final transcript", lambda m: _ms(m["v2v_stage_p50_ms"]["asr"]), None, ""),
        ("  final transcript to the first audio heard", lambda m: _ms(m["v2v_stage_p50_ms"]["reply"]), None, ""),
        ("agent heard inside a caller's pause", lambda m: _rate(m["mid_turn_heard"], m["pause_calls"]), "mid_turn_rate", "<= 5 %"),
        ("  of which, inside a pause mid-sentence (\"for Tuesday, ...\")", lambda m: _by_kind(m, "mid-sentence"), None, ""),
        ("  inside a pause after a whole sentence (\"Do you open Saturdays? ... I work weekdays.\")", lambda m: _by_kind(m, "after-sentence"), None, ""),
        ("reply started inside a caller's pause (heard or not)", lambda m: _rate(m["mid_turn_started"], m["pause_calls"]), None, ""),
        ("answers killed by a noise or backchannel", lambda m: _rate(m["killed"], m["keep_n"]), "killed_rate", "0"),
        ("real interruptions that stopped the agent", lambda m: _rate(m["stopped"], m["stop_n"]), "stopped_rate", ">= 95 %"),
        ("audible stop p50 (caller's onset to last agent audio)", lambda m: _ms(m["stop_p50_ms"]), None, ""),
        ("audible stop p95", lambda m: _ms(m["stop_p95_ms"]), "stop_p95_ms", "<= 250 ms"),
    ]
    head = "| measure | goal | " + " | ".join(ts) + " |"
    sep = "|---|---|" + "---|" * len(ts)
    lines = [head, sep]
    for name, fmt, key, goal in rows:
        cells = []
        for t in ts:
            m = s[t]
            cell = fmt(m)
            verdict = meets(key, m.get(key)) if key else ""
            cells.append(f"{cell} {'✓' if verdict == 'yes' else '✗' if verdict == 'no' else ''}".strip())
        lines.append(f"| {name} | {goal} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def one_line(r: Result) -> str:
    status = "PASS" if r.ok else ("ERROR" if r.error else "FAIL")
    bits = []
    if r.v2v_ms:
        bits.append("v2v " + "/".join(f"{v:.0f}" for v in r.v2v_ms) + " ms")
    for o in r.overlaps:
        if o.get("outcome") in ("stops", "keeps_talking"):
            what = f"stopped in {o['stop_ms']} ms" if o["outcome"] == "stops" else f"kept talking (gap {o.get('gap_ms')} ms)"
            bits.append(f"step {o['step']} {what}")
    if r.mid_turn:
        bits.append("answered mid-turn " + ", ".join(f"{m['into_pause_ms']} ms into the pause" for m in r.mid_turn))
    return f"{status:5} {r.transport:6} {r.scenario}" + (f"  ({'; '.join(bits)})" if bits else "")


def failure(r: Result) -> str:
    lines = [f"--- {r.scenario} over {r.transport} (session {r.session or '?'})"]
    if r.error:
        lines.append(f"    error: {r.error}")
    for c in r.failed:
        lines.append(f"    FAILED {c.name}: {c.detail}")
    if r.transcripts:
        lines.append(f"    the ASR heard the caller say: {r.transcripts}")
    if r.heard:
        lines.append(f"    Whisper heard the agent say: {r.heard!r}")
    lines.append("    timeline (s from dialling; caller = what the caller did, heard = agent audio at the caller's ear, system = reducer steps):")
    lines.extend("      " + t for t in r.timeline)
    return "\n".join(lines)
