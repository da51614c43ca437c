"""Audible stop, measured where the caller is, for every transport.

"Audible stop" is the time from the moment the caller starts talking over the
agent (the first voiced sample of their utterance, in the caller's own audio)
to the last sample of the agent's audio the caller actually hears. It is
measured from the caller's side, through a model of the far end's playout:

* ``/ws/pcm``: ``parley.callers.pcm.PcmCaller``, which plays what it receives
  through a 40 ms buffer (as the browser page does) and drops it on an
  ``interrupted`` notice;
* Twilio: ``parley.callers.twilio.TwilioCaller``, which plays Twilio's side:
  media appended to a buffer played in real time behind a jitter buffer,
  ``clear`` empties it (cutting the sound where it is), marks echoed once their
  audio has played. Run twice: a 60 ms and a 300 ms far-end buffer (a real
  phone path holds more than our lead), to show that the stop does not
  depend on how much Twilio holds;
* WebRTC: headless Chromium on the gateway's own page (``?record=1
  &processing=0``): one AudioWorklet records the microphone track and the
  received remote track on one sample clock, so onset and last agent sample
  are read from what Chromium actually captured and played out (after its
  jitter buffer). Its fake microphone plays a script: a request, then
  barge-ins into each reply. The raw microphone (no echo canceller) is the
  set-up of a caller with a headset.

The stack runs with the fixed-latency providers (``PARLEY_PROVIDERS=fixed``):
real Silero VAD in the ASR, a canned LLM reply of about 6.5 s of speech. The
reducer pauses playback on the ASR's SpeechStarted and cancels the run 0.5 s
later (the fixed ASR gives no words): the stop is the pause's.

Each barge-in is also split, from the bus (same machine clock): onset ->
SpeechStarted (the VAD), -> playback paused at the gateway (``paused``
notice), -> (Twilio) ``clear`` at the caller, -> last sample heard.

    uv run python bench/run.py --only stop            # as make bench runs it
    uv run python bench/audible_stop.py --gateway ws://127.0.0.1:PORT --nats nats://127.0.0.1:NPORT
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from parley import bus, contract, subjects
from parley.callers.ear import audible_stop, sound_spans
from parley.callers.pcm import PcmCaller
from parley.callers.twilio import TwilioCaller
from parley.scenarios.line import mint_session

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

BARGE_INTO_S = (1.0, 1.8)  # how far into a reply the caller starts talking (uniform)
GAP_S = 0.25  # pieces of agent audio closer than this are one stretch
WEBRTC_THRESHOLD = 0.003  # of full scale: agent sound in Chromium's received track
QUIET_TAIL_S = 8.0


class BusWatch:
    """SpeechStarted times and the gateway's ``paused`` notices, per session."""

    def __init__(self, nats_url: str):
        self.url = nats_url
        self.started: dict[str, list[float]] = {}
        self.onsets: dict[str, list[float]] = {}
        self.paused: dict[str, list[tuple[float, dict]]] = {}
        self.params: dict[str, dict] = {}

    async def __aenter__(self) -> "BusWatch":
        self.nc = await bus.connect(self.url, name="bench-audible-stop")

        async def on_event(msg) -> None:
            try:
                e = contract.decode_event(msg.data)
            except (contract.DecodeError, contract.ValidationError):
                return
            if isinstance(e, contract.SpeechStarted):
                self.started.setdefault(e.session, []).append(e.at)
            elif isinstance(e, contract.SpeechOnset):
                self.onsets.setdefault(e.session, []).append(e.at)
            elif isinstance(e, contract.SessionStarted):
                self.params[e.session] = dict(e.params)

        async def on_notice(msg) -> None:
            n = json.loads(msg.data)
            if n.get("type") == "paused":
                self.paused.setdefault(msg.subject.rsplit(".", 1)[1], []).append((time.time(), n))

        await self.nc.subscribe(subjects.EVENTS_ALL, cb=on_event)
        await self.nc.subscribe(f"{subjects.PREFIX}.notice.*", cb=on_notice)
        await self.nc.flush()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.nc.drain()

    def session_of(self, key: str, value: str) -> str | None:
        return next((s for s, p in self.params.items() if p.get(key) == value), None)

    def split(self, session: str | None, onset_wall: float) -> dict:
        """Onset -> the VAD's SpeechOnset (pause-only) and SpeechStarted ->
        playback paused, in ms (where seen)."""
        out: dict = {}
        heard = None
        vad = next((t for t in self.started.get(session or "", []) if onset_wall - 0.1 <= t <= onset_wall + 2.0), None)
        if vad is not None:
            out["vad_ms"] = (vad - onset_wall) * 1000
            heard = vad
        first = next((t for t in self.onsets.get(session or "", []) if onset_wall - 0.1 <= t <= onset_wall + 2.0), None)
        if first is not None:
            out["onset_ms"] = (first - onset_wall) * 1000
            heard = first if heard is None else min(first, heard)
        if heard is not None:
            # The gateway measures its pause from the VAD's first sign (onset, else start).
            paused = next((n for t, n in self.paused.get(session or "", []) if t >= heard - 0.01), None)
            if paused is not None:
                out["pause_ms"] = (heard - onset_wall) * 1000 + paused["reaction_ms"]
        return out


