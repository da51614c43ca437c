"""Settings come from the environment once, with the documented defaults and errors that name the variable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from parley import config
from parley.settings import SettingsError
from parley_asr.settings import DEFAULT_FIXED_TRANSCRIPT, Settings

README = Path(__file__).resolve().parent.parent / "README.md"


def test_defaults():
    s = Settings.from_env({})
    assert (s.http_host, s.http_port, s.providers, s.silence_ms, s.fixed_delay_ms) == ("127.0.0.1", 8081, "real", 200, 150)
    assert s.fixed_transcript == DEFAULT_FIXED_TRANSCRIPT and s.idle_release_s == 120 and s.final_lane
    assert s.endpointing().silence_windows == 7  # 224 ms
    assert s.eot and s.eot_model and s.fixed_eot == 1.0
    assert Settings.from_env({}).worker_id != s.worker_id  # two workers never share an id


def test_environment_overrides():
    s = Settings.from_env(
        {
            "NATS_URL": "nats://127.0.0.1:1",
            "PARLEY_HTTP_PORT": "9999",
            "PARLEY_PROVIDERS": "fixed",
            "PARLEY_ASR_SILENCE_MS": "300",
            "PARLEY_FIXED_TRANSCRIPT": "hello",
            "PARLEY_ASR_WORKER_ID": "asr-7",
            "PARLEY_ASR_FINAL_LANE": "0",
            "PARLEY_ASR_FIXED_EOT": "-1",
            "PARLEY_ASR_WHISPER_WINDOW_MS": "30000",
        }
    )
    assert (s.nats_url, s.http_port, s.fixed, s.fixed_transcript, s.worker_id, s.final_lane) == (
        "nats://127.0.0.1:1", 9999, True, "hello", "asr-7", False,
    )  # fmt: skip
    assert s.endpointing().silence_windows == 10
    assert s.fixed_eot == -1 and s.whisper_window_ms == 30000
    assert s.eot and not s.eot_model  # fixed mode never runs the end-of-turn model


@pytest.mark.parametrize(
    "env, message",
    [
        ({"PARLEY_ASR_SILENCE_MS": "soon"}, "PARLEY_ASR_SILENCE_MS must be a number from 32 to 5000, not 'soon'"),
        ({"PARLEY_ASR_SILENCE_MS": "10"}, "PARLEY_ASR_SILENCE_MS must be a number from 32 to 5000, not '10'"),
        ({"PARLEY_ASR_THRESHOLD": "abc"}, "PARLEY_ASR_THRESHOLD must be a number from 0.05 to 0.95, not 'abc'"),
        ({"PARLEY_ASR_THRESHOLD": "5"}, "PARLEY_ASR_THRESHOLD must be a number from 0.05 to 0.95, not '5'"),
        ({"PARLEY_ASR_EOT_THREADS": "1.5"}, "PARLEY_ASR_EOT_THREADS must be a whole number from 1 to 16, not '1.5'"),
        ({"PARLEY_ASR_WHISPER_THREADS": "0"}, "PARLEY_ASR_WHISPER_THREADS must be a whole number from 1 to 16, not '0'"),
        ({"PARLEY_ASR_EOT": "maybe"}, "PARLEY_ASR_EOT must be 1 or 0"),
        ({"PARLEY_ASR_VAD_BATCH": "flase"}, "PARLEY_ASR_VAD_BATCH must be 1 or 0 (true/false, yes/no, on/off), not 'flase'"),
        ({"PARLEY_ASR_FIXED_EOT": "2"}, "PARLEY_ASR_FIXED_EOT must be a number from -1 to 1, not '2'"),
        ({"PARLEY_HTTP_PORT": "99999"}, "PARLEY_HTTP_PORT must be a whole number from 1 to 65535, not '99999'"),
        ({"PARLEY_ASR_WORKER_ID": "asr.laptop"}, "PARLEY_ASR_WORKER_ID must be 1 to 64 letters"),
    ],
)
def test_a_bad_value_names_its_variable(env, message):
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.from_env(env)


def test_every_bad_value_is_named_at_once():
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"PARLEY_ASR_THRESHOLD": "abc", "PARLEY_ASR_START_MS": "1", "PARLEY_PROVIDERS": "fake"})
    assert {p.variable for p in refused.value.problems} == {"PARLEY_ASR_THRESHOLD", "PARLEY_ASR_START_MS", "PARLEY_PROVIDERS"}


def test_the_readme_table_is_the_code():
    """The README's settings table is generated from the declarations; a new knob, a new default or range shows there."""
    text = README.read_text()
    assert "<!-- parley config asr -->" in text
    assert config.regenerate(text) == text, "regenerate: uv run parley config --write services/asr/README.md"
