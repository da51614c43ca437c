"""Fixtures every test directory shares: a real nats-server per test module.

No model is ever fetched from a hub: the models come from installed wheels.
"""

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
