"""The caller's ear: what a simulated caller actually hears, and when.

"The gateway stopped sending" is not "the caller stopped hearing": audio that
already left plays on from the far end's buffer (Twilio's, a browser's jitter
buffer). ``Ear`` models that buffer, so that timings are measured where the
caller is:

* ``receive(now, pcm)`` queues agent audio; a buffer that was empty starts
  playing ``delay`` seconds later (a jitter buffer);
* ``play(now)`` is called every 20 ms by the caller's clock and plays the next
  20 ms; what played is recorded in ``heard`` as (start time, PCM16);
* ``mark(now, name)`` queues a marker behind the audio (Twilio's ``mark``):
  it is due once the audio queued before it has *finished* playing, and is
  returned by the ``play`` call at or after that moment (at once when
  nothing is buffered);
* ``clear(now)`` empties the buffer, cuts the piece playing at ``now`` (so
  ``heard`` ends where the sound really stopped, to the sample), and returns
  the markers it dropped;
* ``hold(now)`` stops playing at ``now`` (the piece playing is cut there and
  its rest goes back to the front of the buffer) and ``release(now)`` plays
  on from where it stopped: a client that holds its buffer while the agent
  is paused (``/ws/pcm``'s ``pause``/``resume`` notices) loses nothing;
* ``drop(now)`` stops playing at ``now`` and throws away what was not played
  (returned, in samples): a client that tells the gateway so at a pause
  (``paused``), which sends it again on resume.

``first_voiced`` finds when an utterance starts (the caller "starts talking"),
and ``audible_stop`` measures, from the caller's side, how long the agent's
audio went on after that: from the onset to the last agent sample heard.
Pure apart from the times passed in.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

WINDOW_S = 0.005  # resolution of the voiced/unvoiced decisions


@dataclass
class Utterance:
    """One thing a simulated caller said."""

    first: float  # send time of its first frame
    last: float  # send time of its last frame
    onset: float | None  # when its first voiced sample was spoken (None: no sound in it)


@dataclass
class _Due:
    at: float
    name: str


class Ear:
    def __init__(self, rate: int, delay: float = 0.06, frame_ms: int = 20):
        self.rate = rate
        self.delay = delay
        self.frame_bytes = rate * frame_ms // 1000 * 2
        self.buffer: deque[bytearray | str] = deque()  # audio and marker names, oldest first
        self.buffered = 0  # bytes of audio in the buffer
        self.play_from = 0.0
        self.due: list[_Due] = []  # markers whose audio is playing now
        self.heard: list[tuple[float, bytes]] = []
        self.gaps: list[tuple[float, float]] = []  # (ran dry at, silence heard s): audio came again within 0.5 s, no clear between
        self._dry_at: float | None = None
        self.held = False

    # ------------------------------------------------------------ input
    def receive(self, now: float, pcm: bytes) -> None:
        if not pcm:
            return
        if self.buffered == 0:
            self.play_from = max(self.play_from, now + self.delay)
            if self._dry_at is not None and now - self._dry_at < 0.5:
                self.gaps.append((self._dry_at, max(self.play_from, now) - self._dry_at))
            self._dry_at = None
        self.buffer.append(bytearray(pcm))
        self.buffered += len(pcm)

    def mark(self, now: float, name: str) -> list[str]:
        """Queue a marker; returns the markers due at once (nothing buffered)."""
        if self.buffered == 0 and not self.due:
            out = [n for n in self.buffer if isinstance(n, str)] + [name]
            self.buffer.clear()
            return out
        self.buffer.append(name)
        return []

    def clear(self, now: float) -> tuple[list[str], list[str]]:
        """Drop what is buffered and cut what is playing. Returns (markers whose
        audio had finished playing, markers dropped unplayed)."""
        played = [d.name for d in self.due if d.at <= now]
        dropped = [d.name for d in self.due if d.at > now] + [n for n in self.buffer if isinstance(n, str)]
        self.due.clear()
        self.buffer.clear()
        self.buffered = 0
        self._dry_at = None
        self._cut_heard(now)
        return played, dropped

    def _cut_heard(self, now: float) -> bytes:
        """The piece playing at ``now`` ends there; returns its unheard rest."""
        if not self.heard:
            return b""
        start, pcm = self.heard[-1]
        keep = max(0, int((now - start) * self.rate)) * 2
        if keep >= len(pcm):
            return b""
        self.heard[-1] = (start, pcm[:keep])
        return pcm[keep:]

    def hold(self, now: float) -> None:
        """Stop playing at ``now``, keeping what is not yet heard."""
        if self.held:
            return
        self.held = True
        unheard = self._cut_heard(now)
        if unheard:
            self.buffer.appendleft(bytearray(unheard))
            self.buffered += len(unheard)
        self._dry_at = None

    def drop(self, now: float) -> int:
        """Stop at ``now``, dropping what is not yet heard; samples dropped."""
        unheard = len(self._cut_heard(now)) + self.buffered
        self.buffer = deque(n for n in self.buffer if isinstance(n, str))
        self.buffered = 0
        self._dry_at = None
        return unheard // 2

    def release(self, now: float) -> None:
        """Play on from where ``hold`` stopped (at once: the buffer is full)."""
        if self.held:
            self.held = False
            self.play_from = max(self.play_from, now)

    # ------------------------------------------------------------ the clock
    def play(self, now: float) -> list[str]:
        """Play the next frame's worth at ``now``; returns the markers due."""
        echoed = [d.name for d in self.due if d.at <= now]
        self.due = [d for d in self.due if d.at > now]
        if now < self.play_from or self.held:
            return echoed
        want = self.frame_bytes
        out = bytearray()
        while self.buffer:
            head = self.buffer[0]
            if isinstance(head, str):
                self.buffer.popleft()
                at = now + len(out) / 2 / self.rate
                if at <= now:
                    echoed.append(head)
                else:
                    self.due.append(_Due(at, head))
                continue
            if want == 0:
                break
            take = head[:want]
            del head[: len(take)]
            out += take
            want -= len(take)
            self.buffered -= len(take)
            if not head:
                self.buffer.popleft()
        if out:
            self.heard.append((now, bytes(out)))
            self._dry_at = now + len(out) / 2 / self.rate if self.buffered == 0 else None
        return echoed

    # ------------------------------------------------------------ queries
    @property
    def buffered_ms(self) -> int:
        return self.buffered * 500 // self.rate

    def audio(self, after: float = 0.0, until: float = float("inf")) -> bytes:
        """What was heard (PCM16) in pieces that started in [after, until)."""
        return b"".join(pcm for t, pcm in self.heard if after <= t < until)

    def last_heard_at(self) -> float:
        """When the last sample heard ended (0 if nothing was heard)."""
        if not self.heard:
            return 0.0
        start, pcm = self.heard[-1]
        return start + len(pcm) / 2 / self.rate


