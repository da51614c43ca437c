"""Resume error by transport: after a pause, does the caller hear the answer
again from exactly where they stopped hearing it?

The gateway runs in-process on a real nats-server; this script plays the
other services on the bus (the ASR claim, the orchestrator's Synthesize step
and its PausePlayback / ResumePlayback, the TTS audio), so pauses come exactly
when it says, with nothing else in the way. The answer is ``SOURCE_S`` of
Piper speech over a noise floor (-40 dBFS: every moment of it is audible, so
where the caller's sound stops and starts again is where the audio stopped
and started). Each call is paused ``PAUSES`` times, 0.7-1.3 s apart, for
``PAUSE_S``; then what the caller heard is cut at its silent gaps (the
pauses) and each piece is placed in the source by cross-correlation (300 ms
at each end). The resume error at a pause is where the next piece starts in
the source minus where the piece before it ended: 0 is exact, > 0 audio the
caller never heard (skipped), < 0 audio heard twice.

* ``/ws/pcm``: ``PcmCaller`` (a 40 ms playout buffer, as the page): ``pcm``
  plays its buffer out at a pause (older clients); ``pcm-answer`` stops, drops
  what it had not played and tells the gateway (``paused``), as the page's ws
  mode and ``parley talk`` do;
* WebRTC: headless Chromium on the gateway's page (``?record=1``: what it
  plays, after its mute): ``webrtc-norewind`` (``?rewind=0``) silences its
  buffers at a pause but says nothing (sessions 5's page), ``webrtc`` also says
  what it silenced unplayed (the tap's count);
* Twilio: ``TwilioCaller`` (60 ms far-end buffer): ``clear`` at the pause,
  replay from the last mark Twilio echoed.

    uv run python bench/resume_error.py [--calls 2] [--pauses 6] [--transports pcm,webrtc,twilio]

``BENCH_PCM_AB`` / ``BENCH_WEBRTC_AB`` (``bench/run.py --only stop``) run the
arms alternately (A, B, A, B); without them only the shipped arm runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from parley import bus, contract, subjects
from parley.natsd import NatsServer, free_port

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent / "services" / "media-gateway"))

API_KEY = "bench-resume-error-0123456789"
RATE = 16000
SOURCE_S = 9.0
PAUSES = 6
PAUSE_S = 0.5
FLOOR = 0.01  # the noise floor's RMS, of full scale
WINDOW_S = 0.3  # what is cross-correlated at each end of a piece
GAP_S = 0.2  # silence this long in what was heard is a pause
ONLY = ""  # one arm only (--arm)
SILENT = 4  # |sample| at most this: silence (the gateway's, through a codec)
TEXT = (
    "Thanks for calling the clinic. We are open Monday to Friday from eight in the morning until six in the evening, "
    "and on Saturdays from nine until one. Doctor Patel sees patients on Tuesdays and Thursdays, and the nurse runs a walk-in "
    "clinic every weekday morning. If you would like to book, change or cancel an appointment, I can do that for you now."
)


def source(floor_rms: float = FLOOR) -> np.ndarray:
    from speech import say  # tests/speech.py: Piper

    speech = say(TEXT, RATE).astype(np.float64)
    speech = speech[: int(SOURCE_S * RATE)]
    floor = np.random.default_rng(7).normal(0, floor_rms * 32767, len(speech))
    return np.clip(speech + floor, -32767, 32767).astype(np.int16)


# ---------------------------------------------------------------- the gateway and the bus


@contextlib.asynccontextmanager
async def gateway(nats_url: str):
    import uvicorn
    from parley_gateway.app import create_app
    from parley_gateway.settings import Settings

    nc = await bus.connect(nats_url, name="bench-resume")
    started: dict[str, dict] = {}

    async def on_claim(msg):
        claim = contract.decode(msg.data, contract.AsrClaim)
        await msg.respond(contract.encode(contract.AsrClaimed(session=claim.session, worker="bench")))

    async def on_alive(msg):
        await msg.respond(b"")

    async def on_event(msg):
        e = contract.decode_event(msg.data)
        if isinstance(e, contract.SessionStarted):
            started[e.session] = dict(e.params)

    await nc.subscribe(subjects.ASR_CLAIM, cb=on_claim)
    await nc.subscribe(subjects.asr_alive("bench"), cb=on_alive)
    await nc.subscribe(subjects.EVENTS_ALL, cb=on_event)
    port = free_port()
    app = create_app(Settings(nats_url=nats_url, http_port=port, api_key=API_KEY, demo="local", twilio_insecure=True))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", nc, started, app.state.parley["stats"]
    finally:
        server.should_exit = True
        await serving
        await nc.drain()


async def speak_and_pause(nc, session: str, pcm: np.ndarray, pauses: int, rng: random.Random) -> list[tuple[float, float]]:
    """The answer (run 1, one chunk), then ``pauses`` pauses; (pause, resume) wall times."""
    event = contract.TimerFired(session=session, at=time.time(), name="bench", token=0)
    step = contract.Step(index=0, event=event, state_from="Generating", state_to="Speaking", commands=(contract.Synthesize(session=session, run=1, chunk=0, text=""),))
    await nc.publish(subjects.observe(session), contract.encode(step))
    await nc.flush()
    data = pcm.astype("<i2").tobytes()
    piece = RATE // 10 * 2
    for i in range(0, len(data), piece):
        await nc.publish(subjects.tts_audio(session, 1), data[i : i + piece], headers=bus.audio_headers(i // piece, RATE, chunk=0, last=i + piece >= len(data)))
    await nc.flush()
    times = []
    await asyncio.sleep(1.0)
    for _ in range(pauses):
        await asyncio.sleep(rng.uniform(0.7, 1.3))
        at = time.time()
        await nc.publish(subjects.playback(session), contract.encode(contract.PausePlayback(session=session, run=1)))
        await asyncio.sleep(PAUSE_S)
        times.append((at, time.time()))
        await nc.publish(subjects.playback(session), contract.encode(contract.ResumePlayback(session=session, run=1)))
    await asyncio.sleep(len(pcm) / RATE - 1.0 + 1.5)  # the rest plays (it was paused that long in all)
    return times


async def mint(base: str) -> str:
    async with httpx.AsyncClient(trust_env=False) as http:
        r = await http.post(f"{base}/api/sessions", json={"params": {}}, headers={"Authorization": f"Bearer {API_KEY}"})
        r.raise_for_status()
        return r.json()["token"]


# ---------------------------------------------------------------- one call per transport


async def pcm_call(base: str, nc, pcm: np.ndarray, pauses: int, seed: int, answer: bool) -> tuple[np.ndarray, int]:
    from parley.callers.pcm import PcmCaller

    url = base.replace("http", "ws") + f"/ws/pcm?token={await mint(base)}"
    async with PcmCaller(url, hold_on_pause=answer) as caller:
        await asyncio.sleep(0.3)
        await speak_and_pause(nc, caller.session, pcm, pauses, random.Random(seed))
    return timeline(caller.heard, RATE), RATE


async def twilio_call(base: str, nc, started: dict, pcm: np.ndarray, pauses: int, seed: int) -> tuple[np.ndarray, int]:
    from parley.callers.twilio import TwilioCaller

    key = f"resume-{seed}-{random.random()}"
    async with TwilioCaller(base.replace("http", "ws") + "/twilio/media", {"bench_stop": key}, playout_delay=0.06) as caller:
        while not (session := next((s for s, p in started.items() if p.get("bench_stop") == key), None)):
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        await speak_and_pause(nc, session, pcm, pauses, random.Random(seed))
    return timeline(caller.rec.played, 8000), 8000


async def webrtc_call(base: str, nc, pcm: np.ndarray, pauses: int, seed: int, rewind: bool, workdir: Path) -> tuple[np.ndarray, int, list]:
    import base64

    from browser import Chromium, write_wav

    mic = write_wav(workdir / "quiet.wav", np.zeros(48000 * 40, np.int16), 48000)
    with Chromium(mic, workdir / "chromium") as browser:
        page = await browser.page()
        try:
            await page.goto(f"{base}/?record=1&processing=0{'' if rewind else '&rewind=0'}")
            await page.eval("document.getElementById('start').click()")
            await page.wait_for("window.parley.connected && window.parley.recorder && window.parley.session || window.parley.errors.length", timeout=30)
            errors = await page.eval("window.parley.errors")
            if errors:
                raise RuntimeError(f"the page could not call: {errors}")
            session = await page.eval("window.parley.session")
            await asyncio.sleep(0.5)
            await speak_and_pause(nc, session, pcm, pauses, random.Random(seed))
            rec = await page.eval("window.parleyRecording()", timeout=60)
            playback = await page.eval("window.parley.playback")
            await page.eval("document.getElementById('stop').click()")
            await asyncio.sleep(0.3)
        finally:
            await page.close()
    return np.frombuffer(base64.b64decode(rec["agent"]), dtype="<i2"), rec["rate"], playback


def timeline(pieces: list[tuple[float, bytes]], rate: int) -> np.ndarray:
    """What an ``Ear`` heard, in order: its pieces back to back (their times
    jitter by the caller's clock), with silence where it heard nothing for
    more than 0.1 s (a pause)."""
    out: list[np.ndarray] = []
    end = None
    for t, p in pieces:
        if end is not None and t - end > 0.1:
            out.append(np.zeros(round((t - end) * rate), np.int16))
        out.append(np.frombuffer(p, dtype="<i2"))
        end = t + len(p) / 2 / rate
    return np.concatenate(out) if out else np.zeros(0, np.int16)


# ---------------------------------------------------------------- analysis


def pieces(heard: np.ndarray, rate: int) -> list[tuple[int, int]]:
    """(start, end) sample spans of sound, split at silent gaps of GAP_S."""
    n = max(1, rate // 500)  # 2 ms windows
    k = len(heard) // n
    if not k:
        return []
    rms = np.sqrt((heard[: k * n].astype(np.float64).reshape(k, n) ** 2).mean(axis=1)) / 32768
    loud = np.flatnonzero(rms > 0.003)
    spans: list[list[int]] = []
    for w in loud:
        if spans and w - spans[-1][1] <= GAP_S * rate / n:
            spans[-1][1] = w + 1
        else:
            spans.append([w, w + 1])
    out = []
    for a, b in spans:
        if (b - a) * n < WINDOW_S * rate:
            continue
        # To the sample: the first sample above the codec's silence, and the
        # last one above a quarter of the sound before it (a page's fade is heard to about there).
        head = np.flatnonzero(np.abs(heard[a * n : a * n + n].astype(np.int32)) > SILENT)
        before = heard[max(a * n, b * n - rate // 10) : b * n - 3 * n].astype(np.float64)
        level = max(SILENT, 0.25 * np.sqrt((before**2).mean())) if len(before) else SILENT
        tail = np.flatnonzero(np.abs(heard[b * n - 3 * n : b * n].astype(np.float64)) > level)
        out.append((a * n + (int(head[0]) if len(head) else 0), b * n - 3 * n + (int(tail[-1]) + 1 if len(tail) else 3 * n)))
    return out


def locate(segment: np.ndarray, src: np.ndarray) -> tuple[int, float]:
    """Where ``segment`` sits in ``src`` (sample offset) and how well it matches (0-1)."""
    a = segment.astype(np.float64)
    b = src.astype(np.float64)
    size = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    corr = np.fft.irfft(np.fft.rfft(b, size) * np.conj(np.fft.rfft(a, size)), size)[: len(b) - len(a) + 1]
    energy = np.sqrt(np.convolve(b**2, np.ones(len(a)), "valid")) * np.sqrt((a**2).sum()) + 1e-9
    score = corr / energy
    i = int(np.argmax(score))
    return i, float(score[i])


def resume_errors(heard: np.ndarray, rate: int, src: np.ndarray) -> list[dict]:
    """One row per pause: the resume error (ms) and the match quality at both ends."""
    w = int(WINDOW_S * rate)
    spans = pieces(heard, rate)
    rows = []
    for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
        end_at, q1 = locate(heard[a1 - w : a1], src)
        start_at, q2 = locate(heard[b0 : b0 + w], src)
        rows.append({"error_ms": (start_at - (end_at + w)) * 1000 / rate, "match": min(q1, q2), "gap_ms": (b0 - a1) * 1000 / rate})
    return rows


def resample(pcm: np.ndarray, to: int) -> np.ndarray:
    from parley.audio import Resampler

    return np.frombuffer(Resampler(RATE, to).process(pcm.astype("<i2").tobytes()) + Resampler(RATE, to).flush(), dtype="<i2") if to != RATE else pcm


# ---------------------------------------------------------------- the run


async def measure(transports: list[str], calls: int, pauses: int, workdir: Path, floor: float = FLOOR) -> list[dict]:
    global GAP_S
    if not floor:
        GAP_S = 0.45  # the speech's own gaps are shorter; a pause's is 0.5 s and more
    src = source(floor)
    src8k = np.frombuffer(_resampled(src, 8000), dtype="<i2")
    rows: list[dict] = []
    with NatsServer(free_port(), workdir / "nats") as nats:
        async with gateway(nats.url) as (base, nc, started, stats):
            seed = 0
            for transport in transports:
                if transport == "pcm":
                    ab = os.environ.get("BENCH_PCM_AB", "") not in ("", "0")
                    arms = [("pcm", False), ("pcm-answer", True)] * 2 if ab else [("pcm-answer", True)]
                    arms = [a for a in arms if a[0] == ONLY] or arms if ONLY else arms
                    for name, answer in arms:
                        for _ in range(calls if not ab else max(1, calls // 2)):
                            seed += 1
                            heard, rate = await pcm_call(base, nc, src, pauses, seed, answer)
                            rows += [{"transport": name, **r} for r in resume_errors(heard, rate, src)]
                elif transport == "twilio":
                    for _ in range(calls):
                        seed += 1
                        heard, rate = await twilio_call(base, nc, started, src, pauses, seed)
                        rows += [{"transport": "twilio-60ms", **r} for r in resume_errors(heard, rate, src8k)]
                elif transport == "webrtc":
                    ab = os.environ.get("BENCH_WEBRTC_AB", "") not in ("", "0")
                    arms = [("webrtc-norewind", False), ("webrtc", True)] * 2 if ab else [("webrtc", True)]
                    arms = [a for a in arms if a[0] == ONLY] or arms if ONLY else arms
                    for name, rewind in arms:
                        for _ in range(calls if not ab else max(1, calls // 2)):
                            seed += 1
                            with tempfile.TemporaryDirectory(dir=workdir) as tmp:
                                heard, rate, playback = await webrtc_call(base, nc, src, pauses, seed, rewind, Path(tmp))
                            said = [p for p in playback if p["type"] == "paused"]
                            got = resume_errors(heard, rate, src if rate == RATE else np.frombuffer(_resampled(src, rate), dtype="<i2"))
                            rows += [{"transport": name, **r, **({"page_unplayed_ms": said[i]["unplayed_ms"], **{k: v for k, v in said[i].items() if k.startswith("netEq")}} if i < len(said) else {})} for i, r in enumerate(got)]
            rows.append({"transport": "_stats", **{k: v for k, v in stats.items() if k.startswith(("playback_rew", "pause_answers"))}})
    return rows


def _resampled(pcm: np.ndarray, to: int) -> bytes:
    from parley.audio import Resampler

    rs = Resampler(RATE, to)
    return rs.process(pcm.astype("<i2").tobytes()) + rs.flush()


def summarize(rows: list[dict]) -> dict:
    out: dict = {}
    for t in dict.fromkeys(r["transport"] for r in rows if not r["transport"].startswith("_")):
        errs = [r["error_ms"] for r in rows if r["transport"] == t and r["match"] >= 0.5]
        a = np.abs(errs) if errs else np.zeros(0)
        unplayed = [r["page_unplayed_ms"] for r in rows if r["transport"] == t and "page_unplayed_ms" in r]
        out[t] = {
            "n": len(errs),
            "poor_matches": sum(1 for r in rows if r["transport"] == t and r["match"] < 0.5),
            "error_p50_ms": float(np.median(errs)) if errs else None,
            "abs_error_p50_ms": float(np.median(a)) if errs else None,
            "abs_error_p95_ms": float(np.percentile(a, 95)) if errs else None,
            "min_ms": float(min(errs)) if errs else None,
            "max_ms": float(max(errs)) if errs else None,
            **({"page_unplayed_p50_ms": float(np.median(unplayed))} if unplayed else {}),
        }
    return out


LABELS = {
    "pcm": "`/ws/pcm`, a client playing its buffer out at a pause",
    "pcm-answer": "`/ws/pcm`, a client that stops and answers what it dropped (the page, `parley talk`)",
    "webrtc-norewind": "WebRTC (Chromium), the page silencing its buffers, not answering (`?rewind=0`)",
    "webrtc": "WebRTC (Chromium), the page silencing its buffers and answering what it silenced",
    "twilio-60ms": "Twilio (60 ms far-end buffer): `clear`, replay from the last echoed mark",
}


def section(res: dict) -> list[str]:
    out = ["", "### Resume after a pause: where the caller hears the answer again", ""]
    s = res.get("summary")
    if not s:
        return out + [f"Not measured: {res.get('error', 'no rows')}"]
    out.append(
        f"`bench/resume_error.py`: an in-process gateway; the script plays the other services (the answer: {SOURCE_S:g} s of Piper speech over a "
        f"{20 * np.log10(FLOOR):.0f} dBFS noise floor, then {PAUSES} pauses of {PAUSE_S:g} s, 0.7-1.3 s apart). What each caller heard is cut at "
        "its silent gaps and each piece placed in the source by cross-correlation: the error at a pause is where the caller hears the answer "
        "again minus where they stopped hearing it (> 0: skipped, < 0: heard twice). "
        f"Load average {res.get('load', 0):.1f} (2 cores, shared)."
    )
    out += ["", "| client | pauses | error p50 (ms) | abs error p50 / p95 (ms) | min / max (ms) | page said it silenced, p50 (ms) |", "|---|---|---|---|---|---|"]
    for t, v in s.items():
        f = lambda x: "–" if x is None else f"{x:+.1f}" if abs(x) < 10 else f"{x:+.0f}"  # noqa: E731
        g = lambda x: "–" if x is None else f"{x:.0f}"  # noqa: E731
        out.append(f"| {LABELS.get(t, t)} | {v['n']} | {f(v['error_p50_ms'])} | {g(v['abs_error_p50_ms'])} / {g(v['abs_error_p95_ms'])} | {f(v['min_ms'])} / {f(v['max_ms'])} | {g(v.get('page_unplayed_p50_ms'))} |")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=2)
    ap.add_argument("--pauses", type=int, default=PAUSES)
    ap.add_argument("--transports", default="pcm,webrtc,twilio")
    ap.add_argument("--rows", action="store_true", help="print every pause, not only the summary")
    ap.add_argument("--arm", default="", help="one arm only (e.g. webrtc-norewind, pcm): a diagnosis run")
    ap.add_argument("--floor", type=float, default=FLOOR, help="the noise floor under the speech (RMS of full scale); 0: the speech alone, its own gaps")
    args = ap.parse_args(argv)
    global ONLY
    ONLY = args.arm
    if ONLY:
        os.environ["BENCH_PCM_AB"] = os.environ["BENCH_WEBRTC_AB"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        rows = asyncio.run(measure(args.transports.split(","), args.calls, args.pauses, Path(tmp), args.floor))
    if args.rows:
        for r in rows:
            print(json.dumps(r))
    print(json.dumps({"load": os.getloadavg()[0], "summary": summarize(rows), "stats": rows[-1]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
