"""Call recordings: a stereo WAV per recorded call, written while the call goes on.

The gateway is the one place that knows what the caller actually heard, so
the recording is made here. Left channel: the caller, as the gateway received
them. Right channel: the agent as the caller heard it: on Twilio, the audio
the caller's echoed marks prove was played (so a reply cut by a barge-in
ends where Twilio's ``clear`` cut it, and audio a clear took back counts
only once it is played again); on ``/ws/pcm`` and WebRTC, what left the
playout. Both channels share one sample clock: the call's wall clock from
the moment recording began, with silence where nobody spoke.

Theory of operation
-------------------
* ``Timeline`` (pure, times passed in) places each piece of audio on its
  channel at the sample its time says, continuing the channel's last piece
  when it starts within ``SNAP_S`` of its end (arrival jitter must not make
  gaps or overlaps), and hands out interleaved stereo up to a horizon.
* ``Recorder``, one per recorded call, is what the ``Call`` feeds (50 times
  a second per direction: a slice copy, nothing else). Every ``FLUSH_S`` it
  takes what is ``LAG_S`` old (Twilio's proof of playing comes back a little
  after the audio played; a client's answer at a pause takes back what it
  dropped unplayed) and hands it to the writer.
* ``Writer`` is the gateway's one recording thread: every file operation
  happens there, in order, so the event loop never waits on the disk. A
  queue past ``MAX_QUEUED`` bytes (the disk cannot keep up) stops that
  recording, loudly; the call goes on.
* ``WavFile`` writes the header first (sizes 0), then appends; ``finish``
  puts the real sizes in. A crash mid-call leaves a file whose data is all
  there and whose header says 0: ``repair`` (at the next start) fixes it.
  A file being written is held with ``flock``, so neither ``repair`` nor
  ``sweep`` touches a live recording, even another process's.
* ``sweep`` deletes recordings older than the retention (at start, then
  hourly).

Files: ``<data dir>/recordings/<session>.wav`` (PCM16, 16 kHz, 2 channels)
and ``<session>.json`` beside it: when sample 0 was (wall clock), the
transport, and once finished, the length and why the call ended.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import queue
import struct
import threading
import time
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from parley.audio import Resampler, ulaw_to_pcm16

log = logging.getLogger("parley.gateway")

RATE = 16_000
CHANNELS = ("caller", "agent as the caller heard it")
HEADER = 44
SNAP_S = 0.06  # a piece starting this close after its channel's end continues it
AHEAD_S = 60.0  # a channel running this far ahead of what was written is sending faster than real time
# Audio is written once it is this old: late proof of playing still fits (Twilio's marks), and so does what a
# client says at a pause it dropped unplayed (taken back up to REWIND_MAX_MS, answered up to ANSWER_WAIT_S after).
LAG_S = 1.2
FLUSH_S = 0.5  # how often a call hands its audio to the writer
MAX_QUEUED = 64 * 1024 * 1024  # bytes waiting for the disk, all calls together
MODES = ("off", "opt-in", "all")
YES = ("1", "true", "yes", "on")


def wanted(mode: str, params: Mapping[str, str]) -> bool:
    """Whether a call is recorded: the deployment's mode, and for ``opt-in``
    the session's own ``recording`` parameter."""
    if mode == "all":
        return True
    return mode == "opt-in" and params.get("recording", "").strip().lower() in YES


# ---------------------------------------------------------------------------
# The timeline (pure)