def _wall_minus_mono() -> float:
    return time.time() - time.monotonic()


async def _barge_script(caller, say, heard_after, utterance, barges: int, rng: random.Random) -> None:
    """Ask, then talk over each reply ``BARGE_INTO_S`` after it starts being heard."""
    spoke_until = await say(utterance)
    for _ in range(barges):
        await _until(lambda: heard_after(spoke_until), 30, "the reply")
        await asyncio.sleep(rng.uniform(*BARGE_INTO_S))
        spoke_until = await say(utterance)
    await _until(lambda: heard_after(spoke_until), 30, "the last reply")
    await asyncio.sleep(1.0)


async def _until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not come in {timeout:.0f} s")
        await asyncio.sleep(0.02)


def _rows(transport: str, heard, rate: int, onsets: list[float], clears: list[float], watch: BusWatch, session: str | None, off: float) -> list[dict]:
    rows = []
    for onset in onsets:
        stop = audible_stop(heard, rate, onset, gap=GAP_S)
        if stop is None:
            continue  # the agent was not playing when the caller spoke (the first request)
        row = {"transport": transport, "stop_ms": stop * 1000, **watch.split(session, onset + off)}
        sound = audible_stop(heard, rate, onset, threshold=WEBRTC_THRESHOLD, gap=GAP_S)
        if sound is not None:
            row["sound_stop_ms"] = sound * 1000
        clear = next((c for c in clears if onset <= c <= onset + 3.0), None)
        if clear is not None:
            row["clear_ms"] = (clear - onset) * 1000
        rows.append(row)
    return rows


async def pcm_calls(gateway_ws: str, nats_url: str, utterance: np.ndarray, calls: int, barges: int, seed: int = 1, api_key: str = "", hold: bool = False) -> list[dict]:
    rows: list[dict] = []
    async with BusWatch(nats_url) as watch:

        async def one(i: int) -> None:
            await asyncio.sleep(i * 1.3)
            token = await asyncio.to_thread(mint_session, "http" + gateway_ws.removeprefix("ws"), api_key, {"bench_stop": f"pcm-{i}"})
            async with PcmCaller(f"{gateway_ws}/ws/pcm?token={token}", hold_on_pause=hold) as c:
                heard_after = lambda t: any(s >= t for s, _ in c.heard)  # noqa: E731
                await _barge_script(c, c.say, heard_after, utterance, barges, random.Random(seed + i))
                rows.extend(_rows("pcm-hold" if hold else "pcm", c.heard, 16000, [u.onset for u in c.utterances if u.onset], [], watch, c.session, _wall_minus_mono()))

        await asyncio.gather(*(one(i) for i in range(calls)))
    return rows


async def twilio_calls(gateway_ws: str, nats_url: str, utterance8k: np.ndarray, calls: int, barges: int, playout_delay: float, seed: int = 2) -> list[dict]:
    rows: list[dict] = []
    async with BusWatch(nats_url) as watch:

        async def one(i: int) -> None:
            await asyncio.sleep(i * 1.3)
            key = f"twilio-{playout_delay}-{i}-{random.random()}"
            c = TwilioCaller(f"{gateway_ws}/twilio/media", {"bench_stop": key}, playout_delay=playout_delay)
            async with c:
                say = lambda pcm: _last(c.say(pcm))  # noqa: E731
                heard_after = lambda t: any(s >= t for s, _ in c.rec.played)  # noqa: E731
                await _barge_script(c, say, heard_after, utterance8k, barges, random.Random(seed + i))
            rows.extend(
                _rows(f"twilio-{round(playout_delay * 1000)}ms", c.rec.played, 8000, [u.onset for u in c.rec.utterances if u.onset], c.rec.clears, watch,
                      watch.session_of("bench_stop", key), _wall_minus_mono())
            )  # fmt: skip

        await asyncio.gather(*(one(i) for i in range(calls)))
    return rows


