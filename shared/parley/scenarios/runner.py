"""Carrying a scenario out against a running stack.

``Runner(target)`` places one call per (scenario, transport): it renders the
caller's audio first (``sounds.Renderer``), dials, performs the steps at
real-time pace while recording what the caller hears, hangs up, collects the
session's reducer steps from ``parley.obs``, has Whisper transcribe what the
caller heard, and hands the ``Record`` to ``judge``. Calls are placed one at
a time: the timings are the point, and concurrent calls on a small machine
would measure the machine.

Waiting is defined from the caller's side plus the session's phase:

* ``wait: quiet``: until no agent audio has played for ``Timing.quiet`` s,
  the caller's own last sound is as old, and the session is listening;
* ``wait: {agent_audio: S}``: until S s of agent audio have played since
  the previous step ended;
* ``wait: {agent: early|mid|late}``: until that share of the reply has
  played. The reply's length is known from the run's synthesized chunks
  (``TTSChunkDone.audio_ms``) once its LLM output is complete.

A step that cannot be carried out (the agent never spoke, the call dropped)
ends the call; the record carries the reason and the scenario fails with it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import secrets
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import soxr

from parley import contract

from . import hearing, judge as judging
from .judge import Action, Record, Result
from .line import MARKER, Heard, Line, Observer, PcmLine, TwilioLine
from .sounds import RATE, Renderer
from .spec import POINTS, Scenario, Step

log = logging.getLogger("parley.scenarios")

LISTENING = ("Listening", "Idle", "Ended")


@dataclass(frozen=True)
class Target:
    """Where the stack is."""

    gateway_ws: str  # ws://HOST:PORT
    nats_url: str
    gateway_http: str = ""  # http://HOST:PORT, for a signed Twilio webhook
    twilio_auth_token: str = ""  # dial through /twilio/voice, signed, when the gateway checks signatures
    api_key: str = ""  # the gateway's PARLEY_API_KEY: /ws/pcm sessions need a token it mints


@dataclass(frozen=True)
class Timing:
    lead_in: float = 0.3  # silence before the first step
    quiet: float = 1.2  # "quiet" = no agent audio and no caller sound for this long, and listening
    answer_timeout: float = 25.0  # the agent must start a reply this soon
    wait_timeout: float = 60.0  # any wait gives up after this
    settle: float = 0.5  # after hanging up, for the last steps to arrive


class StepFailed(RuntimeError):
    pass


def frame_levels(heard: Heard) -> list[tuple[float, float, float]]:
    out = []
    for t, pcm in heard.frames:
        if not len(pcm):
            continue
        rms = float(np.sqrt(np.mean((pcm.astype(np.float32) / 32768) ** 2)))
        out.append((t, len(pcm) / heard.rate, round(20 * np.log10(max(rms, 1e-6)), 1)))
    return out


def audible_stops(actions: list[Action], heard: Heard) -> dict[int, float | None]:
    """For every caller sound, the audible stop at the caller's ear, to 5 ms:
    seconds from its onset to the end of the last sound (louder than
    ``judge.AUDIBLE_DB``) in the stretch of agent audio playing then; None
    if nothing was. The stretch is the audio played without a break (pieces
    less than ``judge.STRETCH_GAP`` apart, silent samples included), so the
    silence between two of the agent's sentences does not end it; uses
    ``parley.callers.ear.sound_spans``."""
    from parley.callers.ear import sound_spans

    pieces = [(t, pcm.astype("<i2").tobytes()) for t, pcm in heard.frames]
    threshold = 10 ** (judging.AUDIBLE_DB / 20)
    stretches = sound_spans(pieces, heard.rate, None, judging.STRETCH_GAP)
    out: dict[int, float | None] = {}
    for a in actions:
        if a.onset is None:
            continue
        out[a.index] = None
        for start, end in stretches:
            if start - judging.PLAYING_WINDOW <= a.onset < end + judging.PLAYING_WINDOW:
                loud = sound_spans([p for p in pieces if start <= p[0] < end], heard.rate, threshold, judging.STRETCH_GAP)
                last = max((e for _, e in loud), default=end)
                out[a.index] = max(0.0, last - a.onset)
                break
    return out


def heard_audio(heard: Heard, start: float, end: float) -> np.ndarray:
    parts = [pcm for t, pcm in heard.frames if start <= t < end]
    return np.concatenate(parts) if parts else np.zeros(0, np.int16)


class Runner:
    def __init__(
        self,
        target: Target,
        *,
        renderer: Renderer | None = None,
        timing: Timing = Timing(),
        transcribe: Callable[[np.ndarray, int], str] | None = hearing.transcribe,
        out_dir: Path | None = None,
    ):
        self.target = target
        self.renderer = renderer or Renderer()
        self.timing = timing
        self.transcribe = transcribe
        self.out_dir = Path(out_dir) if out_dir else None
        self.observer = Observer(target.nats_url)

    async def __aenter__(self) -> "Runner":
        await self.observer.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.observer.stop()

    # ------------------------------------------------------------ one call
    def render(self, scenario: Scenario) -> dict[int, np.ndarray]:
        return {i: self.renderer(s.kind, s.text, s.audio) for i, s in enumerate(scenario.steps) if s.audible}

    async def run(self, scenario: Scenario, transport: str, audio: dict[int, np.ndarray] | None = None) -> tuple[Record, Result]:
        audio = audio if audio is not None else await asyncio.to_thread(self.render, scenario)
        record, heard, caller = await self._call(scenario, transport, audio)
        if self.transcribe is not None and not record.error:
            await asyncio.to_thread(self._transcribe, scenario, record, heard)
        result = judging.judge(scenario, record)
        if self.out_dir is not None:
            self._save(scenario, record, result, heard, caller)
        return record, result

    def _line(self, transport: str, params: dict[str, str]) -> Line:
        if transport == "pcm":
            return PcmLine(self.target.gateway_ws, params, gateway_http=self.target.gateway_http, api_key=self.target.api_key)
        if transport == "twilio":
            return TwilioLine(self.target.gateway_ws, params, gateway_http=self.target.gateway_http, auth_token=self.target.twilio_auth_token)
        raise ValueError(f"unknown transport {transport!r}")

    # long: one scripted call from open to hang-up: the steps in order and the record, with one try/finally that always closes the line
    async def _call(self, scenario: Scenario, transport: str, audio: dict[int, np.ndarray]) -> tuple[Record, Heard, list]:
        marker = secrets.token_hex(8)
        line = self._line(transport, {**scenario.params, MARKER: marker})
        rec = Record(scenario.name, transport, t0=time.monotonic(), wall_minus_mono=time.time() - time.monotonic())
        said: list[tuple[float, np.ndarray]] = []
        try:
            await asyncio.wait_for(line.open(), 20)
            rec.session = getattr(line, "session", "") or await self.observer.session_of(marker)
            await asyncio.sleep(self.timing.lead_in)
            since = time.monotonic()
            steps = list(enumerate(scenario.steps))
            if not steps or steps[-1][1].kind not in ("wait", "hangup"):
                steps.append((len(scenario.steps), Step(kind="wait", until="quiet", where="(the end)")))
            for i, step in steps:
                if line.closed:
                    raise StepFailed(f"the gateway closed the call before step {i} ({step.label()})")
                began = time.monotonic()
                if step.audible:
                    pcm = audio[i]
                    first, last, onset = await asyncio.wait_for(line.play(pcm), len(pcm) / RATE + 10)
                    said.append((first, pcm))
                    rec.actions.append(Action(i, step.kind, first, last, onset=onset))
                elif step.kind == "pause":
                    await asyncio.sleep(step.seconds)
                    rec.actions.append(Action(i, step.kind, began, time.monotonic()))
                elif step.kind == "dtmf":
                    for digit in step.text:
                        await line.dtmf(digit)
                        await asyncio.sleep(0.15)
                    rec.actions.append(Action(i, step.kind, began, time.monotonic()))
                elif step.kind == "wait":
                    await self._wait(step, line, rec.session, since)
                    if i < len(scenario.steps):
                        rec.actions.append(Action(i, step.kind, began, time.monotonic()))
                elif step.kind == "hangup":
                    rec.actions.append(Action(i, step.kind, began, began))
                    break
                since = time.monotonic()
        except StepFailed as exc:
            rec.error = str(exc)
        except (asyncio.TimeoutError, TimeoutError, OSError) as exc:
            rec.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        finally:
            try:
                if line.closed is False and getattr(line, "caller", None) is not None:
                    await asyncio.wait_for(line.hang_up(), 10)
            except Exception as exc:  # noqa: BLE001 - hanging up is best effort; the record says why
                log.warning("hang-up failed: %s", exc)
            rec.ended = time.monotonic()
        await asyncio.sleep(self.timing.settle)
        heard = line.heard() if getattr(line, "caller", None) is not None else Heard(RATE)
        rec.frames = frame_levels(heard)
        rec.stops = audible_stops(rec.actions, heard)
        rec.marks = line.marks() if getattr(line, "caller", None) is not None else []
        rec.steps = self.observer.of(rec.session) if rec.session else []
        if scenario.now:
            rec.clock = clock_mismatch(scenario.now, rec.steps)
        return rec, heard, said

    # ------------------------------------------------------------ waiting
    def _heard_since(self, line: Line, since: float) -> tuple[float, float]:
        """(seconds of agent audio played since ``since``, when the last piece ended)."""
        frames = line.heard()
        total = sum(len(p) / frames.rate for t, p in frames.frames if t >= since)
        last = max((t + len(p) / frames.rate for t, p in frames.frames[-5:]), default=0.0)
        return total, last

    # long: the wait step's kinds (seconds, quiet, phase, heard), one loop each
    async def _wait(self, step: Step, line: Line, session: str, since: float) -> None:
        t = self.timing
        start = time.monotonic()
        if step.until == "seconds":
            await asyncio.sleep(step.seconds)
            return
        if step.until == "quiet":
            while True:
                now = time.monotonic()
                _, last_agent = self._heard_since(line, since)
                phase, phase_at = self.observer.phase(session)
                if line.closed:
                    return
                # Quiet: no agent audio, the reducer listening, and no caller
                # utterance still open at the ASR (a loaded ASR may close it
                # well after the caller stopped: hanging up then loses the turn).
                if now - max(last_agent, since) >= t.quiet and phase in LISTENING and now - phase_at >= 0.3 and not self.observer.caller_speaking(session):
                    return
                if now - start > t.wait_timeout:
                    raise StepFailed(f"{step.where}: the agent did not go quiet in {t.wait_timeout:.0f} s (phase {phase})")
                await asyncio.sleep(0.05)
        if step.until == "agent_audio":
            while True:
                played, _ = self._heard_since(line, since)
                if played >= step.seconds:
                    return
                if line.closed:
                    raise StepFailed(f"{step.where}: the call ended before {step.seconds:g} s of agent audio")
                if time.monotonic() - start > t.answer_timeout + step.seconds:
                    raise StepFailed(f"{step.where}: only {played:.1f} s of agent audio in {time.monotonic() - start:.0f} s; the agent did not answer")
                await asyncio.sleep(0.02)
        if step.until == "point":
            share = POINTS[step.point]
            while True:
                now = time.monotonic()
                frames = line.heard()
                onset = next((ft for ft, p in frames.frames if ft >= since), None)
                if onset is not None:
                    steps = self.observer.of(session)
                    run = judging.run_playing(steps, onset)
                    total = reply_length(steps, run) if run is not None else None
                    played = sum(len(p) / frames.rate for ft, p in frames.frames if ft >= onset)
                    if total is not None and played >= share * total:
                        return
                    last = frames.frames[-1][0] if frames.frames else 0.0
                    if total is not None and now - last > 1.0 and played < share * total:
                        raise StepFailed(f"{step.where}: the reply stopped after {played:.1f} s of {total:.1f} s, before its {step.point} point")
                if line.closed:
                    raise StepFailed(f"{step.where}: the call ended before the reply's {step.point} point")
                if now - start > t.wait_timeout:
                    raise StepFailed(f"{step.where}: no reply reached its {step.point} point in {t.wait_timeout:.0f} s")
                await asyncio.sleep(0.02)

    # ------------------------------------------------------------ after the call
    def _segments(self, scenario: Scenario, record: Record) -> dict[str, tuple[float, float]]:
        segs = {}
        if record.actions and scenario.expect.heard:
            segs["after_first"] = (record.actions[0].start, float("inf"))
        for a in record.actions:
            step = scenario.steps[a.index]
            if step.kind == "wait" and step.heard:
                segs[f"wait{a.index}"] = (a.start, a.end)
        return segs

    def _transcribe(self, scenario: Scenario, record: Record, heard: Heard) -> None:
        for key, (a, b) in self._segments(scenario, record).items():
            record.transcripts[key] = self.transcribe(heard_audio(heard, a, b), heard.rate)

    def _save(self, scenario: Scenario, record: Record, result: Result, heard: Heard, said: list) -> None:
        import json
        from dataclasses import asdict

        base = self.out_dir / f"{scenario.name}.{record.transport}"
        base.parent.mkdir(parents=True, exist_ok=True)
        base.with_suffix(base.suffix + ".json").write_text(json.dumps({"result": asdict(result), "record": record.to_json()}, indent=1, default=str))
        write_stereo(base.with_suffix(base.suffix + ".wav"), record.t0, said, heard)


def reply_length(steps, run: int) -> float | None:
    """Seconds of audio in a run once it is complete (its LLM output done and
    every chunk synthesized), else None."""
    chunks = {c.chunk for s in steps for c in s.step.commands if isinstance(c, contract.Synthesize) and c.run == run}
    done = {}
    final = False
    for s in steps:
        e = s.step.event
        if getattr(e, "run", None) != run or s.step.dropped:
            continue
        if isinstance(e, contract.TTSChunkDone):
            done[e.chunk] = e.audio_ms
        elif isinstance(e, contract.LLMDone) and e.finish_reason != "tool_calls":
            final = True
    if not final or not chunks or not chunks <= set(done):
        return None
    return sum(done.values()) / 1000


_DATE_RX = re.compile(r"\b(\d{4}-\d{2}-\d{2})\b")


def clock_mismatch(now: str, steps) -> str:
    """"" if the stack's date (from the first prompt's system message) is the
    scenario's pinned date, or nothing says; else what to do about it."""
    want = dt.datetime.fromisoformat(now).date().isoformat()
    for s in steps:
        for c in s.step.commands:
            if isinstance(c, contract.StartLLM):
                system = next((m.content for m in c.messages if m.role == "system"), "")
                found = _DATE_RX.search(system)
                if found and found.group(1) != want:
                    return f"the stack's clock says {found.group(1)} but the scenario is pinned to {now}: start the stack with PARLEY_NOW={now}"
                return ""
    return ""


def write_stereo(path: Path, t0: float, said: list[tuple[float, np.ndarray]], heard: Heard) -> None:
    """Left: what the caller said; right: what it heard; 16 kHz, on the caller's clock."""
    end = max([t + len(p) / RATE for t, p in said] + [t + len(p) / heard.rate for t, p in heard.frames] + [t0])
    n = int((end - t0) * RATE) + RATE // 10
    out = np.zeros((n, 2), np.int16)
    for t, pcm in said:
        k = int((t - t0) * RATE)
        seg = pcm[: max(0, n - k)]
        out[k : k + len(seg), 0] = seg
    for t, pcm in heard.frames:
        pcm16 = pcm if heard.rate == RATE else (np.clip(soxr.resample(pcm.astype(np.float32) / 32768, heard.rate, RATE), -1, 1) * 32767).astype(np.int16)
        k = int((t - t0) * RATE)
        seg = pcm16[: max(0, n - k)]
        out[k : k + len(seg), 1] = seg
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(out.astype("<i2").tobytes())
