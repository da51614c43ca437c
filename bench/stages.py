"""Where a turn's time goes, seen from outside the services.

The orchestrator publishes every reducer step of every session on
``parley.obs.<session>`` (the gateway's latency notices are built from the
same stream, but a Twilio caller never sees them: Twilio has no channel for
them). ``Tap`` subscribes to all of them from a thread of the benchmark
process and keeps each raw message with its arrival time; ``turns`` then lines
each reply up with the load generator's caller (matched by the
``bench_call`` stream parameter, or the session id for ``/ws/pcm``) and splits
the caller's voice-to-voice into stages. Event times (``at``) are the
producing service's ``time.time()``; the caller's are ``time.monotonic()`` in
the load generator, converted with the offset it recorded.

    caller's last speech frame sent
      --endpoint--> SpeechStopped.at   (ASR: PARLEY_ASR_SILENCE_MS of silence seen by the VAD, VAD_STOP_MS)
      --asr-->      TranscriptFinal.at (fixed: 150 ms)
      --orch-->     that step seen on parley.obs (reduced, stored, logged)
      --llm-->      first LLMToken.at  (fixed: 200 ms)
      --tts-->      first TTSChunkStarted.at (fixed: 100 ms after the first text)
      --deliver-->  first agent audio received by the caller

The steps are also the session logs the reducer benchmark replays.
"""

from __future__ import annotations

import asyncio
import threading
import time

import os

from parley import bus, contract, subjects
from parley_asr.settings import Settings as AsrSettings

# The VAD's stop: the ASR's silence setting, as the stack under test gets it.
VAD_STOP_MS = AsrSettings.from_env({k: v for k, v in os.environ.items() if k == "PARLEY_ASR_SILENCE_MS"}).silence_ms
FLOOR_MS = {"endpoint": VAD_STOP_MS, "asr": 150.0, "orch": 0.0, "llm": 200.0, "tts": 100.0, "deliver": 0.0}
STAGES = tuple(FLOOR_MS)


class Tap:
    """Every ``parley.obs.>`` message, with its arrival time, from a background thread."""

    def __init__(self, nats_url: str):
        self.url = nats_url
        self.raw: list[tuple[float, bytes]] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Tap":
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("could not subscribe to parley.obs.>")
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)

    def _run(self) -> None:
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        nc = await bus.connect(self.url, name="bench-tap")
        async def on_msg(msg) -> None:
            self.raw.append((time.time(), msg.data))

        await nc.subscribe(f"{subjects.PREFIX}.obs.*", cb=on_msg, pending_msgs_limit=1_000_000, pending_bytes_limit=1 << 30)
        await nc.flush()
        self._ready.set()
        await self._stop.wait()
        await nc.drain()

    def take(self) -> list[tuple[float, contract.Step]]:
        """The steps received so far (decoded), and forget them."""
        raw, self.raw = self.raw, []
        out = []
        for at, data in raw:
            try:
                out.append((at, contract.decode_step(data)))
            except (contract.DecodeError, contract.ValidationError):
                pass
        return out


def by_session(steps: list[tuple[float, contract.Step]]) -> dict[str, list[tuple[float, contract.Step]]]:
    out: dict[str, list] = {}
    for seen, step in steps:
        out.setdefault(step.event.session, []).append((seen, step))
    for v in out.values():
        v.sort(key=lambda x: x[1].index)
    return out


def replies(steps: list[tuple[float, contract.Step]]) -> list[dict]:
    """Per run answering the caller's speech: the stage times (wall clock s)."""
    out: list[dict] = []
    runs: dict[int, dict] = {}
    stopped = final = None
    for seen, step in steps:
        e = step.event
        if step.dropped:
            continue
        if isinstance(e, contract.SpeechStopped):
            stopped = e.at
        elif isinstance(e, contract.TranscriptFinal):
            final = e.at
            if e.speech_end_at:
                stopped = e.speech_end_at
        for cmd in step.commands:
            if isinstance(cmd, contract.StartLLM) and cmd.step == 0 and cmd.run not in runs and isinstance(e, contract.TranscriptFinal):
                runs[cmd.run] = r = {"run": cmd.run, "stopped": stopped, "final": final, "reduced": seen}
                out.append(r)
        run = runs.get(getattr(e, "run", None))
        if run is None:
            continue
        if isinstance(e, contract.LLMToken):
            run.setdefault("token", e.at)
        elif isinstance(e, contract.TTSChunkStarted):
            run.setdefault("audio", e.at)
    return out


def session_of_call(sessions: dict[str, list]) -> dict[str, str]:
    """bench_call parameter -> session id (Twilio callers do not learn their session)."""
    out = {}
    for session, steps in sessions.items():
        for _, step in steps:
            if isinstance(step.event, contract.SessionStarted):
                call = step.event.params.get("bench_call")
                if call is not None:
                    out[call] = session
                break
    return out


def split(turn_end_wall: float, first_media_wall: float, r: dict) -> dict[str, float] | None:
    """One turn's stages in ms, or None if a time is missing."""
    keys = ("stopped", "final", "reduced", "token", "audio")
    if any(r.get(k) is None for k in keys):
        return None
    points = [turn_end_wall] + [r[k] for k in keys] + [first_media_wall]
    return {name: (b - a) * 1000 for name, a, b in zip(STAGES, points, points[1:])}


def match(reps: list[dict], speech_end_wall: float, first_media_wall: float) -> dict | None:
    """The run whose audio the caller heard first after this utterance: the
    latest to start its audio before that moment, among runs answering it."""
    cands = [r for r in reps if r.get("audio") and r.get("final") and r["final"] >= speech_end_wall and r["audio"] <= first_media_wall + 0.005]
    return max(cands, key=lambda r: r["audio"]) if cands else None


def barge_ins(steps: list[tuple[float, contract.Step]]) -> list[dict]:
    """Each barge-in: when the VAD heard the caller over the agent (SpeechStarted
    that paused playback) and when the reducer cancelled the run (FlushPlayback)."""
    out: list[dict] = []
    current: dict | None = None
    for seen, step in steps:
        e = step.event
        names = {type(c).__name__ for c in step.commands}
        if isinstance(e, contract.SpeechStarted) and "PausePlayback" in names:
            current = {"speech_started": e.at, "paused_seen": seen}
            out.append(current)
        elif current is not None and "FlushPlayback" in names and "flushed" not in current:
            current["flushed"] = e.at
            current["flushed_seen"] = seen
            current["why"] = type(e).__name__
    return out

