"""Measure the ASR service: VAD cost, Whisper final latency, fixed-mode load.

    uv run python services/asr/bench/bench_asr.py vad
    uv run python services/asr/bench/bench_asr.py final [--runs 5] [--no-partials] [--one-lane]
    uv run python services/asr/bench/bench_asr.py contention [--runs 3]
    uv run python services/asr/bench/bench_asr.py load [--sessions 50] [--seconds 30] [--unbatched]
    uv run python services/asr/bench/bench_asr.py window      # Whisper's encoder window: accuracy and time
    uv run python services/asr/bench/bench_asr.py turn        # eot and complete on whole vs cut-off requests
    uv run python services/asr/bench/bench_asr.py eot         # the end-of-turn model's cost, batched or not
    uv run python services/asr/bench/bench_asr.py speculation-final [--runs 5]   # the final's delay, speculation off and on
    uv run python services/asr/bench/bench_asr.py speculation [--recordings var/bench/scenarios]
                                     # the speculative eot and final against the stop's own, on recorded callers

Results go to stdout; services/asr/BENCHMARKS.md records what we saw.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from asr_harness import Events, PiperSpeaker, claim, silence, stream  # noqa: E402

from parley import bus, contract  # noqa: E402
from parley.natsd import NatsServer, free_port  # noqa: E402
from parley_asr.settings import Settings  # noqa: E402
from parley_asr.vad import SileroVad, StreamBank  # noqa: E402
from parley_asr.worker import Worker  # noqa: E402

SENTENCE = "I'd like to book an appointment tomorrow at three p.m."


def bench_vad(rounds: int) -> None:
    rng = np.random.default_rng(0)
    batched = SileroVad()
    single = SileroVad(batched=False)
    print("VAD cost per 32 ms window (StreamBank.run: gather, ONNX, scatter), one thread")
    print(f"{'streams':>8} {'batched ms/window':>18} {'one call per stream ms/window':>30}")
    for n in (1, 2, 5, 10, 25, 50, 100):
        frames = (rng.standard_normal((n, 512)) * 0.05).astype(np.float32)
        results = []
        for vad in (batched, single):
            bank = StreamBank(vad, capacity=n)
            slots = np.array([bank.open() for _ in range(n)])
            for _ in range(20):
                bank.run(slots, frames)
            reps = max(20, rounds // n)
            best = float("inf")
            for _ in range(5):  # best of 5: the machine is noisy
                t0 = time.perf_counter()
                for _ in range(reps):
                    bank.run(slots, frames)
                best = min(best, (time.perf_counter() - t0) / reps / n)
            results.append(best * 1000)
        print(f"{n:>8} {results[0]:>18.4f} {results[1]:>30.4f}")


async def bench_final(runs: int, partials: bool, lanes: int, window_ms: float, silence_ms: float) -> None:
    speak = PiperSpeaker()
    from parley_asr import smart_turn
    from parley_asr.whisper import WhisperTranscriber

    whisper = WhisperTranscriber(min_window_ms=window_ms)
    finals = WhisperTranscriber(min_window_ms=window_ms) if lanes == 2 else None
    with NatsServer(free_port(), Path(tempfile.mkdtemp())) as server:
        kw = {"silence_ms": silence_ms} if partials else {"partial_every_ms": 1e9, "silence_ms": silence_ms}
        w = Worker(await bus.connect(server.url), Settings(nats_url=server.url, **kw), SileroVad(), whisper, finals, smart_turn.shared())
        await w.start()
        nc = await bus.connect(server.url)
        pcm = speak(SENTENCE, lead_s=0.5, trail_s=1.0)
        print(
            f"utterance: {len(speak(SENTENCE, 0, 0)) / 16000:.2f} s of speech, streamed in real time; partials {'on' if partials else 'off'}; "
            f"{lanes} Whisper lane(s); window {window_ms:.0f} ms; stop after {silence_ms:.0f} ms of silence"
        )
        latencies, whisper_s = [], []
        for i in range(runs):
            ev = await Events.watch(nc, f"f{i}")
            await claim(nc, f"f{i}")
            await stream(nc, f"f{i}", pcm, speed=1.0, seed=i)
            (final,) = await ev.finals(f"f{i}", timeout=20)
            (stopped,) = ev.of(f"f{i}", contract.SpeechStopped)
            latencies.append((final.at - final.speech_end_at) * 1000)
            whisper_s.append(w.queue.last_seconds["final"] * 1000)
            partial_at = [(p.at - stopped.speech_end_at + stopped.speech_ms / 1000) * 1000 for p in ev.of(f"f{i}", contract.TranscriptPartial)]
            print(
                f"  run {i}: final {latencies[-1]:.0f} ms after the VAD's stop (Whisper {whisper_s[-1]:.0f} ms), "
                f"{(final.at - stopped.speech_end_at) * 1000:.0f} ms after speech end; eot {stopped.eot:.2f} published "
                f"{(stopped_arrival(ev, f'f{i}') - stopped.at) * 1000:.0f} ms after the stop; complete {final.complete:.2f}; "
                f"partials at {', '.join(f'{x:.0f}' for x in partial_at)} ms of speech: {final.text!r}"
            )
        print(f"  median {statistics.median(latencies):.0f} ms, max {max(latencies):.0f} ms")
        await w.stop()
        await nc.close()


def stopped_arrival(ev: Events, session: str) -> float:
    return next(t for t, e in ev.arrivals if e.session == session and isinstance(e, contract.SpeechStopped))


def _normalise(text: str) -> list[str]:
    import re

    t = text.lower().replace("p.m.", " pm ").replace("a.m.", " am ").replace("-", " ")
    t = re.sub(r"(\d)(am|pm)\b", r"\1 \2", t)
    t = re.sub(r"[^a-z0-9' ]+", " ", t)
    nums = {"zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11"}
    out = []
    for w in t.split():
        w = nums.get(w, w)
        out.extend(list(w) if w.isdigit() and len(w) > 2 else [w])  # "555" and "five five five" alike
    return out


def _edits(ref: list[str], hyp: list[str]) -> int:
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[-1]


def bench_window() -> None:
    """Whisper's encoder window: word error rate and time on the corpus, per window rule."""
    import corpus
    from parley_asr.whisper import WhisperTranscriber

    model = WhisperTranscriber(min_window_ms=30000)
    clips = [c for c in corpus.build(model._model) if c.complete]
    rules = [("30 s (faster-whisper as shipped)", 30000, 0), ("6 s", 6000, 0), ("8 s", 8000, 0), ("10 s", 10000, 0), ("15 s", 15000, 0),
             ("audio + 1 s", 1000, 1000), ("audio + 2 s", 1000, 2000), ("8 s, audio + 4 s", 8000, 4000), ("10 s, audio + 4 s (default)", 10000, 4000)]  # fmt: skip
    print(f"{len(clips)} clips ({len(corpus.SENTENCES)} sentences x piper, espeak, phone), 0.3 s of line noise each side; 2 threads")
    print(f"{'window':>30} {'WER %':>6} {'repeats':>8} {'mean ms':>8} {'p50 ms':>7} {'p90 ms':>7}")
    for label, window, pad in rules:
        model.min_window_ms, model.pad_ms = window, pad
        errors = words = repeats = 0
        times = []
        for c in clips:
            pcm = np.concatenate([corpus.line_noise(0.3, 1), c.pcm, corpus.line_noise(0.3, 2)])
            t0 = time.perf_counter()
            heard = model.transcribe(pcm)
            times.append((time.perf_counter() - t0) * 1000)
            ref, hyp = _normalise(c.text), _normalise(heard)
            errors += _edits(ref, hyp)
            words += len(ref)
            repeats += len(hyp) > 1.5 * len(ref) + 2  # the decoder ran on ("Yes. Yes. Yes.")
        times.sort()
        print(f"{label:>30} {errors / words * 100:6.1f} {repeats:8d} {statistics.mean(times):8.0f} {times[len(times) // 2]:7.0f} {times[int(len(times) * 0.9)]:7.0f}")


