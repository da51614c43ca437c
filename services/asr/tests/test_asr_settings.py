"""Settings come from the environment once, with the documented defaults and clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from parley_asr.settings import DEFAULT_FIXED_TRANSCRIPT, KNOBS, Settings

README = Path(__file__).resolve().parent.parent / "README.md"


def test_defaults():
    s = Settings.from_env({})
    assert (s.http_host, s.http_port, s.providers, s.silence_ms, s.fixed_delay_ms) == ("127.0.0.1", 8081, "real", 500, 150)
    assert s.fixed_transcript == DEFAULT_FIXED_TRANSCRIPT and s.idle_release_s == 120 and s.final_lane
    assert s.endpointing().silence_windows == 16  # 512 ms
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
        ({"PARLEY_ASR_SILENCE_MS": "soon"}, "PARLEY_ASR_SILENCE_MS must be a number"),
        ({"PARLEY_ASR_SILENCE_MS": "10"}, "PARLEY_ASR_SILENCE_MS must be between 32 and 5000"),
        ({"PARLEY_ASR_EOT_THREADS": "1.5"}, "PARLEY_ASR_EOT_THREADS must be an integer"),
        ({"PARLEY_ASR_EOT": "maybe"}, "PARLEY_ASR_EOT must be 1 or 0"),
        ({"PARLEY_ASR_FIXED_EOT": "2"}, "PARLEY_ASR_FIXED_EOT must be between -1 and 1"),
    ],
)
def test_a_bad_value_names_its_variable(env, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Settings.from_env(env)


def test_unknown_provider_mode_is_refused():
    with pytest.raises(ValueError):
        Settings.from_env({"PARLEY_PROVIDERS": "fake"})


def test_every_knob_is_documented_with_its_default():
    """The README's settings table lists every knob, with the default the code has."""
    rows = {}
    for line in README.read_text().splitlines():
        m = re.match(r"\| `(PARLEY_[A-Z_]+)` \| `([^`]*)` \|", line)
        if m:
            rows[m.group(1)] = m.group(2)
    defaults = Settings()
    for knob in KNOBS:
        assert knob.env in rows, f"{knob.env} is not in the README's settings table"
        value = getattr(defaults, knob.field)
        if isinstance(value, bool):
            shown = "1" if value else "0"
        elif isinstance(value, float):
            shown = f"{value:g}"
        else:
            shown = str(value)
        assert rows[knob.env] == shown, (knob.env, rows[knob.env], shown)
