"""Settings come from the environment once, with the documented defaults."""

from __future__ import annotations

import pytest

from parley_asr.settings import DEFAULT_FIXED_TRANSCRIPT, Settings


def test_defaults():
    s = Settings.from_env({})
    assert (s.http_host, s.http_port, s.providers, s.silence_ms, s.fixed_delay_ms) == ("127.0.0.1", 8081, "real", 500, 150)
    assert s.fixed_transcript == DEFAULT_FIXED_TRANSCRIPT and s.idle_release_s == 120 and s.final_lane
    assert s.endpointing().silence_windows == 16
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
        }
    )
    assert (s.nats_url, s.http_port, s.fixed, s.fixed_transcript, s.worker_id, s.final_lane) == (
        "nats://127.0.0.1:1", 9999, True, "hello", "asr-7", False,
    )  # fmt: skip
    assert s.endpointing().silence_windows == 10


def test_unknown_provider_mode_is_refused():
    with pytest.raises(ValueError):
        Settings.from_env({"PARLEY_PROVIDERS": "fake"})