def _auc(pos: list[float], neg: list[float]) -> float:
    """P(a whole request scores above a cut one); ties count half."""
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def bench_turn() -> None:
    """eot (acoustic) and complete (text) on whole requests vs requests cut mid-sentence."""
    import corpus
    from parley_asr import completeness, smart_turn
    from parley_asr.whisper import WhisperTranscriber

    model = WhisperTranscriber()
    st_model = smart_turn.shared()
    clips = corpus.build(model._model)
    rows = []
    for k, c in enumerate(clips):
        lead = corpus.line_noise(0.3, k)
        at_200 = np.concatenate([lead, c.pcm, corpus.line_noise(0.224, k + 1)])
        at_500 = np.concatenate([lead, c.pcm, corpus.line_noise(0.512, k + 1)])
        eot200, eot500 = st_model([at_200, at_500]).tolist()
        heard = model.transcribe(np.concatenate([lead, c.pcm, corpus.line_noise(0.3, k + 2)]))
        rows.append((c, eot200, eot500, completeness.score(heard), heard))
    print(f"{len(clips)} clips: {sum(c.complete for c in clips)} whole requests, {sum(not c.complete for c in clips)} cut after an open word")
    print(f"{'voice':>7} {'signal':>22} {'whole: mean':>12} {'cut: mean':>10} {'AUC':>6} {'right at 0.5':>13}")
    for voice in ("piper", "espeak", "phone", "all"):
        sel = [r for r in rows if voice == "all" or r[0].voice == voice]
        for name, idx in (("eot at a 200 ms stop", 1), ("eot at a 500 ms stop", 2), ("complete (Whisper text)", 3)):
            pos = [r[idx] for r in sel if r[0].complete]
            neg = [r[idx] for r in sel if not r[0].complete]
            right = sum(r[idx] >= 0.5 for r in sel if r[0].complete) + sum(r[idx] < 0.5 for r in sel if not r[0].complete)
            print(f"{voice:>7} {name:>22} {statistics.mean(pos):12.2f} {statistics.mean(neg):10.2f} {_auc(pos, neg):6.2f} {right / len(sel) * 100:12.0f}%")
    print("cut requests that the text reads as finished (complete >= 0.5):")
    for c, e2, e5, p, heard in rows:
        if not c.complete and p >= 0.5:
            print(f"  {c.voice:>6} said {c.text!r:45} heard {heard!r} complete {p:.2f} eot {e2:.2f}")
    print("whole requests that the text reads as unfinished:")
    for c, e2, e5, p, heard in rows:
        if c.complete and p < 0.5:
            print(f"  {c.voice:>6} said {c.text!r:45} heard {heard!r} complete {p:.2f} eot {e2:.2f}")


