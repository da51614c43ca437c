"""What a failing cloud TTS provider costs the caller: time to first audio of
a chunk when the provider is healthy, when it refuses the key, while its
breaker is open, when its socket drops mid-chunk, and when its first byte
does not come.

The TTS worker with its real fallback (Piper joe-medium) on a real
nats-server; Cartesia is the local stand-in (``parley.standins``, a tone per
word, four times faster than real time: its own latency is ~0). So the
figures are Parley's own cost of each failure, to add to a real provider's
time to first byte. Five chunks per case; medians.

    uv run python bench/providers.py
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from parley import bus, contract, subjects
from parley.natsd import NatsServer, free_port
from parley.standins import Fault
from parley.standins.cartesia import Cartesia as CartesiaStandIn
from parley_tts.adapters.cartesia import Cartesia
from parley_tts.adapters.piper_voice import Piper
from parley_tts.settings import Settings
from parley_tts.worker import Worker

TEXT = "Your appointment is on Friday at ten in the morning."
KEY = "bench-key"


async def first_audio(nc, session: str, run: int) -> tuple[float, bool]:
    """Synthesize one chunk; seconds to its first audio message, and whether the fallback spoke."""
    got: asyncio.Future = asyncio.get_running_loop().create_future()
    rates: list[int] = []

    async def on_audio(msg) -> None:
        meta = bus.AudioMeta(msg.headers)
        if msg.data:
            rates.append(meta.rate)
            if not got.done():
                got.set_result(time.perf_counter())

    sub = await nc.subscribe(subjects.tts_audio(session, run), cb=on_audio)
    t0 = time.perf_counter()
    await nc.publish(subjects.TTS_REQUEST, contract.encode(contract.Synthesize(session=session, run=run, chunk=0, text=TEXT)))
    t1 = await asyncio.wait_for(got, 30)
    await asyncio.sleep(0.8)
    await sub.unsubscribe()
    return t1 - t0, bool(rates) and rates[-1] != 24000


async def case(nats_url: str, piper: Piper, name: str, key: str = KEY, fault: Fault | None = None, prime: bool = False) -> list[tuple[float, bool]]:
    standin = await CartesiaStandIn(key=KEY).start()
    voice = Cartesia(base=standin.base, api_key=key, model="sonic-2", voice="v", first_audio_s=1.5)
    await voice.start()
    nc, wnc = await bus.connect(nats_url), await bus.connect(nats_url)
    worker = Worker(wnc, Settings(nats_url=nats_url), voice, piper)
    await worker.start()
    out = []
    try:
        if prime:  # one failure first: the breaker is open for the measured chunks
            await first_audio(nc, f"{name}-prime", 0)
        for i in range(5):
            if fault is not None:
                standin.faults.queue.append(fault)
            out.append(await first_audio(nc, f"{name}-{i}", 1))
    finally:
        await worker.stop()
        await voice.aclose()
        await standin.stop()
        await nc.close()
        await wnc.close()
    return out


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, NatsServer(free_port(), Path(tmp)) as server:
        piper = Piper.load(threads=2)
        cases = [
            ("healthy", {}),
            ("refused key (each chunk asks)", {"key": "wrong"}),
            ("breaker open after a refused key", {"key": "wrong", "prime": True}),
            ("socket dropped after 0.3 s of audio", {"fault": Fault(drop_after=int(0.3 * 24000 * 2))}),
            ("first byte never comes (1.5 s timeout)", {"fault": Fault(delay_first=10)}),
        ]
        print("| case | first audio, median (ms) | spoken by |")
        print("| --- | --- | --- |")
        for label, kw in cases:
            if "key" in kw and not kw.get("prime"):
                # A fresh worker per chunk: without it the breaker would skip the provider after the first.
                results = []
                for _ in range(5):
                    results += (await case(server.url, piper, "k", **kw))[:1]
            else:
                results = await case(server.url, piper, label.split()[0], **kw)
            ms = statistics.median(t for t, _ in results) * 1000
            fallback = sum(1 for _, fb in results if fb)
            print(f"| {label} | {ms:.0f} | {'Piper' if fallback == len(results) else 'Cartesia' if not fallback else 'both'} |")
        piper.close()


if __name__ == "__main__":
    asyncio.run(main())
