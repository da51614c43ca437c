"""The whole Parley stack as real processes, for end-to-end tests.

``Stack`` starts a nats-server and the four services (``python -m parley_*``)
on free ports, waits until every /healthz answers 200, and stops them all.
Logs go to files under the stack's directory, so a failing test can show them.

Credentials come automatically, as under ``make run``: each service its own
nkey with its own permissions (``parley.natsauth``, generated under the
stack's directory), and the gateway an API key (``stack.api_key``) that
mints session tokens (``stack.pcm_url()``). The test process itself connects
as a password user with every permission (``stack.nats_url`` carries it), a
user only test stacks have.

Every test stack runs on a pinned clinic clock (PARLEY_NOW, PARLEY_TIMEZONE:
see parley.clock), a weekday morning in New York unless the test picks another
day, so no test depends on the machine's date or zone; ``pin`` moves it.
``hostnames`` runs chosen services under another host name (a UTS namespace:
root and util-linux's ``unshare``), like a Mac's ``name.local``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from parley import fakeclock, natsauth
from parley.natsd import NatsCluster, NatsServer, free_port

ROOT = Path(__file__).resolve().parent.parent


SERVICES = {
    "media-gateway": "parley_gateway",
    "asr": "parley_asr",
    "orchestrator": "parley_orchestrator",
    "tts": "parley_tts",
}

# The clinic's clock in test stacks: a Wednesday, a Saturday and a Sunday
# morning (the clinic is open Monday to Friday), in a zone that is not UTC.
WEEKDAY = "2026-11-25T09:30:00"
SATURDAY = "2026-11-28T09:30:00"
SUNDAY = "2026-11-29T09:30:00"
CLINIC_ZONE = "America/New_York"

# `python -c _AS_HOST NAME PROGRAM ARGS...`, inside `unshare -u`: PROGRAM under host name NAME.
_AS_HOST = "import os, socket, sys; socket.sethostname(sys.argv[1].encode()); os.execv(sys.argv[2], sys.argv[2:])"


def can_rename_host() -> bool:
    """Whether this machine lets a test run a process under another host name."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-u", sys.executable, "-c", _AS_HOST, "probe.local", sys.executable, "-c", ""], capture_output=True)
    return probe.returncode == 0