def bench_eot(rounds: int) -> None:
    """The end-of-turn model's cost per clip: threads, batch sizes, features alone."""
    import corpus
    from parley_asr import logmel
    from parley_asr.smart_turn import SmartTurn

    clip = np.concatenate([corpus.line_noise(0.3, 0), corpus.piper(SENTENCE), corpus.line_noise(0.224, 1)])
    best = lambda fn: min(timed_once(fn) for _ in range(rounds))  # noqa: E731
    print(f"features (logmel.features, 8 s window): {best(lambda: logmel.features(clip.astype(np.float32) / 32768)) * 1000:.1f} ms")
    for threads in (1, 2):
        m = SmartTurn(threads=threads)
        m([clip])
        for batch in (1, 2, 4, 8):
            t = best(lambda: m([clip] * batch))
            print(f"threads {threads}, batch {batch}: {t * 1000:.1f} ms per call, {t / batch * 1000:.1f} ms per clip (best of {rounds})")


def timed_once(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_contention(runs: int) -> None:
    """Does a second Whisper instance for finals help when a partial is running?"""
    import threading

    from parley_asr.whisper import WhisperTranscriber

    speak = PiperSpeaker()
    final_audio = speak(SENTENCE, 0.3, 0.3)
    partial_audio = final_audio[: 2 * 16000]
    one, two = WhisperTranscriber(), WhisperTranscriber()
    one.transcribe(final_audio), two.transcribe(final_audio)

    def timed(fn, *args) -> float:
        t0 = time.perf_counter()
        fn(*args)
        return time.perf_counter() - t0

    alone, queued, parallel = [], [], []
    for _ in range(runs):
        alone.append(timed(one.transcribe, final_audio))
        # One instance: the final arrives 100 ms into a partial and waits for it.
        t = threading.Thread(target=one.transcribe, args=(partial_audio,))
        t0 = time.perf_counter()
        t.start()
        time.sleep(0.1)
        t.join()
        one.transcribe(final_audio)
        queued.append(time.perf_counter() - t0 - 0.1)
        # Two instances: the final runs beside the partial.
        t = threading.Thread(target=two.transcribe, args=(partial_audio,))
        t.start()
        time.sleep(0.1)
        parallel.append(timed(one.transcribe, final_audio))
        t.join()
    ms = lambda xs: f"median {statistics.median(xs) * 1000:.0f} ms (" + ", ".join(f"{x * 1000:.0f}" for x in xs) + ")"
    print("final transcription (3 s utterance), Whisper tiny.en int8, 2 threads each:")
    print("  alone:                                 ", ms(alone))
    print("  behind a partial on the same instance: ", ms(queued))
    print("  beside a partial on a second instance: ", ms(parallel))


async def bench_load(sessions: int, seconds: float, batched: bool) -> None:
    import psutil

    speak = PiperSpeaker()
    turn = np.concatenate([speak(SENTENCE, lead_s=0.3, trail_s=0.0), silence(1.5)])  # about 4.7 s
    with NatsServer(free_port(), Path(tempfile.mkdtemp())) as server:
        port = free_port()
        env = dict(os.environ, NATS_URL=server.url, PARLEY_PROVIDERS="fixed", PARLEY_HTTP_PORT=str(port), PARLEY_LOG_LEVEL="WARNING",
                   PARLEY_ASR_VAD_BATCH="1" if batched else "0")
        proc = subprocess.Popen([sys.executable, "-m", "parley_asr"], env=env)
        try:
            import httpx

            for _ in range(300):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
            ps = psutil.Process(proc.pid)
            nc = await bus.connect(server.url)
            names = [f"load-{i}" for i in range(sessions)]
            ev = await Events.watch(nc, *names)
            for s in names:
                await claim(nc, s)
            reps = int(seconds / (len(turn) / 16000)) + 1
            pcm = np.concatenate([turn] * reps)[: int(seconds * 16000)]

            async def caller(i: int, s: str):
                await asyncio.sleep(i * 0.0317)  # spread the sessions' phases
                await stream(nc, s, pcm, speed=1.0, chunk=320)

            cpu0 = ps.cpu_times()
            t0 = time.monotonic()
            await asyncio.gather(*(caller(i, s) for i, s in enumerate(names)))
            wall = time.monotonic() - t0
            cpu1 = ps.cpu_times()
            await asyncio.sleep(1.0)
            stats = httpx.get(f"http://127.0.0.1:{port}/healthz").json()["stats"]
            cpu = (cpu1.user - cpu0.user + cpu1.system - cpu0.system) / wall
            delays = []
            for s in names:
                stops = {e.utterance: e for e in ev.of(s, contract.SpeechStopped)}
                for f in ev.of(s, contract.TranscriptFinal):
                    delays.append((f.at - stops[f.utterance].at) * 1000)
            finals = len(delays)
            counts = {k.__name__: len([e for e in ev.items if isinstance(e, k)]) for k in (contract.SpeechStarted, contract.SpeechStopped, contract.TranscriptFinal)}
            print(f"{sessions} sessions x {seconds:.0f} s of real-time audio (20 ms messages), fixed mode, VAD {'batched' if batched else 'one call per session'}")
            print(f"  ASR process CPU: {cpu * 100:.1f} % of one core ({cpu * 100 / sessions:.2f} % per session)")
            print(f"  VAD: {stats['windows']} windows in {stats['vad_calls']} calls ({stats['windows'] / max(1, stats['vad_calls']):.1f} per call), "
                  f"{stats['vad_seconds'] / max(1, stats['windows']) * 1000:.4f} ms per window; whole ticks {stats['tick_seconds'] / max(1, stats['ticks']) * 1000:.2f} ms each")
            print(f"  events: {counts}")
            print(f"  finals: {finals} ({sessions} x {len(pcm) // len(turn)} whole turns sent); final - SpeechStopped: "
                  f"median {statistics.median(delays):.0f} ms, p95 {np.percentile(delays, 95):.0f} ms, max {max(delays):.0f} ms")
            await nc.close()
        finally:
            proc.terminate()
            proc.wait(10)


def bench_speculation(recordings: Path, after_ms: float) -> None:
    """Speculation (worker.py): at each stop in recorded calls (the caller's
    channel of the scenario phase's WAVs; held-out callers, ``ho-*``, left
    out), the end-of-turn score and Whisper's final of the clips the
    speculation makes (``Worker._as_at_stop``) and of the clips cut at the
    stop's own moment, against those of the audio merely cut at the
    speculation's moment (what PARLEY_ASR_SPECULATE_MS did before)."""
    import re
    import wave

    from parley_asr import endpointer
    from parley_asr.audio import WINDOW, SessionAudio
    from parley_asr.smart_turn import SmartTurn
    from parley_asr.whisper import WhisperTranscriber
    from parley_asr.worker import Session, Worker

    files = sorted(f for f in recordings.glob("*.pcm.wav") if not f.name.startswith("ho-"))
    if not files:
        raise SystemExit(f"no recorded calls in {recordings}: run bench/run.py --only scenarios first")
    settings = Settings(nats_url="nats://127.0.0.1:1")
    cfg, pre, k = settings.endpointing(), int(settings.preroll_ms * 16), endpointer.windows_for(after_ms)
    vad, whisper, model = SileroVad(), WhisperTranscriber(), SmartTurn()
    whisper.warm_up()
    norm = lambda t: re.sub(r"[^a-z0-9 ]", " ", t.lower().replace("-", " ")).split()  # noqa: E731
    rows = []
    for f in files:
        with wave.open(str(f)) as w:
            a = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, w.getnchannels())[:, 0].copy()
        bank = StreamBank(vad)
        slot = np.array([bank.open()])
        s = Session("bench", 0)
        s.audio.push(a.tobytes())
        windows = s.audio.take_windows()
        probs = np.array([bank.run(slot, windows[i : i + 1].astype(np.float32) / 32768)[0] for i in range(len(windows))])
        for d in endpointer.run(probs, cfg)[1]:
            if not isinstance(d, endpointer.Stop) or d.reason != "silence" or d.window - d.end + 1 <= k:
                continue
            cut, first, stop = d.end + k, d.begin * WINDOW - pre, (d.window + 1) * WINDOW
            wend = min(d.end * WINDOW + pre, stop)
            eots = model([s.audio.slice(first, stop), Worker._as_at_stop(s, first, d.end, cut, stop), s.audio.slice(first, cut * WINDOW)])
            texts = [whisper.transcribe(x) for x in (s.audio.slice(first, wend), Worker._as_at_stop(s, first, d.end, cut, wend), s.audio.slice(first, min(cut * WINDOW, wend)))]
            kept = float(probs[cut : d.window + 1].max()) < cfg.neg_threshold
            rows.append((f.name, d.utterance, kept, eots, texts))
    kept = [r for r in rows if r[2]]
    print(f"{len(rows)} stops in {len(files)} calls; speculation at {k * WINDOW // 16} ms of silence; kept (no voice-like window after it): {len(kept)}")
    for i, name in ((1, "speculation (silence repeated to the stop)"), (2, "audio cut at the speculation's moment")):
        diff = sorted(abs(float(e[i]) - float(e[0])) for *_, e, _ in kept)
        side = sum((e[i] >= 0.5) == (e[0] >= 0.5) for *_, e, _ in kept)
        same = sum(norm(t[i]) == norm(t[0]) for *_, t in kept)
        print(f"{name}: eot |diff| from the stop's mean {statistics.mean(diff):.3f}, p90 {diff[int(0.9 * len(diff))]:.3f}, max {diff[-1]:.3f};"
              f" same side of 0.5 {side}/{len(kept)}; Whisper's text the same as the stop's {same}/{len(kept)}")  # fmt: skip
    for name, u, _, _, t in kept:
        if norm(t[1]) != norm(t[0]):
            print(f"  {name} #{u}: stop {t[0]!r}, speculation {t[1]!r}")