class Timeline:
    """Two channels of PCM16 on one sample clock starting at ``start``."""

    def __init__(self, start: float, rate: int = RATE, snap: float = SNAP_S):
        self.start = start
        self.rate = rate
        self.snap = round(snap * rate)
        self.base = 0  # samples handed out so far (both channels)
        self.tracks = (bytearray(), bytearray())  # samples from ``base`` on
        self.ends = [0, 0]  # sample just past each channel's last piece
        self.late = 0  # samples that came after their place was handed out (dropped)
        self.ahead = round(AHEAD_S * rate)
        self.dropped = 0  # samples of a channel that ran ahead of real time (dropped)

    def sample(self, at: float) -> int:
        return round((at - self.start) * self.rate)

    def continues(self, channel: int, at: float) -> bool:
        """Whether a piece at ``at`` would continue the channel's last one."""
        return self.sample(at) <= self.ends[channel] + self.snap

    def put(self, channel: int, at: float, pcm: bytes) -> None:
        n = len(pcm) // 2
        if not n:
            return
        pos = self.sample(at)
        if pos <= self.ends[channel] + self.snap:
            pos = self.ends[channel]  # jitter: continue, never overlap itself
        if pos + n - self.base > self.ahead:
            self.dropped += n  # far faster than real time: not kept (bounded memory)
            return
        self.ends[channel] = pos + n
        if pos < self.base:
            skip = min(self.base - pos, n)
            self.late += skip
            pcm, pos = pcm[2 * skip :], self.base
            if not pcm:
                return
        buf = self.tracks[channel]
        off = (pos - self.base) * 2
        if off > len(buf):
            buf.extend(bytes(off - len(buf)))
        buf[off : off + len(pcm)] = pcm

    def take_back(self, channel: int, n: int) -> int:
        """Remove the channel's last ``n`` samples (not those handed out
        already); returns how many were removed."""
        end = self.ends[channel]
        if end <= self.base:
            return 0
        new = max(self.base, end - n)
        del self.tracks[channel][(new - self.base) * 2 :]
        self.ends[channel] = new
        return end - new

    def take(self, upto: int | None = None) -> bytes:
        """Interleaved stereo of the samples from ``base`` up to ``upto``
        (None: up to the end of the later channel), silence where a channel
        had nothing."""
        if upto is None:
            upto = max(self.ends[0], self.ends[1])
        n = upto - self.base
        if n <= 0:
            return b""
        out = np.zeros((n, 2), dtype="<i2")
        for ch, buf in enumerate(self.tracks):
            k = min(n, len(buf) // 2)
            if k:
                out[:k, ch] = np.frombuffer(buf, dtype="<i2", count=k)
                del buf[: 2 * k]
        self.base = upto
        return out.tobytes()


# ---------------------------------------------------------------------------
# Files (blocking: the writer thread's, and repair/sweep at start)


def wav_header(data_bytes: int, rate: int = RATE, channels: int = 2) -> bytes:
    block = channels * 2
    return b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE" + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, 16) + b"data" + struct.pack("<I", data_bytes)


def _is_ours(header: bytes) -> bool:
    return len(header) == HEADER and header[:4] == b"RIFF" and header[8:16] == b"WAVEfmt " and header[36:40] == b"data"


class WavFile:
    """One recording on disk, held with an exclusive flock while open."""

    def __init__(self, path: Path, meta: dict):
        self.path = path
        self.meta = dict(meta)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _write_all(self.fd, wav_header(0))
        self.data = 0
        write_meta(path, {**self.meta, "finished": False})

    def append(self, block: bytes) -> None:
        _write_all(self.fd, block)
        self.data += len(block)

    def finish(self, extra: dict) -> None:
        try:
            os.pwrite(self.fd, wav_header(self.data), 0)
            os.fsync(self.fd)
            write_meta(self.path, {**self.meta, **extra, "finished": True, "seconds": round(self.data / 4 / RATE, 3)})
        finally:
            os.close(self.fd)  # releases the lock


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_meta(wav: Path, meta: dict) -> None:
    """The sidecar, replaced atomically."""
    tmp = wav.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, sort_keys=True))
    os.replace(tmp, wav.with_suffix(".json"))


