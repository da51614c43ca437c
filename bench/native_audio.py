"""What the μ-law copy costs the gateway on a phone call whose ASR is Deepgram.

With Deepgram, a Twilio call's audio also goes out unchanged on
``parley.audio.native.<s>`` (160 bytes per 20 ms frame), beside the 16 kHz
PCM the ASR's own voice detector hears (640 bytes). This measures the
gateway's inbound work per frame, CPU time, on a real nats-server: μ-law
decoded, 8 -> 16 kHz, published (every call), plus the μ-law published as
it came (Deepgram calls). Rounds alternate so that the machine's load drifts
over both alike; compare the two within one run.

    uv run python bench/native_audio.py [--frames 5000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from parley import bus, subjects
from parley.audio import Resampler, pcm16_to_ulaw, ulaw_to_pcm16
from parley.natsd import NatsServer, free_port


async def measure(url: str, frames: int, rounds: int) -> dict[str, list[float]]:
    nc = await bus.connect(url)
    rng = np.random.default_rng(0)
    audio = [pcm16_to_ulaw((rng.standard_normal(160) * 3000).astype("<i2").tobytes()) for _ in range(200)]
    up = Resampler(8000, 16000)
    out: dict[str, list[float]] = {"pcm": [], "pcm+native": []}
    for _ in range(rounds):
        for mode in out:
            t = time.process_time()
            for i in range(frames):
                ulaw = audio[i % len(audio)]
                if mode == "pcm+native":
                    await nc.publish(subjects.audio_native("bench"), ulaw, headers=bus.audio_headers(i, 8000, encoding="mulaw"))
                pcm = up.process(ulaw_to_pcm16(ulaw))
                await nc.publish(subjects.audio_in("bench"), pcm, headers=bus.audio_headers(i, 16000))
            await nc.flush()
            out[mode].append((time.process_time() - t) / frames * 1e6)
    await nc.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as d, NatsServer(free_port(), Path(d)) as server:
        res = asyncio.run(measure(server.url, args.frames, args.rounds))
    pcm, both = statistics.median(res["pcm"]), statistics.median(res["pcm+native"])
    print(f"gateway inbound CPU per 20 ms frame (median of {args.rounds} rounds of {args.frames}): PCM only {pcm:.1f} us, "
          f"PCM + the mu-law copy {both:.1f} us (+{both - pcm:.1f} us = {(both - pcm) * 50 / 1e4:.3f} % of a core per call); "
          f"bytes to the ASR per second of call: 32000 PCM + 8000 mu-law; load average at start {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")


if __name__ == "__main__":
    main()