async def bench_speculation_final(runs: int) -> None:
    """The final's delay after the VAD's stop with the speculation off (0) and
    at its default, alternating run by run on the same models and server (so
    the machine's load drifts alike for both): real-time Piper requests."""
    from parley_asr import smart_turn
    from parley_asr.whisper import WhisperTranscriber

    speak = PiperSpeaker()
    texts = ["What are your opening hours?", "Do you have anything free on Friday?", "Can I also come in on Monday at two p.m.?",
             "Yes, please book that for me.", "Is there a slot on Tuesday morning?"]  # fmt: skip
    clips = [speak(t, lead_s=0.5, trail_s=1.0) for t in texts]
    whisper, finals, eot = WhisperTranscriber(), WhisperTranscriber(), smart_turn.shared()
    on_ms = Settings.model_fields["speculate_ms"].default
    with NatsServer(free_port(), Path(tempfile.mkdtemp())) as server:
        workers = {}
        for ms in (0.0, on_ms):
            workers[ms] = Worker(await bus.connect(server.url), Settings(nats_url=server.url, speculate_ms=ms), SileroVad(), whisper, finals, eot)
            await workers[ms].start()
        nc = await bus.connect(server.url)
        delays: dict[float, list[float]] = {0.0: [], on_ms: []}
        print(f"{len(texts)} requests, streamed in real time, {runs} rounds; speculation off (0) and at {on_ms:.0f} ms, alternating")
        for i in range(runs):
            for j, pcm in enumerate(clips):
                for ms, w in workers.items():
                    session = f"s{i}-{j}-{int(ms)}"
                    ev = await Events.watch(nc, session)
                    await w.claim(session)
                    await stream(nc, session, pcm, speed=1.0, seed=i)
                    await ev.finals(session, timeout=20)
                    await asyncio.sleep(0.5)  # a request said in two utterances has two finals: each counts
                    delays[ms] += [(f.at - f.speech_end_at) * 1000 for f in ev.of(session, contract.TranscriptFinal)]
                    await w.release(session, "done")
        for ms, w in workers.items():
            d = sorted(delays[ms])
            print(f"  speculate {ms:.0f} ms: final after the VAD's stop p50 {statistics.median(d):.0f} ms, p90 {d[int(0.9 * len(d))]:.0f} ms, max {d[-1]:.0f} ms (n={len(d)});"
                  f" speculations {w.stats['speculations']}, kept {w.stats['speculations_kept']}")  # fmt: skip
            await w.stop()
        await nc.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["vad", "final", "contention", "load", "window", "turn", "eot", "speculation", "speculation-final"])
    p.add_argument("--window-ms", type=float, default=Settings.model_fields["whisper_window_ms"].default, help="final: Whisper's encoder window")
    p.add_argument("--silence-ms", type=float, default=Settings.model_fields["silence_ms"].default, help="final: the VAD's stop")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--no-partials", action="store_true")
    p.add_argument("--one-lane", action="store_true", help="no second Whisper instance for finals")
    p.add_argument("--sessions", type=int, default=50)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--unbatched", action="store_true", help="load: one VAD call per session")
    p.add_argument("--rounds", type=int, default=20000)
    p.add_argument("--recordings", type=Path, default=Path("var/bench/scenarios"), help="speculation: the scenario phase's recorded calls")
    a = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if a.what == "vad":
        bench_vad(a.rounds)
    elif a.what == "contention":
        bench_contention(a.runs)
    elif a.what == "final":
        asyncio.run(bench_final(a.runs, partials=not a.no_partials, lanes=1 if a.one_lane else 2, window_ms=a.window_ms, silence_ms=a.silence_ms))
    elif a.what == "window":
        bench_window()
    elif a.what == "turn":
        bench_turn()
    elif a.what == "eot":
        bench_eot(max(3, a.runs))
    elif a.what == "speculation-final":
        asyncio.run(bench_speculation_final(a.runs))
    elif a.what == "speculation":
        bench_speculation(a.recordings, Settings.model_fields["speculate_ms"].default)
    else:
        asyncio.run(bench_load(a.sessions, a.seconds, batched=not a.unbatched))


if __name__ == "__main__":
    main()
