"""Settings come from the environment once, with the service's defaults and errors that name the variable."""

from __future__ import annotations

import re

import pytest

from parley.settings import SettingsError
from parley_tts.settings import Settings


def test_defaults_and_overrides_from_the_environment():
    s = Settings.from_env({})
    assert (s.http_host, s.http_port, s.providers, s.fixed) == ("127.0.0.1", 8083, "real", False)
    s = Settings.from_env(
        {"NATS_URL": "nats://n:1", "PARLEY_HTTP_PORT": "9000", "PARLEY_PROVIDERS": "fixed", "PARLEY_TTS_THREADS": "1", "PARLEY_TTS_WORKER_ID": "w1"}
    )
    assert (s.nats_url, s.http_port, s.fixed, s.synth_threads, s.worker_id) == ("nats://n:1", 9000, True, 1, "w1")


@pytest.mark.parametrize(
    "env, message",
    [
        ({"PARLEY_PROVIDERS": "fake"}, "PARLEY_PROVIDERS must be one of 'real', 'fixed', not 'fake'"),
        ({"PARLEY_TTS_THREADS": "0"}, "PARLEY_TTS_THREADS must be a whole number from 1 to 64, not '0'"),
        ({"PARLEY_TTS_PIECE_MS": "long"}, "PARLEY_TTS_PIECE_MS must be a number from 20 to 5000, not 'long'"),
        ({"PARLEY_TTS_WORKER_ID": "tts 1"}, "PARLEY_TTS_WORKER_ID must be 1 to 64 letters"),
    ],
)
def test_a_bad_value_names_its_variable(env, message):
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.from_env(env)
