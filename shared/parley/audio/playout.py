"""The gateway's outbound playout buffer: what the caller hears next, frame by frame.

TTS audio arrives over the bus as pieces of numbered chunks of numbered runs
(a run is one assistant reply). Pieces of different chunks may interleave,
because chunks are synthesized in parallel; the caller must still hear chunk
0, then 1, then 2. A barge-in flushes a run and must silence it within one
frame; a suspected barge-in pauses it without losing audio.

``Playout`` is pure: no clock, no I/O. The gateway calls ``next_frame()``
once per frame period (its own pacing loop) and sends what it gets, or
silence on None. Theory of operation:

* Runs play in increasing order. The head run (``current_run``) plays until
  it holds no audio at all; only then may a newer run that has audio take
  over, and the old run is closed. Normally the old run was flushed first.
* Within a run, chunk k+1 starts only after chunk k was ended (a push with
  ``last=True``) and played out; its last frame is padded with zeros, so a
  frame never mixes two chunks. Chunks are numbered from 0.
* ``flush(run)`` closes that run and every older one: their audio is
  dropped, and any later push for them returns False. Once a run has played
  a frame, every older run is closed as well.
* ``pause(run)`` holds the run while it is the head (a newer run waits
  behind it); ``resume(run)`` releases it. Both act on a run that is
  playing or queued; pausing a run not seen yet (and not closed) registers
  it, so audio that arrives later is held too. Otherwise they do nothing.
* ``stalled()`` names the head chunk when the playout waits for it (nothing
  to play, the chunk not ended): the gateway then asks whether its TTS
  worker is still alive. ``abandon(run, chunk)`` ends a chunk at what it
  holds (its worker died: the answer goes on from the next chunk);
  ``reset(run, chunk)`` drops what a chunk holds before it started playing
  (its audio will come again, whole, from another worker).
* ``rewind(run, ms)`` takes back up to ``ms`` of audio a paused run already
  played, which the caller's client reports it never played (it dropped
  what its buffer held at the pause): the run plays it again on resume.
  Each run keeps the played audio of its head chunk and of the chunk before
  it (``keep_ms`` of each at most), so a rewind may go back over one chunk
  boundary; the result says so (``Rewind.reopened``), and the gateway then
  tells the orchestrator that chunk was not heard whole after all.
* ``Mark``\\ s tell the gateway when a chunk's first frame and last frame
  leave, which it reports upstream as playback progress.

Cost per call is a few dict look-ups and one slice of a bytearray: no loop
over samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Mark:
    """A chunk's first frame ("started") or last frame ("finished") just left.

    ``played_ms``: audio of this chunk played so far, including the frame the
    mark came with and excluding padding; for "finished", the chunk's length.
    """

    run: int
    chunk: int
    kind: Literal["started", "finished"]
    played_ms: int


@dataclass(frozen=True, slots=True)
class Rewind:
    """What ``rewind`` took back: ``samples`` of audio; the run now stands at
    ``played_ms`` into ``chunk``; ``reopened``: it went back into a chunk
    that had finished (its "finished" mark was given), and ``reopened_pcm``
    is the part of that chunk taken back."""

    samples: int
    chunk: int
    played_ms: int
    reopened: bool
    reopened_pcm: bytes = b""


class _Chunk:
    __slots__ = ("buf", "pos", "complete", "started", "played")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.pos = 0  # read offset into buf; compacted now and then
        self.complete = False  # the piece with last=True has arrived
        self.started = False
        self.played = 0  # bytes of audio played, padding excluded


class _Run:
    __slots__ = ("chunks", "next_chunk", "paused", "buffered", "last_done")

    def __init__(self) -> None:
        self.chunks: dict[int, _Chunk] = {}
        self.next_chunk = 0  # the chunk playing, or the one to play next
        self.paused = False
        self.buffered = 0  # bytes held across all chunks of this run
        self.last_done: _Chunk | None = None  # chunk next_chunk - 1 once it finished (its tail kept for a rewind)


_COMPACT_AT = 1 << 16  # drop played bytes from a chunk's buffer past this offset


class Playout:
    """Outbound playout buffer for one call; PCM16 mono at ``rate``."""

    def __init__(self, rate: int, frame_ms: int = 20, keep_ms: int = 500) -> None:
        if rate <= 0 or frame_ms <= 0 or rate * frame_ms % 1000:
            raise ValueError(f"{frame_ms} ms is not a whole number of samples at {rate} Hz")
        self.rate = rate
        self.frame_ms = frame_ms
        self.frame_bytes = rate * frame_ms // 1000 * 2
        self.keep_bytes = rate * keep_ms // 1000 * 2  # played audio kept per chunk for a rewind
        self._silence = bytes(self.frame_bytes)
        self._runs: dict[int, _Run] = {}
        self._closed: int | None = None  # runs <= this are flushed or superseded
        self._buffered = 0
        self._playing = False
        self.dropped_frames = 0
        self.dropped_pushes = 0

    # -- queries -------------------------------------------------------------

    @property
    def current_run(self) -> int | None:
        """The run playing or next to play, if any."""
        return min(self._runs) if self._runs else None

    @property
    def is_playing(self) -> bool:
        """Whether the last ``next_frame()`` returned audio."""
        return self._playing

    @property
    def buffered_ms(self) -> int:
        """Audio held for runs that can still play (padding not counted)."""
        return self._ms(self._buffered)

    @property
    def position(self) -> tuple[int, int, int] | None:
        """(run, chunk, played_ms) of a chunk that started and has not finished."""
        run = self.current_run
        if run is None:
            return None
        r = self._runs[run]
        c = r.chunks.get(r.next_chunk)
        if c is None or not c.started:
            return None
        return run, r.next_chunk, self._ms(c.played)

    def stalled(self) -> tuple[int, int, bool] | None:
        """(run, chunk, started) of the head chunk when nothing can play
        because it has not ended and holds less than a frame; else None
        (playing, paused, idle, or waiting behind nothing)."""
        if not self._runs:
            return None
        run = min(self._runs)
        r = self._runs[run]
        if r.paused:
            return None
        c = r.chunks.get(r.next_chunk)
        if c is None:
            # Nothing of the next chunk yet: a stall only if a later chunk waits.
            return (run, r.next_chunk, False) if r.buffered else None
        if c.complete or len(c.buf) - c.pos >= self.frame_bytes:
            return None
        return run, r.next_chunk, c.started

    def chunk_state(self, run: int, chunk: int) -> str:
        """"played" (or closed), "playing", "queued" (holds audio, not started) or "none"."""
        if self._is_closed(run):
            return "played"
        r = self._runs.get(run)
        if r is None:
            return "none"
        if chunk < r.next_chunk:
            return "played"
        c = r.chunks.get(chunk)
        if c is None:
            return "none"
        return "playing" if c.started else "queued"

    def abandon(self, run: int, chunk: int) -> bool:
        """End a chunk at what it holds (marks follow as usual); False if it
        already ended or played. The next chunk then plays."""
        target = self._target(run, chunk)
        if target is None:
            return False
        target[1].complete = True
        return True

    def reset(self, run: int, chunk: int) -> int:
        """Drop the audio of a chunk that has not started playing (bytes dropped)."""
        r = self._runs.get(run)
        c = r.chunks.get(chunk) if r is not None else None
        if c is None or c.started or self._is_closed(run):
            return 0
        dropped = len(c.buf) - c.pos
        del r.chunks[chunk]
        r.buffered -= dropped
        self._buffered -= dropped
        return dropped

    def _ms(self, nbytes: int) -> int:
        return nbytes * 500 // self.rate  # bytes/2 samples * 1000 ms / rate

    def _is_closed(self, run: int) -> bool:
        return self._closed is not None and run <= self._closed

    def _close_upto(self, run: int) -> None:
        if self._closed is None or run > self._closed:
            self._closed = run

    # -- commands ------------------------------------------------------------

    def push(self, run: int, chunk: int, pcm: bytes, last: bool) -> bool:
        """Queue a piece of audio; False if it can never play (and counted as dropped).

        Refused: a closed run (flushed, or older than a run that has played),
        a chunk that already ended (``last`` was pushed before), or one that
        already played out.
        """
        if len(pcm) % 2:
            raise ValueError(f"PCM16 needs whole 2-byte samples, got {len(pcm)} bytes")
        target = self._target(run, chunk)
        if target is None:
            self.dropped_pushes += 1
            self.dropped_frames += -(-len(pcm) // self.frame_bytes)
            return False
        r, c = target
        c.buf += pcm
        c.complete = last
        r.buffered += len(pcm)
        self._buffered += len(pcm)
        return True

    def _target(self, run: int, chunk: int) -> tuple[_Run, _Chunk] | None:
        if self._is_closed(run) or chunk < 0:
            return None
        r = self._runs.get(run)
        if r is None:
            r = self._runs[run] = _Run()
        if chunk < r.next_chunk:
            return None
        c = r.chunks.get(chunk)
        if c is None:
            c = r.chunks[chunk] = _Chunk()
        return None if c.complete else (r, c)

    def flush(self, run: int) -> int:
        """Drop all audio of ``run`` and older runs, close them; frames dropped."""
        self._close_upto(run)
        dropped = 0
        for rid in [rid for rid in self._runs if rid <= run]:
            r = self._runs.pop(rid)
            for c in r.chunks.values():
                dropped += -(-(len(c.buf) - c.pos) // self.frame_bytes)
            self._buffered -= r.buffered
        self.dropped_frames += dropped
        return dropped

    def rewind(self, run: int, ms: int) -> Rewind | None:
        """Take back up to ``ms`` of audio the paused head run played (it
        plays again on resume); None if ``run`` is not the paused head run.
        Goes back over at most one chunk boundary, and never past what was
        kept (``keep_ms``) nor past the run's start."""
        r = self._runs.get(run)
        if r is None or not r.paused or run != self.current_run or ms < 0:
            return None
        want = ms * self.rate // 1000 * 2
        taken = self._take_back(r.chunks.get(r.next_chunk), want)
        reopened, tail = False, b""
        c = r.chunks.get(r.next_chunk)
        done = r.last_done
        if taken < want and (c is None or not c.started) and done is not None and done.pos > 0:
            back = self._take_back(done, want - taken)
            tail = bytes(done.buf[done.pos : done.pos + back])
            taken += back
            r.next_chunk -= 1
            r.chunks[r.next_chunk] = done
            r.last_done, reopened = None, True
        r.buffered += taken
        self._buffered += taken
        head = r.chunks.get(r.next_chunk)
        return Rewind(taken // 2, r.next_chunk, self._ms(head.played) if head is not None else 0, reopened, tail)

    @staticmethod
    def _take_back(c: _Chunk | None, want: int) -> int:
        """Move a chunk's read position back by up to ``want`` bytes it kept; bytes taken back."""
        if c is None or not c.started:
            return 0
        back = min(want, c.pos)
        c.pos -= back
        c.played -= back
        if c.played == 0:
            c.started = False  # it starts again (its "started" mark comes again)
        return back

    def pause(self, run: int) -> None:
        if not self._is_closed(run):
            self._runs.setdefault(run, _Run()).paused = True

    def resume(self, run: int) -> None:
        r = self._runs.get(run)
        if r is not None:
            r.paused = False

    def next_frame(self) -> tuple[bytes | None, list[Mark]]:
        """One frame of ``frame_ms`` to send now, or None; and the marks it carries."""
        marks: list[Mark] = []
        frame = self._next(marks)
        self._playing = frame is not None
        return frame, marks

    def _next(self, marks: list[Mark]) -> bytes | None:
        size = self.frame_bytes
        while self._runs:
            run = min(self._runs)
            r = self._runs[run]
            c = r.chunks.get(r.next_chunk)
            left = len(c.buf) - c.pos if c is not None else 0
            if c is None or (left < size and not c.complete):
                # Underrun (or waiting for the next chunk). A newer run may take
                # over only once this one holds no audio at all.
                if r.buffered == 0 and len(self._runs) > 1:
                    self._supersede(run)
                    continue
                return None
            if r.paused:
                return None
            first = not c.started
            if first:
                c.started = True
                self._close_upto(run - 1)  # older runs can never play now
            take = min(size, left)
            frame = bytes(c.buf[c.pos : c.pos + take])
            c.pos += take
            c.played += take
            r.buffered -= take
            self._buffered -= take
            if c.pos >= _COMPACT_AT + self.keep_bytes:
                self._compact(c)
            finished = c.complete and c.pos == len(c.buf)
            if first:
                marks.append(Mark(run, r.next_chunk, "started", self._ms(c.played)))
            if finished:
                marks.append(Mark(run, r.next_chunk, "finished", self._ms(c.played)))
                self._compact(c)
                r.last_done = c
                del r.chunks[r.next_chunk]
                r.next_chunk += 1
            if take == 0:
                continue  # an empty chunk: marks only, look for audio in the next one
            return frame if take == size else frame + self._silence[take:]
        return None

    def _compact(self, c: _Chunk) -> None:
        """Drop played bytes, keeping the last ``keep_bytes`` for a rewind."""
        cut = c.pos - self.keep_bytes
        if cut > 0:
            del c.buf[:cut]
            c.pos -= cut

    def _supersede(self, run: int) -> None:
        self._close_upto(run)
        r = self._runs.pop(run)
        self._buffered -= r.buffered  # zero: only empty runs are superseded