async def _last(fut) -> float:
    return (await fut)[1]


# ---------------------------------------------------------------- WebRTC (Chromium)


def webrtc_script(utterance48k: np.ndarray, barges: int, seed: int = 3) -> np.ndarray:
    """The fake microphone: a request, then a barge-in into each reply. A reply
    starts about 1.1 s after an utterance ends (0.5 s of VAD silence, the fixed
    ASR, LLM and TTS) and lasts about 6.5 s."""
    rng = random.Random(seed)
    rate = 48000
    parts = [np.zeros(int(2.0 * rate), np.int16), utterance48k]
    for _ in range(barges):
        parts += [np.zeros(int((1.1 + rng.uniform(*BARGE_INTO_S)) * rate), np.int16), utterance48k]
    parts.append(np.zeros(int(QUIET_TAIL_S * rate), np.int16))
    return np.concatenate(parts)


async def webrtc_call(gateway_http: str, nats_url: str, utterance48k: np.ndarray, barges: int, workdir: Path, hold: bool = True) -> tuple[list[dict], dict]:
    from browser import Chromium, write_wav  # tests/browser.py: Chromium over the DevTools protocol

    script = webrtc_script(utterance48k, barges)
    wav = write_wav(workdir / "barge.wav", script, 48000)
    async with BusWatch(nats_url) as watch:
        with Chromium(wav, workdir / "chromium") as browser:
            page = await browser.page()
            try:
                await page.goto(f"{gateway_http}/?record=1&processing=0&bench_stop=webrtc{'' if hold else '&hold=0'}")
                await page.eval("document.getElementById('start').click()")
                await page.wait_for("window.parley.connected || window.parley.errors.length", timeout=30)
                errors = await page.eval("window.parley.errors")
                if errors:
                    raise RuntimeError(f"the page could not call: {errors}")
                await asyncio.sleep(len(script) / 48000 + 1.0)
                rec = await page.eval("window.parleyRecording()", timeout=60)
                playback = await page.eval("window.parley.playback")
                session = await page.eval("window.parley.session")
                await page.eval("document.getElementById('stop').click()")
                await asyncio.sleep(0.5)
            finally:
                await page.close()
    rate = rec["rate"]
    mic = base64.b64decode(rec["mic"])
    agent = base64.b64decode(rec["agent"])
    # Page clock: seconds since the first recorded sample; epoch0 is its wall time.
    onsets = [a for a, _ in sound_spans([(0.0, mic)], rate, threshold=0.01, gap=0.5)]
    heard = [(0.0, agent)]
    rows = []
    for onset in onsets:
        stop = audible_stop(heard, rate, onset, threshold=WEBRTC_THRESHOLD, gap=GAP_S)
        if stop is None:
            continue
        row = {"transport": "webrtc" if hold else "webrtc-nohold", "stop_ms": stop * 1000, "sound_stop_ms": stop * 1000, **watch.split(session, rec["epoch0"] + onset)}
        # The page read the gateway's "pause" (and silenced its buffers): ms after the onset, on the page's clock.
        held = next((p["at"] for p in playback if p["type"] == "pause" and onset - 0.1 <= p["at"] - rec["epoch0"] <= onset + 2.0), None)
        if held is not None:
            row["page_pause_ms"] = (held - rec["epoch0"] - onset) * 1000
        rows.append(row)
    return rows, {"utterances_in_mic": len(onsets), "session": session}


# ---------------------------------------------------------------- summary


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(values, q, method="linear"))


