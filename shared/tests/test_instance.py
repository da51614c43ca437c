"""Ids built from the environment are one NATS subject token, whatever the host is called."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parley import subjects
from parley.instance import configured_id, instance_id, token


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


def test_a_configured_id_is_checked_and_the_error_names_the_variable():
    assert configured_id({"PARLEY_ASR_WORKER_ID": "asr-7"}, "PARLEY_ASR_WORKER_ID", "asr") == "asr-7"
    assert configured_id({}, "PARLEY_ASR_WORKER_ID", "asr").startswith("asr-")
    with pytest.raises(ValueError, match=r"PARLEY_ASR_WORKER_ID .*'asr\.laptop\.local'"):
        configured_id({"PARLEY_ASR_WORKER_ID": "asr.laptop.local"}, "PARLEY_ASR_WORKER_ID", "asr")