def first_voiced(pcm: np.ndarray | bytes, rate: int, threshold: float = 0.01) -> float | None:
    """Seconds into ``pcm`` (int16 mono) where sound begins: the start of the
    first 5 ms window whose RMS exceeds ``threshold`` of full scale."""
    x = np.frombuffer(pcm, dtype="<i2") if isinstance(pcm, bytes) else np.asarray(pcm)
    n = max(1, int(rate * WINDOW_S))
    k = len(x) // n
    if k == 0:
        return None
    rms = np.sqrt((x[: k * n].astype(np.float64).reshape(k, n) ** 2).mean(axis=1)) / 32768
    loud = np.flatnonzero(rms > threshold)
    return float(loud[0] * n / rate) if len(loud) else None


def sound_spans(heard: list[tuple[float, bytes]], rate: int, threshold: float | None = None, gap: float = 0.15) -> list[tuple[float, float]]:
    """(start, end) of what was heard, pieces closer than ``gap`` merged. With
    a ``threshold`` (fraction of full scale), only 5 ms windows louder than it
    count as sound; without, every sample heard does."""
    spans: list[tuple[float, float]] = []
    n = max(1, int(rate * WINDOW_S))
    for start, pcm in heard:
        x = np.frombuffer(pcm, dtype="<i2")
        if not len(x):
            continue
        if threshold is None:
            parts = [(start, start + len(x) / rate)]
        else:
            k = -(-len(x) // n)
            padded = np.zeros(k * n, np.float64)
            padded[: len(x)] = x
            rms = np.sqrt((padded.reshape(k, n) ** 2).mean(axis=1)) / 32768
            parts = [(start + i * n / rate, start + min((i + 1) * n, len(x)) / rate) for i in np.flatnonzero(rms > threshold)]
        for a, b in parts:
            if spans and a - spans[-1][1] < gap:
                spans[-1] = (spans[-1][0], max(spans[-1][1], b))
            else:
                spans.append((a, b))
    return spans


def audible_stop(heard: list[tuple[float, bytes]], rate: int, onset: float, *, threshold: float | None = None, gap: float = 0.15) -> float | None:
    """Seconds from ``onset`` (the caller started talking) to the last agent
    sample heard in the stretch of agent audio playing at that moment
    (stretch: pieces closer than ``gap``). None if nothing was playing."""
    for a, b in sound_spans(heard, rate, threshold, gap):
        if a <= onset <= b:
            return b - onset
        if a > onset:
            break
    return None