def summarize(rows: list[dict]) -> dict:
    out: dict = {}
    for transport in dict.fromkeys(r["transport"] for r in rows):
        rs = [r for r in rows if r["transport"] == transport]

        def col(k: str) -> list[float]:
            return [r[k] for r in rs if k in r]

        out[transport] = {
            "n": len(rs),
            **{f"{k}_{q}": pct(col(k), q) for k in ("stop_ms", "sound_stop_ms", "onset_ms", "vad_ms", "pause_ms", "clear_ms", "page_pause_ms") for q in (50, 95)},
            "stop_max": max(col("stop_ms")) if rs else None,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gateway", required=True, help="ws://host:port of a running gateway (fixed-latency providers)")
    ap.add_argument("--nats", required=True)
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--barges", type=int, default=8)
    ap.add_argument("--transports", default="pcm,twilio,webrtc")
    ap.add_argument("--api-key", default=os.environ.get("PARLEY_API_KEY", ""), help="the gateway's PARLEY_API_KEY (mints /ws/pcm session tokens)")
    args = ap.parse_args(argv)
    import utterances

    rows = asyncio.run(measure(args.gateway, args.nats, utterances, args.calls, args.barges, args.transports.split(","), api_key=args.api_key))
    print(json.dumps(summarize(rows), indent=1))
    return 0


async def measure(gateway_ws: str, nats_url: str, utterances, calls: int, barges: int, transports: list[str], api_key: str = "") -> list[dict]:
    """Every transport in turn, on a running stack; the rows of every barge-in."""
    pcm16k = np.frombuffer(utterances.fixed_pcm16k(), dtype="<i2")
    from parley.audio import ulaw_to_pcm16

    pcm8k = np.frombuffer(ulaw_to_pcm16(utterances.fixed_ulaw()), dtype="<i2")
    rows: list[dict] = []
    if "pcm" in transports:
        ab = os.environ.get("BENCH_PCM_AB", "") not in ("", "0")  # the client playing its buffer out on a pause, then stopping, alternating
        for hold in ([False, True, False, True] if ab else [True]):
            rows += await pcm_calls(gateway_ws, nats_url, pcm16k, calls, barges // 2 if ab else barges, api_key=api_key, hold=hold)
    if "twilio" in transports:
        for delay in (0.06, 0.3):
            rows += await twilio_calls(gateway_ws, nats_url, pcm8k, calls, barges, delay)
    if "webrtc" in transports:
        import soxr

        pcm48k = (soxr.resample(pcm16k.astype(np.float32) / 32768, 16000, 48000) * 32767).astype(np.int16)
        arms = [True] if os.environ.get("BENCH_WEBRTC_AB", "") in ("", "0") else [False, True, False, True]
        for hold in arms:  # A/B (BENCH_WEBRTC_AB=1): the page letting its buffers play out on a pause, then silencing them, alternating
            with tempfile.TemporaryDirectory() as tmp:
                web, _ = await webrtc_call(gateway_ws.replace("ws://", "http://"), nats_url, pcm48k, barges * calls // (len(arms) // 2 or 1), Path(tmp), hold=hold)
            rows += web
    return rows


if __name__ == "__main__":
    sys.exit(main())


# ---------------------------------------------------------------- the report

GOAL_MS = 250
LABELS = {
    "pcm": "`/ws/pcm` (40 ms client buffer, played out on a pause: older clients)",
    "pcm-hold": "`/ws/pcm`, a client that stops at `pause` and says what it dropped (the page, `parley talk`)",
    "twilio-60ms": "Twilio, 60 ms far-end buffer",
    "twilio-300ms": "Twilio, 300 ms far-end buffer",
    "webrtc": "WebRTC (Chromium, what the page plays)",
    "webrtc-nohold": "WebRTC, the page not silencing its buffers (`?hold=0`)",
}


def _f(x) -> str:
    return "–" if x is None else f"{x:.0f}"


def summary_rows(stop: dict, run: str) -> list[list[str]]:
    s = stop.get("summary") or {}
    if not s:
        return []
    cells = ", ".join(f"{t} {_f(v['stop_ms_95'])}" for t, v in s.items())
    worst = max((v["stop_ms_95"] or 0) for v in s.values())
    return [["3b. Audible stop after the caller starts talking, p95 by transport", f"{cells} ms ({'holds' if worst <= GOAL_MS else 'does not hold'})",
             f"p95 ≤ {GOAL_MS} ms on every transport (issue 9)", f"`{run} --only stop`"]]  # fmt: skip


def section(stop: dict) -> list[str]:
    s = stop.get("summary") or {}
    out = ["", "## 3b. Audible stop by transport (caller's side)", ""]
    if not s:
        return out + [f"Not measured: {stop.get('error', 'no rows')}"]
    out.append(
        "From the moment the caller starts talking over the agent (the first voiced sample of their utterance, in the caller's own audio) "
        "to the last sample of agent audio the caller actually hears, through a model of the far end's playout: the `/ws/pcm` caller plays "
        "through a 40 ms buffer and drops it on `interrupted`; the Twilio caller plays Twilio's buffer in real time (`clear` cuts the sound "
        "where it is; marks echoed once their audio has played), with a 60 ms and a 300 ms far-end buffer; WebRTC is headless Chromium on the "
        "gateway's page, recording its microphone and the received remote track on one AudioWorklet clock (agent sound: 5 ms windows above "
        f"{WEBRTC_THRESHOLD * 100:.1f} % of full scale). Fixed-latency providers, real Silero VAD; each caller talks over each reply "
        f"{BARGE_INTO_S[0]:.1f}–{BARGE_INTO_S[1]:.1f} s after it starts. The reducer pauses playback on the ASR's SpeechOnset (the VAD's "
        "first `PARLEY_ASR_ONSET_MS`, 64 ms, of voice: a pause-only signal, resumed after `onset_hold` if no SpeechStarted follows) or, "
        "without one, on SpeechStarted; on Twilio the pause sends `clear` and a resume replays from the last mark Twilio echoed. Split from "
        "the bus (one machine clock): onset → SpeechOnset → SpeechStarted (the utterance, 160 ms of voice) → playback paused at the gateway "
        "→ `clear` at the caller (Twilio) → last sample heard."
    )
    out.append("")
    rows = []
    for t, v in s.items():
        far = None if v["stop_ms_50"] is None or v["pause_ms_50"] is None else v["stop_ms_50"] - v["pause_ms_50"]
        verdict = "**holds**" if (v["stop_ms_95"] or 1e9) <= GOAL_MS else "does not hold"
        rows.append(
            [LABELS.get(t, t), str(v["n"]), f"{_f(v['stop_ms_50'])} / **{_f(v['stop_ms_95'])}** / {_f(v['stop_max'])}", verdict,
             f"{_f(v.get('onset_ms_50'))} / {_f(v.get('onset_ms_95'))}", f"{_f(v['vad_ms_50'])} / {_f(v['vad_ms_95'])}", _f(v["pause_ms_50"]), _f(v["clear_ms_50"]), _f(far)]
        )  # fmt: skip
    head = ["transport", "n", "audible stop p50 / p95 / max ms", f"p95 ≤ {GOAL_MS} ms", "onset → SpeechOnset p50 / p95", "onset → SpeechStarted p50 / p95", "→ paused p50", "→ `clear` p50", "paused → last heard p50"]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    out += ["| " + " | ".join(r) + " |" for r in rows]
    out.append("")
    out.append(
        "Where the time goes: most of it is the VAD's onset (two 32 ms windows above Silero's threshold for SpeechOnset, after Silero's own "
        "rise, the window's fill and the 20 ms packet; SpeechStarted needs 160 ms and comes about 100 ms later). From the onset the pause "
        "reaches the gateway in a few ms (orchestrator reduce + KV + NATS), and on Twilio the `clear` reaches the caller within a ms of the "
        "pause; what remains after it is the far end's own buffer (the page's 40 ms, Chromium's jitter buffer). On WebRTC the gateway "
        "sends `pause` on the page's events channel the moment it pauses, and the page silences the agent's voice (an AudioWorklet tap before the "
        "speakers, which the recorder also follows, and which tells the gateway how much it silenced: played again on resume), so what aiortc and Chromium's jitter buffer still held (about 90 ms) is not heard; "
        "the `webrtc-nohold` row (`?hold=0`, run alternately with it when `BENCH_WEBRTC_AB=1`) is the page letting it play out. "
        "Twilio's far-end buffer depth no longer matters (60 vs 300 ms rows)."
    )
    mc = stop.get("mark_cost")
    if mc:
        out += ["", "### What the Twilio marks cost", ""]
        out.append(
            f"A resume replays from the last mark Twilio echoed, so the mark interval bounds what the caller may hear twice. The same load "
            f"({mc['calls']} concurrent Twilio calls, fixed providers, `bench/loadgen.py`) with the gateway at two intervals:"
        )
        out.append("")
        out.append("| `PARLEY_TWILIO_MARK_MS` | marks sent per call-second of agent audio | gateway CPU per call (% of a core) |")
        out.append("|---|---|---|")
        for r in mc["runs"]:
            out.append(f"| {r['mark_ms']} | {r['marks_per_audio_s']:.1f} | {r['gateway_cpu_per_call'] * 100:.2f} |")
        out.append("")
        out.append(f"Reproduce: `{mc['command']}` with the gateway started at each interval.")
    out += ["", f"Reproduce: `uv run python bench/run.py --only stop` (or `uv run python bench/audible_stop.py --gateway ws://127.0.0.1:PORT --nats nats://127.0.0.1:NPORT` on a stack started with `PARLEY_PROVIDERS=fixed`). Raw rows: `var/bench/results.json` (`stop.rows`)."]
    return out