@dataclass
class Stack:
    root: Path
    env: dict[str, str] = field(default_factory=dict)
    services: tuple[str, ...] = tuple(SERVICES)
    # More than one process of a service: {"orchestrator": 2} starts
    # "orchestrator" and "orchestrator#2" (each with its own port and log).
    replicas: dict[str, int] = field(default_factory=dict)
    # Scheduling priority (nice value) per service, every replica of it, set
    # as each process starts (a negative one needs root or CAP_SYS_NICE):
    # {"media-gateway": -5} (bench/run.py's BENCH_NICE).
    nice: dict[str, int] = field(default_factory=dict)
    now: str = WEEKDAY  # PARLEY_NOW for the services (the clinic's calendar)
    hostnames: dict[str, str] = field(default_factory=dict)  # service -> the host name it runs under
    # 3: a three-node NATS cluster (nodes "nats-n1".."nats-n3", killable like
    # services) with every stream and KV bucket kept on all three.
    nats_nodes: int = 1
    cluster: NatsCluster | None = None
    # Several "hosts" (tests/hosts.py: network namespaces): which host each
    # process runs on (key -> host name; unplaced ones stay in this one) and
    # each NATS node's host. "host-h2" then kills or restarts all of h2.
    hosts: object | None = None  # hosts.Hosts
    placement: dict[str, str] = field(default_factory=dict)
    nats_placement: list[str] = field(default_factory=list)
    addr: dict[str, str] = field(default_factory=dict)  # key -> the address it listens on
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    nats: NatsServer | None = None
    secrets: natsauth.Secrets | None = None
    api_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    test_password: str = field(default_factory=lambda: secrets.token_urlsafe(16))

    def __post_init__(self) -> None:
        self.api_key = self.env.get("PARLEY_API_KEY", self.api_key)

    @property
    def gateway(self) -> str:
        return f"http://{self.addr.get('media-gateway', '127.0.0.1')}:{self.ports['media-gateway']}"

    @property
    def gateway_ws(self) -> str:
        return f"ws://{self.addr.get('media-gateway', '127.0.0.1')}:{self.ports['media-gateway']}"

    @property
    def nats_url(self) -> str:
        """The test process's own way in (a user with every permission)."""
        return ",".join(f"nats://test:{self.test_password}@{n.host}:{n.port}" for n in self._nats_nodes())

    def _nats_nodes(self) -> list[NatsServer]:
        if self.cluster is not None:
            return self.cluster.nodes
        assert self.nats is not None
        return [self.nats]

    @property
    def services_nats_url(self) -> str:
        return ",".join(n.url for n in self._nats_nodes())

    def session_token(self, **params: str) -> str:
        """A fresh one-time session token from ``POST /api/sessions``."""
        r = httpx.post(f"{self.gateway}/api/sessions", json={"params": params} if params else {},
                       headers={"Authorization": f"Bearer {self.api_key}"}, timeout=10, trust_env=False)
        r.raise_for_status()
        return r.json()["token"]

    def pcm_url(self, query: str = "", **params: str) -> str:
        """``/ws/pcm`` with a fresh token; ``query`` is appended as it is
        (parameters in the URL), ``params`` are bound to the token."""
        url = f"{self.gateway_ws}/ws/pcm?token={self.session_token(**params)}"
        return url + (f"&{query.lstrip('?&')}" if query else "")

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, timeout: float = 180) -> "Stack":
        self.root.mkdir(parents=True, exist_ok=True)
        test_user = natsauth.user_block("test", user="test", password=self.test_password)
        self.secrets = natsauth.ensure(self.root / "secrets", ROOT / "deploy" / "nats.conf", extra_users=[test_user])
        if self.nats_placement:
            self.nats_nodes = len(self.nats_placement)
        if self.nats_nodes > 1:
            where = [(self.hosts[h].ip, tuple(self.hosts[h].prefix())) for h in self.nats_placement] if self.nats_placement else None
            self.cluster = NatsCluster(self.root / "nats", self.nats_nodes, self.secrets.config, hosts=where).start(log_dir=self.root)
            self.nats = self.cluster.nodes[0]
            self.env = {"PARLEY_NATS_REPLICAS": str(self.nats_nodes), **self.env}
        else:
            self.nats = NatsServer(free_port(), self.root / "nats", self.secrets.config).start(log=self.root / "nats.log")
        for name in self.services:
            for k in range(self.replicas.get(name, 1)):
                self.start_service(name, f"#{k + 1}" if k else "")
        self.wait_healthy(timeout)
        return self

    def start_service(self, name: str, instance: str = "") -> subprocess.Popen:
        key = name + instance
        port = free_port()
        self.ports[key] = port
        assert self.nats is not None and self.secrets is not None
        env = {
            **os.environ,
            "NATS_URL": self.services_nats_url,
            natsauth.SEED_FILE_ENV: str(self.secrets.seed_file(natsauth.SERVICE_ROLES[name])),
            "PARLEY_API_KEY": self.api_key,
            "PARLEY_HTTP_HOST": self.addr.setdefault(key, self._host_ip(key)),
            "PARLEY_HTTP_PORT": str(port),
            "PARLEY_DATA_DIR": str(self.root / "data"),
            "PARLEY_LOG_LEVEL": "INFO",
            "HF_HUB_OFFLINE": "1",
            # The agent's voice says the same text the same way every run, so what the test
            # caller's Whisper hears of it does not change from run to run.
            "PARLEY_TTS_STEADY": "1",
            "PARLEY_NOW": self.now,
            "PARLEY_TIMEZONE": CLINIC_ZONE,
            **fakeclock.child_env(os.environ),  # one clock for the stack under faketime
            **self.env,
        }
        argv = [sys.executable, "-m", SERVICES[name]]
        if key in self.placement:
            argv = [*self.hosts[self.placement[key]].prefix(), *argv]
        if name in self.hostnames:
            argv = ["unshare", "-u", sys.executable, "-c", _AS_HOST, self.hostnames[name], *argv]
        out = open(self.root / f"{key}.log", "ab")
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[key] = proc
        if name in self.nice:
            # Before the interpreter has started any thread: its threads inherit it.
            os.setpriority(os.PRIO_PROCESS, proc.pid, self.nice[name])
        return proc

    def _host_ip(self, key: str) -> str:
        return self.hosts[self.placement[key]].ip if key in self.placement else "127.0.0.1"

    def on_host(self, host: str) -> tuple[list[str], list[str]]:
        """The processes and the NATS nodes placed on ``host``."""
        keys = [k for k, h in self.placement.items() if h == host and k in self.procs]
        nodes = [f"nats-n{i + 1}" for i, h in enumerate(self.nats_placement) if h == host]
        return keys, nodes

    def kill(self, key: str) -> None:
        """kill -9 one process (``name`` or ``name#k``, or a NATS node
        ``nats-n2``, or everything on a host ``host-h2``), as a crash would."""
        if key.startswith("host-"):
            keys, nodes = self.on_host(key.removeprefix("host-"))
            for k in [*keys, *nodes]:
                self.kill(k)
            return
        if key.startswith("nats-") and self.cluster is not None:
            self.cluster.kill(key.removeprefix("nats-"))
            return
        proc = self.procs[key]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def restart(self, key: str, timeout: float = 60) -> None:
        """Start a killed process again (a supervisor's job), and wait for it."""
        if key.startswith("host-"):
            keys, nodes = self.on_host(key.removeprefix("host-"))
            for k in nodes:
                self.restart(k, timeout)
            for k in keys:
                name, _, n = k.partition("#")
                self.start_service(name, f"#{n}" if n else "")
            self.wait_healthy(timeout)
            return
        if key.startswith("nats-") and self.cluster is not None:
            self.cluster.restart(key.removeprefix("nats-"), timeout)
            return
        name, _, k = key.partition("#")
        self.start_service(name, f"#{k}" if k else "")
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        pending = set(self.procs)
        while pending:
            for key in list(pending):
                proc = self.procs[key]
                if proc.poll() is not None:
                    raise RuntimeError(f"{key} exited with {proc.returncode}:\n{self.log(key)[-3000:]}")
                try:
                    r = httpx.get(f"http://{self.addr.get(key, '127.0.0.1')}:{self.ports[key]}/healthz", timeout=1, trust_env=False)
                    if r.status_code == 200:
                        # the answer must be this service's: another server on the port is a fault, said now
                        service = r.json().get("service")
                        if service != next(name for name in SERVICES if key.startswith(name)):  # "asr2", "orchestrator#2"
                            raise RuntimeError(f"{key}'s port {self.ports[key]} is answered by another server ({service or r.text[:80]!r})")
                        pending.discard(key)
                except (httpx.HTTPError, ValueError):
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"not healthy in {timeout}s: {sorted(pending)}\n" + "\n".join(self.log(k)[-1500:] for k in pending))
            time.sleep(0.2)

    def pin(self, now: str) -> None:
        """Move the clinic's clock: restart the orchestrator(s) with PARLEY_NOW=now."""
        if now == self.now:
            return
        self.now = now
        for key in [k for k in self.procs if k.startswith("orchestrator")]:
            proc = self.procs.pop(key)
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            self.start_service("orchestrator", key.removeprefix("orchestrator"))
        self.wait_healthy()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self.cluster:
            self.cluster.stop()
        elif self.nats:
            self.nats.stop()

    def __enter__(self) -> "Stack":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def violations(self) -> list[str]:
        """Permission violations nats-server logged: a service using a subject
        its role (parley.natsauth.ROLES) does not allow."""
        logs = [self.log(f"nats-{n.name}") for n in self.cluster.nodes] if self.cluster else [self.log("nats")]
        return [line for log in logs for line in log.splitlines() if "Violation" in line]

    def __exit__(self, exc_type, *exc) -> None:
        self.stop()
        if exc_type is None and (bad := self.violations()):
            raise AssertionError("services used subjects their NATS permissions do not allow (parley.natsauth):\n" + "\n".join(bad[:20]))
