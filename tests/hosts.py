"""Several "hosts" on this machine: Linux network namespaces on one bridge.

``Hosts(3)`` makes namespaces ``<tag>h1``.. with their own loopback and an
``eth0`` (a veth pair) on a bridge in the root namespace: host k is
``10.<net>.0.k``, the root namespace (the test, the callers) is
``10.<net>.0.254``. A process started with ``host.run(argv)`` lives in that
host's network: it sees only its own ``127.0.0.1``, reaches the others over
the bridge, and listens on the host's address. Killing every process of one
host is what a host that dies looks like to the rest (its TCP peers see the
connections reset or go silent).

Needs root and iproute2 (``ip netns``, veth, bridge): ``available()`` says
whether this machine allows it. Everything made is removed by ``close()``,
even after a failure.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def available() -> bool:
    if shutil.which("ip") is None or os.geteuid() != 0:
        return False
    probe = f"pp{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
    except subprocess.CalledProcessError:
        return False
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return True


@dataclass(frozen=True)
class Host:
    name: str  # "h1"
    netns: str
    ip: str

    def prefix(self) -> list[str]:
        """Put before a command to run it on this host."""
        return ["ip", "netns", "exec", self.netns]


class Hosts:
    def __init__(self, n: int):
        tag = secrets.token_hex(2)
        self.bridge = f"brp{tag}"
        net = 100 + int(tag, 16) % 100  # 10.100-199.0.0/24: unlikely to meet another test's
        self.root_ip = f"10.{net}.0.254"
        self.hosts = [Host(f"h{k}", f"p{tag}h{k}", f"10.{net}.0.{k}") for k in range(1, n + 1)]
        self._made: list[tuple[str, ...]] = []

    def __getitem__(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def open(self) -> "Hosts":
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            self._made.append(("link", "del", self.bridge))
            _ip("link", "set", self.bridge, "up")
            _ip("addr", "add", f"{self.root_ip}/24", "dev", self.bridge)
            for h in self.hosts:
                _ip("netns", "add", h.netns)
                self._made.append(("netns", "del", h.netns))
                veth = f"v{h.netns}"[:15]
                _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", h.netns)
                _ip("link", "set", veth, "master", self.bridge, "up")
                _ip("-n", h.netns, "link", "set", "lo", "up")
                _ip("-n", h.netns, "link", "set", "eth0", "up")
                _ip("-n", h.netns, "addr", "add", f"{h.ip}/24", "dev", "eth0")
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for args in reversed(self._made):  # namespaces first (their veths go with them), then the bridge
            subprocess.run(["ip", *args], capture_output=True)
        self._made = []

    def __enter__(self) -> "Hosts":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()