def _locked(path: Path) -> tuple[int, bool] | None:
    """(fd, live): open ``path`` and try its lock; live when another holder
    has it. None if the file is gone."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return fd, True
    return fd, False


def repair(folder: Path) -> list[str]:
    """Fix the headers of recordings a crash left unfinished (their data is
    whole frames up to where the writing stopped). Returns the sessions fixed."""
    fixed: list[str] = []
    for path in sorted(folder.glob("*.wav")):
        opened = _locked(path)
        if opened is None:
            continue
        fd, live = opened
        try:
            if live:
                continue
            header = os.pread(fd, HEADER, 0)
            if not _is_ours(header):
                log.warning("not a Parley recording; left as it is", extra={"path": str(path)})
                continue
            size = os.fstat(fd).st_size
            data = (size - HEADER) // 4 * 4
            if size != HEADER + data:
                os.ftruncate(fd, HEADER + data)  # a frame cut mid-write
            if header != wav_header(data):
                os.pwrite(fd, wav_header(data), 0)
                os.fsync(fd)
                meta = read_meta(path)
                write_meta(path, {**meta, "finished": True, "recovered": True, "seconds": round(data / 4 / RATE, 3)})
                fixed.append(path.stem)
        finally:
            os.close(fd)
    return fixed


def sweep(folder: Path, keep_days: float, now: float) -> list[str]:
    """Delete recordings last written more than ``keep_days`` before ``now``
    (and their sidecars). Live recordings are never touched."""
    cutoff = now - keep_days * 86400
    deleted: list[str] = []
    for path in sorted(folder.glob("*.wav")):
        try:
            if path.stat().st_mtime >= cutoff:
                continue
        except FileNotFoundError:
            continue
        opened = _locked(path)
        if opened is None:
            continue
        fd, live = opened
        try:
            if live:
                continue
            path.unlink(missing_ok=True)
            path.with_suffix(".json").unlink(missing_ok=True)
            deleted.append(path.stem)
        finally:
            os.close(fd)
    for meta in folder.glob("*.json"):  # a sidecar whose recording is gone
        if not meta.with_suffix(".wav").exists() and meta.stat().st_mtime < cutoff:
            meta.unlink(missing_ok=True)
    return deleted


def read_meta(wav: Path) -> dict:
    try:
        meta = json.loads(wav.with_suffix(".json").read_text())
        return meta if isinstance(meta, dict) else {}
    except (OSError, ValueError):
        return {}


def listing(folder: Path, limit: int = 200) -> list[dict]:
    """The recordings, newest first: session, start, length, whether finished."""
    out = []
    for path in folder.glob("*.wav"):
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            continue
        meta = read_meta(path)
        out.append({
            "session": path.stem,
            "started_at": meta.get("started_at"),
            "transport": meta.get("transport", ""),
            "seconds": meta.get("seconds", round(max(0, size - HEADER) / 4 / RATE, 3)),
            "finished": bool(meta.get("finished")),
            "end_reason": meta.get("end_reason", ""),
        })  # fmt: skip
    out.sort(key=lambda r: r["started_at"] or 0, reverse=True)
    return out[:limit]


# ---------------------------------------------------------------------------
# The writer thread


class Writer:
    """Runs file jobs in order on one thread. A job that fails is logged,
    counted (``recording_errors``) and reported to its ``on_error``."""

    def __init__(self, stats: dict):
        self.stats = stats
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.queued = 0  # bytes of audio waiting
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="recordings", daemon=True)
        self.thread.start()

    def submit(self, job: Callable[[], object], size: int = 0, on_error: Callable[[BaseException], None] | None = None) -> bool:
        """Queue a job; False (nothing queued) when the disk is that far behind."""
        with self.lock:
            if size and self.queued + size > MAX_QUEUED:
                return False
            self.queued += size
        self.jobs.put((job, size, on_error))
        return True

    def _run(self) -> None:
        while True:
            item = self.jobs.get()
            if item is None:
                return
            job, size, on_error = item
            try:
                job()
            except Exception as exc:  # noqa: BLE001 - one file's trouble never stops the others
                self.stats["recording_errors"] = self.stats.get("recording_errors", 0) + 1
                log.error("recording job failed: %s", exc, exc_info=exc)
                if on_error is not None:
                    try:
                        on_error(exc)
                    except Exception:  # noqa: BLE001
                        log.exception("recording error handler failed")
            finally:
                with self.lock:
                    self.queued -= size

    def close(self) -> None:
        """Finish what is queued, then stop (the thread is waited for)."""
        self.jobs.put(None)
        self.thread.join()


# ---------------------------------------------------------------------------
# Recordings: the gateway's, and one call's


class Recordings:
    """The gateway's recordings: where they go, whether a call is recorded,
    retention, and the writer thread."""

    def __init__(self, folder: Path, mode: str, keep_days: float, stats: dict):
        if mode not in MODES:
            raise ValueError(f"recording mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.folder = folder
        self.mode = mode
        self.keep_days = keep_days
        self.stats = stats
        self.writer: Writer | None = None

    def open(self) -> None:
        """Start the writer; fix what a crash left and apply the retention
        first (in the writer thread, before any new recording)."""
        self.writer = Writer(self.stats)
        self.writer.submit(self._housekeeping)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def housekeeping(self) -> None:
        """Queue the retention sweep (hourly, from the app)."""
        if self.writer is not None:
            self.writer.submit(self._housekeeping)

    def _housekeeping(self) -> None:
        if not self.folder.is_dir():
            return
        fixed = repair(self.folder)
        if fixed:
            log.warning("recordings left unfinished by a crash were repaired", extra={"sessions": fixed})
            self.stats["recordings_repaired"] = self.stats.get("recordings_repaired", 0) + len(fixed)
        deleted = sweep(self.folder, self.keep_days, time.time())
        if deleted:
            log.info("old recordings deleted", extra={"count": len(deleted), "keep_days": self.keep_days})
            self.stats["recordings_deleted"] = self.stats.get("recordings_deleted", 0) + len(deleted)

    def path(self, session: str) -> Path:
        return self.folder / f"{session}.wav"

    def start(self, session: str, params: Mapping[str, str], transport: str, now: float) -> "Recorder | None":
        """A Recorder if this call is to be recorded, else None."""
        if self.writer is None or not wanted(self.mode, params):
            return None
        meta = {"session": session, "started_at": now, "transport": transport, "rate": RATE, "channels": list(CHANNELS)}
        return Recorder(self.writer, self.path(session), meta, now, self.stats)


class Recorder:
    """One call's recording. Per-frame methods only place audio (cheap);
    ``flush`` (every FLUSH_S) hands blocks to the writer."""

    def __init__(self, writer: Writer, path: Path, meta: dict, start: float, stats: dict):
        self.writer = writer
        self.path = path
        self.stats = stats
        self.session = meta["session"]
        self.timeline = Timeline(start)
        self.resamplers: dict[int, Resampler] = {}
        self.failed = ""
        self.closed = False
        self.file: WavFile | None = None
        writer.submit(lambda: self._open(meta), on_error=self._fail)

    def _open(self, meta: dict) -> None:
        self.file = WavFile(self.path, meta)

    def _fail(self, exc: BaseException) -> None:
        # Writer thread. The call goes on unrecorded from here; said once.
        if not self.failed:
            self.failed = f"{type(exc).__name__}: {exc}"
            log.error("recording stopped: %s", self.failed, extra={"session_id": self.session, "path": str(self.path)})

    # -- per frame (event loop)
    def caller(self, now: float, pcm16_16k: bytes) -> None:
        """The caller's audio, received at ``now`` (it began a length earlier)."""
        self.timeline.put(0, now - len(pcm16_16k) / 2 / RATE, pcm16_16k)

    def agent(self, at: float, pcm16: bytes, rate: int) -> None:
        """Agent audio the caller heard, beginning at ``at``."""
        if rate != RATE:
            rs = self.resamplers.get(rate)
            if rs is None:
                rs = self.resamplers[rate] = Resampler(rate, RATE)
            elif not self.timeline.continues(1, at):
                # A new stretch: the last one's tail belongs where it ended.
                tail = rs.flush()
                self.timeline.put(1, self.timeline.start + self.timeline.ends[1] / RATE, tail)
            pcm16 = rs.process(pcm16)
        self.timeline.put(1, at, pcm16)

    def take_back(self, seconds: float) -> None:
        """The caller's client dropped the last ``seconds`` of the agent's
        audio unplayed (a pause): they were not heard, so not recorded (they
        come again, placed where they play, if the run resumes)."""
        self.resamplers.clear()  # what they hold is of the audio taken back
        self.timeline.take_back(1, round(seconds * RATE))

    def agent_ulaw(self, until: float, ulaw: bytes) -> None:
        """Twilio: μ-law 8 kHz the caller's marks prove was played, ending at ``until``."""
        self.agent(until - len(ulaw) / 8000, ulaw_to_pcm16(ulaw), 8000)

    # -- every FLUSH_S, and at the end
    def flush(self, now: float, final: bool = False) -> None:
        if self.failed:
            return
        block = self.timeline.take(None if final else self.timeline.sample(now - LAG_S))
        if block and not self.writer.submit(lambda: self._append(block), size=len(block), on_error=self._fail):
            self._fail(RuntimeError("the disk is not keeping up with the recordings"))
            self.stats["recording_errors"] = self.stats.get("recording_errors", 0) + 1

    def _append(self, block: bytes) -> None:
        if self.file is not None and not self.failed:
            self.file.append(block)

    def close(self, now: float, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        for rs in self.resamplers.values():
            tail = rs.flush()
            self.timeline.put(1, self.timeline.start + self.timeline.ends[1] / RATE, tail)
        self.flush(now, final=True)
        late = self.timeline.late
        self.writer.submit(lambda: self._finish({"end_reason": reason, "late_samples": late}), on_error=self._fail)

    def _finish(self, extra: dict) -> None:
        if self.file is not None:
            self.file.finish({**extra, **({"error": self.failed} if self.failed else {})})
