"""Per-turn latency, split by stage, from what the gateway sees.

The gateway receives every reducer step of its sessions (``parley.obs.<s>``)
and knows when each run's first frame actually left. That is enough to split a
turn's voice-to-voice latency into stages:

    speech end --endpoint--> VAD's stop --asr--> final transcript --decide--> StartLLM --llm--> first token
    --chunk--> first Synthesize --tts--> first audio --playout--> first frame out

and to measure barge-in reaction: from the caller's speech start to the moment
the cancelled run's audio stopped leaving the gateway. Pure: times come in as
arguments (wall clock seconds, the same clock as the events' ``at``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from parley import contract


@dataclass
class _Turn:
    speech_end: float | None = None  # the voiced audio ended
    vad_stop: float | None = None  # the VAD decided it had (after its silence window)
    final: float | None = None
    llm_start: float | None = None
    first_token: float | None = None
    first_synth: float | None = None
    first_audio: float | None = None
    first_frame: float | None = None
    reported: bool = False


ONSET_TO_START_S = 1.0  # a SpeechStarted this soon after a SpeechOnset is the same sound


@dataclass
class TurnLatency:
    turns: dict[int, _Turn] = field(default_factory=dict)
    last_speech_start: float | None = None
    last_speech_end: float | None = None
    last_vad_stop: float | None = None
    last_final: float | None = None
    _onset: float | None = None

    def on_step(self, step: contract.Step) -> dict | None:
        """Feed one reducer step; returns a run's split if this step completed it."""
        e = step.event
        if step.dropped:
            return None
        if isinstance(e, contract.SpeechOnset):
            # The VAD's earliest sign of the voice (it may pause playback): the
            # speech start, if the utterance follows.
            self.last_speech_start = self._onset = e.at
        elif isinstance(e, contract.SpeechStarted):
            onset, self._onset = self._onset, None
            self.last_speech_start = onset if onset is not None and 0 <= e.at - onset < ONSET_TO_START_S else e.at
        elif isinstance(e, contract.SpeechStopped):
            self.last_vad_stop = e.at
            self.last_speech_end = e.speech_end_at or e.at
        elif isinstance(e, contract.TranscriptFinal):
            self.last_final = e.at
        for cmd in step.commands:
            if isinstance(cmd, contract.StartLLM) and cmd.step == 0 and cmd.run not in self.turns:
                # A run that answers speech just heard (not a key press or a timer's re-prompt).
                answers_speech = isinstance(e, (contract.TranscriptFinal, contract.SpeechStopped)) or (
                    isinstance(e, contract.TimerFired) and e.name == "endpoint"
                )
                self.turns[cmd.run] = _Turn(
                    speech_end=self.last_speech_end if answers_speech else None,
                    vad_stop=self.last_vad_stop if answers_speech else None,
                    final=self.last_final if isinstance(e, contract.TranscriptFinal) or isinstance(e, contract.TimerFired) else None,
                    llm_start=e.at,
                )
            elif isinstance(cmd, contract.Synthesize):
                turn = self.turns.setdefault(cmd.run, _Turn(llm_start=None))
                if turn.first_synth is None:
                    turn.first_synth = e.at
        run = getattr(e, "run", None)
        turn = self.turns.get(run) if run is not None else None
        if turn is None:
            return None
        if isinstance(e, contract.LLMToken) and turn.first_token is None:
            turn.first_token = e.at
        elif isinstance(e, contract.TTSChunkStarted) and turn.first_audio is None:
            turn.first_audio = e.at
            return self._report(run, turn)
        return None

    def on_first_frame(self, run: int, at: float) -> dict | None:
        """The run's first frame left the gateway. Its split is returned once
        the TTS's first-audio step has been seen too (audio comes straight
        from TTS, the step by way of the orchestrator: either can be first)."""
        turn = self.turns.get(run)
        if turn is None or turn.first_frame is not None:
            return None
        turn.first_frame = at
        return self._report(run, turn)

    def _report(self, run: int, turn: _Turn) -> dict | None:
        if turn.reported or turn.first_frame is None or turn.first_audio is None:
            return None
        turn.reported = True
        return split(run, turn)

    def barge_in_reaction(self, flushed_at: float) -> float | None:
        """Seconds from the caller's speech start to the flush of the run."""
        if self.last_speech_start is None:
            return None
        return max(0.0, flushed_at - self.last_speech_start)

    def forget(self, run: int) -> None:
        self.turns.pop(run, None)


def _ms(a: float | None, b: float | None) -> int | None:
    return None if a is None or b is None else round((b - a) * 1000)


def split(run: int, t: _Turn) -> dict:
    """The stages of one turn in milliseconds (None where unknown)."""
    answering = t.final is not None and t.speech_end is not None
    return {
        "type": "latency",
        "run": run,
        "endpoint_ms": _ms(t.speech_end, t.vad_stop) if answering else None,
        "asr_ms": _ms(t.vad_stop, t.final) if answering else None,
        "decide_ms": _ms(t.final, t.llm_start) if answering else None,
        "llm_ttft_ms": _ms(t.llm_start, t.first_token),
        "chunk_ms": _ms(t.first_token, t.first_synth),
        "tts_ms": _ms(t.first_synth, t.first_audio),
        "playout_ms": _ms(t.first_audio, t.first_frame),
        "voice_to_voice_ms": _ms(t.speech_end, t.first_frame) if answering else None,
    }
