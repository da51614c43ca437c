"""Measure the TTS service: time to first audio, real-time factor, and fixed-mode cost.

    uv run python services/tts/bench/bench_tts.py [--quick]

1. Piper alone (the adapter's voice, no NATS): per sentence, time to the
   first (here: only) Piper chunk and the real-time factor.
2. Through a worker on a real nats-server: time from publishing a Synthesize
   to the first audio message at a client, for a short sentence (median of
   several, one at a time); the real-time factor of a long chunk (last message
   time / audio duration); and four sessions at once.
3. Fixed-latency mode: ``python -m parley_tts`` with PARLEY_PROVIDERS=fixed,
   60 sessions speaking at once (three chunks a run); its CPU use and the
   first-audio delay the callers saw.

Numbers vary with the machine's load; run it a few times.
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

import httpx
import psutil

from parley import bus, contract, subjects
from parley.natsd import NatsServer, free_port
from parley_tts.adapters.piper_voice import Piper
from parley_tts.settings import Settings
from parley_tts.worker import Worker

SHORT = "Sure, I can help with that."
MEDIUM = "Your appointment with Dr. Smith is at 10:00 a.m. on Jan. 5th."
LONG = (
    "Let me read you the whole list of openings we have this week. "
    "On Monday there is a slot in the morning and another one after lunch. "
    "On Tuesday the doctor is away, so there is nothing at all that day. "
    "On Wednesday and Thursday we have plenty of room in the afternoon."
)


def piper_alone(voice: Piper, repeat: int) -> None:
    print("## Piper alone (1 ONNX Runtime thread)")
    for text in (SHORT, MEDIUM, LONG):
        firsts, rtfs = [], []
        for _ in range(repeat):
            t = time.perf_counter()
            first = None
            samples = 0
            for sentence in voice.voice.synthesize(text):
                first = first or time.perf_counter() - t
                samples += len(sentence.audio_int16_array)
            rtfs.append((time.perf_counter() - t) / (samples / voice.sample_rate))
            firsts.append(first)
        print(
            f"- {len(text):3d} chars, {samples / voice.sample_rate:5.2f} s of audio: "
            f"first sentence {1000 * statistics.median(firsts):4.0f} ms, RTF {statistics.median(rtfs):.3f} (median of {repeat})"
        )


class Clock:
    """Per (session, run): first and last audio message times, and audio bytes."""

    def __init__(self) -> None:
        self.first: dict = {}
        self.last: dict = {}
        self.bytes: dict = {}
        self.done = asyncio.Event()
        self.want = 0

    async def on_audio(self, msg) -> None:
        key = (subjects.session_of(msg.subject), int(msg.subject.rsplit(".", 1)[1]))
        now = time.perf_counter()
        self.first.setdefault(key, now)
        self.bytes[key] = self.bytes.get(key, 0) + len(msg.data)
        if msg.headers.get(subjects.H_LAST) == "1":
            self.last.setdefault(key, {})[int(msg.headers[subjects.H_CHUNK])] = now
            if sum(len(v) for v in self.last.values()) >= self.want:
                self.done.set()


async def through_nats(url: str, voice: Piper, repeat: int) -> None:
    print("\n## Through a worker on nats-server (Piper, 2 synthesis threads)")
    wnc, cnc = await bus.connect(url), await bus.connect(url)
    worker = Worker(wnc, Settings(nats_url=url), voice)
    await worker.start()
    clock = Clock()
    await cnc.subscribe(f"{subjects.PREFIX}.tts.audio.>", cb=clock.on_audio)
    await cnc.flush()

    async def speak(session: str, run: int, chunks: list[str]) -> float:
        clock.done.clear()
        clock.want = sum(len(v) for v in clock.last.values()) + len(chunks)
        t = time.perf_counter()
        for i, text in enumerate(chunks):
            cmd = contract.Synthesize(session=session, run=run, chunk=i, text=text)
            await cnc.publish(subjects.TTS_REQUEST, contract.encode(cmd))
        await cnc.flush()
        await asyncio.wait_for(clock.done.wait(), 60)
        return t

    for text in (SHORT, MEDIUM):
        firsts = []
        for r in range(repeat):
            t = await speak("bench", len(clock.first), [text])
            firsts.append(clock.first[("bench", len(clock.first) - 1)] - t)
        print(f"- first audio, {len(text)} chars: median {1000 * statistics.median(firsts):.0f} ms, min {1000 * min(firsts):.0f}, max {1000 * max(firsts):.0f} ms ({repeat} runs)")

    run = len(clock.first)
    t = await speak("bench", run, [LONG])
    key = ("bench", run)
    audio_s = clock.bytes[key] / 2 / voice.sample_rate
    print(
        f"- long chunk ({len(LONG)} chars, {audio_s:.1f} s of audio): first audio {1000 * (clock.first[key] - t):.0f} ms, "
        f"all of it in {clock.last[key][0] - t:.2f} s: RTF {(clock.last[key][0] - t) / audio_s:.3f}"
    )

    # Four sessions at once, one chunk each.
    clock.done.clear()
    clock.want = sum(len(v) for v in clock.last.values()) + 4
    t = time.perf_counter()
    for i in range(4):
        await cnc.publish(subjects.TTS_REQUEST, contract.encode(contract.Synthesize(session=f"par{i}", run=0, chunk=0, text=MEDIUM)))
    await cnc.flush()
    await asyncio.wait_for(clock.done.wait(), 60)
    firsts = sorted(clock.first[(f"par{i}", 0)] - t for i in range(4))
    print(f"- four sessions at once ({len(MEDIUM)} chars each): first audio at " + ", ".join(f"{1000 * f:.0f}" for f in firsts) + " ms")
    await worker.stop()
    await wnc.close()
    await cnc.close()


async def fixed_load(url: str, sessions: int, seconds: float) -> None:
    print(f"\n## Fixed-latency mode: {sessions} sessions at once, `python -m parley_tts` (PARLEY_PROVIDERS=fixed)")
    port = free_port()
    env = dict(os.environ, NATS_URL=url, PARLEY_PROVIDERS="fixed", PARLEY_HTTP_PORT=str(port), PARLEY_LOG_LEVEL="WARNING")
    proc = subprocess.Popen([sys.executable, "-m", "parley_tts"], env=env)
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(300):
                try:
                    if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        ps = psutil.Process(proc.pid)
        nc = await bus.connect(url)
        clock = Clock()
        await nc.subscribe(f"{subjects.PREFIX}.tts.audio.>", cb=clock.on_audio)
        await nc.flush()
        chunks = [SHORT, MEDIUM, SHORT]  # about 2 + 4 + 2 s of audio a run
        sent: dict = {}
        cpu0 = ps.cpu_times()
        t0 = time.perf_counter()
        run = 0
        # Every session starts a new run as soon as its previous one would have finished playing.
        while time.perf_counter() - t0 < seconds:
            for s in range(sessions):
                key = (f"load{s}", run)
                sent[key] = time.perf_counter()
                for i, text in enumerate(chunks):
                    await nc.publish(subjects.TTS_REQUEST, contract.encode(contract.Synthesize(session=key[0], run=run, chunk=i, text=text)))
                await nc.flush()
                await asyncio.sleep(8.0 / sessions)
            run += 1
        clock.want = len(sent) * len(chunks)
        await asyncio.wait_for(clock.done.wait(), 60)
        elapsed = time.perf_counter() - t0
        cpu1 = ps.cpu_times()
        cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / elapsed
        delays = sorted(clock.first[k] - t for k, t in sent.items())
        audio_s = sum(clock.bytes.values()) / 2 / 22050
        print(
            f"- {len(sent)} runs, {audio_s:.0f} s of audio in {elapsed:.0f} s: worker CPU {100 * cpu:.1f} % of one core "
            f"({100 * cpu / sessions:.2f} % a session), RSS {ps.memory_info().rss / 2**20:.0f} MB"
        )
        print(
            f"- first audio after the request: min {1000 * delays[0]:.0f} ms, median {1000 * statistics.median(delays):.0f} ms, "
            f"p95 {1000 * delays[int(0.95 * (len(delays) - 1))]:.0f} ms, max {1000 * delays[-1]:.0f} ms"
        )
        await nc.close()
    finally:
        proc.terminate()
        proc.wait(10)


async def main(args) -> None:
    repeat = 3 if args.quick else 9
    voice = Piper.load()
    piper_alone(voice, repeat)
    with NatsServer(free_port(), Path(tempfile.mkdtemp(prefix="tts-bench-"))) as server:
        await through_nats(server.url, voice, repeat)
        await fixed_load(server.url, args.sessions, 10 if args.quick else 30)
    voice.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sessions", type=int, default=60)
    asyncio.run(main(parser.parse_args()))
