"""Ids built from the environment are one NATS subject token, whatever the host is called."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parley import subjects
from pydantic import field_validator

from parley.instance import instance_id, token, worker_token
from parley.settings import ServiceSettings, SettingsError, setting


@pytest.mark.parametrize(
    "host, folded",
    [
        ("Johns-MacBook-Pro.local", "johns-macbook-pro-local"),
        ("BUILD.EXAMPLE.COM", "build-example-com"),
        ("jöhns-mäcbook.local", "johns-macbook-local"),
        ("host_1", "host_1"),
        ("...", "host"),
        ("東京", "host"),
        ("a" * 100, "a" * 32),
    ],
)
def test_host_names_fold_into_tokens(host, folded):
    assert token(host) == folded
    worker = instance_id("asr", host=host, pid=4711)
    assert worker.startswith(f"asr-{folded}-4711-")
    assert subjects.asr_alive(worker) == f"parley.asr.alive.{worker}"


@given(st.text(max_size=300), st.integers(min_value=1, max_value=4_194_304))
def test_any_host_name_gives_a_valid_subject_token(host, pid):
    worker = instance_id("tts", host=host, pid=pid)
    assert subjects.session_token(worker) == worker and "." not in worker


class _Worker(ServiceSettings):
    worker_id: str = setting("PARLEY_X_WORKER_ID", None, "", default_factory=lambda: instance_id("x"))
    _token = field_validator("worker_id")(worker_token)


def test_a_configured_id_is_checked_and_the_error_names_the_variable():
    assert _Worker.from_env({"PARLEY_X_WORKER_ID": "x-7"}).worker_id == "x-7"
    assert _Worker.from_env({}).worker_id.startswith("x-")
    with pytest.raises(SettingsError, match=r"PARLEY_X_WORKER_ID must be 1 to 64 letters.*not 'x\.laptop\.local'"):
        _Worker.from_env({"PARLEY_X_WORKER_ID": "x.laptop.local"})
