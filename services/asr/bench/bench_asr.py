"""Measure the ASR service: VAD cost, Whisper final latency, fixed-mode load.

    uv run python services/asr/bench/bench_asr.py vad
    uv run python services/asr/bench/bench_asr.py final [--runs 5] [--no-partials] [--one-lane]
    uv run python services/asr/bench/bench_asr.py contention [--runs 3]
    uv run python services/asr/bench/bench_asr.py load [--sessions 50] [--seconds 30] [--unbatched]

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


async def bench_final(runs: int, partials: bool, lanes: int) -> None:
    speak = PiperSpeaker()
    from parley_asr.whisper import WhisperTranscriber

    whisper = WhisperTranscriber()
    finals = WhisperTranscriber() if lanes == 2 else None
    with NatsServer(free_port(), Path(tempfile.mkdtemp())) as server:
        kw = {} if partials else {"partial_every_ms": 1e9}
        w = Worker(await bus.connect(server.url), Settings(nats_url=server.url, **kw), SileroVad(), whisper, finals)
        await w.start()
        nc = await bus.connect(server.url)
        pcm = speak(SENTENCE, lead_s=0.5, trail_s=1.0)
        print(f"utterance: {len(speak(SENTENCE, 0, 0)) / 16000:.2f} s of speech, streamed in real time; partials {'on' if partials else 'off'}; {lanes} Whisper lane(s)")
        latencies, whisper_s = [], []
        for i in range(runs):
            ev = await Events.watch(nc, f"f{i}")
            await claim(nc, f"f{i}")
            await stream(nc, f"f{i}", pcm, speed=1.0, seed=i)
            (final,) = await ev.finals(f"f{i}", timeout=20)
            latencies.append((final.at - final.speech_end_at) * 1000)
            whisper_s.append(w.queue.last_seconds["final"] * 1000)
            n_partials = len(ev.of(f"f{i}", contract.TranscriptPartial))
            print(f"  run {i}: final {latencies[-1]:.0f} ms after SpeechStopped (Whisper {whisper_s[-1]:.0f} ms), {n_partials} partials: {final.text!r}")
        print(f"  median {statistics.median(latencies):.0f} ms, max {max(latencies):.0f} ms")
        await w.stop()
        await nc.close()


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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["vad", "final", "contention", "load"])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--no-partials", action="store_true")
    p.add_argument("--one-lane", action="store_true", help="no second Whisper instance for finals")
    p.add_argument("--sessions", type=int, default=50)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--unbatched", action="store_true", help="load: one VAD call per session")
    p.add_argument("--rounds", type=int, default=20000)
    a = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if a.what == "vad":
        bench_vad(a.rounds)
    elif a.what == "contention":
        bench_contention(a.runs)
    elif a.what == "final":
        asyncio.run(bench_final(a.runs, partials=not a.no_partials, lanes=1 if a.one_lane else 2))
    else:
        asyncio.run(bench_load(a.sessions, a.seconds, batched=not a.unbatched))


if __name__ == "__main__":
    main()
