"""Fixtures shared by the cross-service tests: a real nats-server per test module."""

from __future__ import annotations

import pytest

from parley.natsd import NatsServer, free_port


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory):
    with NatsServer(free_port(), tmp_path_factory.mktemp("nats")) as server:
        yield server


@pytest.fixture
def nats_url(nats_server) -> str:
    return nats_server.url
