"""The per-turn stage split computed from reducer steps."""

from parley import contract as c
from parley_gateway.latency import TurnLatency

S = "lat"


def step(event, *commands, dropped=""):
    return c.Step(index=0, event=event, state_from="A", state_to="B", commands=tuple(commands), dropped=dropped)


def test_stage_split_of_an_answered_turn():
    lat = TurnLatency()
    lat.on_step(step(c.SpeechStarted(session=S, at=9.0, utterance=0)))
    lat.on_step(step(c.SpeechStopped(session=S, at=10.0, utterance=0, speech_end_at=9.45)))
    final = c.TranscriptFinal(session=S, at=10.5, utterance=0, text="hi", speech_end_at=10.0)
    lat.on_step(step(final, c.StartLLM(session=S, run=2, step=0, messages=())))
    lat.on_step(step(c.LLMToken(session=S, at=10.9, run=2, step=0, text="Hello.")))
    lat.on_step(step(c.LLMToken(session=S, at=11.0, run=2, step=0, text=" "), c.Synthesize(session=S, run=2, chunk=0, text="Hello.")))
    assert lat.on_step(step(c.TTSChunkStarted(session=S, at=11.2, run=2, chunk=0))) is None  # no frame out yet
    split = lat.on_first_frame(2, 11.25)
    assert split == {
        "type": "latency", "run": 2, "endpoint_ms": 550, "asr_ms": 500, "decide_ms": 0, "llm_ttft_ms": 400,
        "chunk_ms": 100, "tts_ms": 200, "playout_ms": 50, "voice_to_voice_ms": 1800,
    }
    assert lat.on_first_frame(2, 12.0) is None  # once per run
    assert round(lat.barge_in_reaction(9.4), 3) == 0.4


def test_a_greeting_has_no_voice_to_voice():
    lat = TurnLatency()
    lat.on_step(step(c.SessionStarted(session=S, at=1.0), c.Synthesize(session=S, run=1, chunk=0, text="Hi.")))
    assert lat.on_first_frame(1, 1.2) is None  # the TTS step comes round by way of the orchestrator
    split = lat.on_step(step(c.TTSChunkStarted(session=S, at=1.1, run=1, chunk=0)))
    assert split["voice_to_voice_ms"] is None and split["tts_ms"] == 100


def test_dropped_steps_are_ignored():
    lat = TurnLatency()
    lat.on_step(step(c.SpeechStarted(session=S, at=5.0, utterance=0), dropped="rejected"))
    assert lat.last_speech_start is None
