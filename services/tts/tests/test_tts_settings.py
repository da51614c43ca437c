"""Settings come from the environment once, with the service's defaults."""

from __future__ import annotations

import pytest

from parley_tts.settings import Settings


def test_defaults_and_overrides_from_the_environment():
    s = Settings.from_env({})
    assert (s.http_host, s.http_port, s.providers, s.fixed) == ("127.0.0.1", 8083, "real", False)
    s = Settings.from_env(
        {"NATS_URL": "nats://n:1", "PARLEY_HTTP_PORT": "9000", "PARLEY_PROVIDERS": "fixed", "PARLEY_TTS_THREADS": "1", "PARLEY_TTS_WORKER_ID": "w1"}
    )
    assert (s.nats_url, s.http_port, s.fixed, s.synth_threads, s.worker_id) == ("nats://n:1", 9000, True, 1, "w1")


def test_unknown_providers_are_refused():
    with pytest.raises(ValueError, match="PARLEY_PROVIDERS"):
        Settings.from_env({"PARLEY_PROVIDERS": "fake"})
