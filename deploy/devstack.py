"""The `make run` supervisor: nats-server and the four services as one stack.

Order of business:
1. Read the stack: the services, how many replicas of each
   (``PARLEY_REPLICAS="orchestrator=2,asr=2"``; replica k of a service listens
   on its port + 100·(k-1) and its lines are prefixed ``orchestrator#k``), and
   check every port it will use and every service's settings
   (parley.settings) before starting anything (exit 2 if a setting is
   malformed or a port is taken, naming the variable or the port).
2. Start nats-server from the venv (JetStream, store under var/nats,
   deploy/nats.conf).
3. Start each replica as a child in its own process group, and prefix every
   line it prints with its name (coloured, and JSON logs made compact, on a
   terminal; raw JSON otherwise).
4. Poll each /healthz until it answers 200, printing progress, then print a
   banner with the page's URL and the brain the orchestrator reports.
5. When a child (or nats-server) dies, say so and start it again after a
   backoff that doubles while it keeps dying young; a crash loop is reported
   loudly, every time round. The rest of the stack keeps running.
6. On Ctrl-C, SIGTERM or SIGHUP, stop every process group (SIGTERM, a grace
   period, then SIGKILL) and nats-server.

Signals: the handler only counts (no lock, no I/O); ``signal.set_wakeup_fd``
wakes the one loop, which waits in ``select`` on the children's output pipes
and that wake-up pipe. There are no threads, so a signal handler can never
wait for a lock its own thread holds (the old ``Event.set()`` in the handler
could), and no timed lock waits: under libfaketime those never time out,
because CPython waits on the real monotonic clock for a deadline computed
from the faked one.

The stack is data: ``default_services`` below, or a JSON list given with
``--services`` (the tests run stand-in commands that way). Everything from
``plan`` to ``banner`` is pure; ``Stack`` is the thin shell that does I/O.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "shared"))  # so `python deploy/devstack.py` works outside `uv run` too

from parley import fakeclock, natsauth, natsd  # noqa: E402

# --- the stack, as data ------------------------------------------------------


@dataclass(frozen=True)
class Service:
    name: str
    argv: tuple[str, ...]
    port: int
    port_env: str | None = None  # the variable that moves this service's port
    page: str | None = None  # path of the browser page this service serves, if any
    # Variables (by prefix) only this service may see: secrets stay where they are used.
    private_env: tuple[str, ...] = ()
    base: str = ""  # the service this is a replica of ("" when not replicated)
    replica: int = 1

    @property
    def kind(self) -> str:
        """The service's own name, the same for all its replicas (its data dir)."""
        return self.base or self.name


# name, module, port variable, default port, page, private env prefixes
DEFAULT_SERVICES = (
    ("media-gateway", "parley_gateway", "PARLEY_GATEWAY_PORT", 8080, "/", ("TWILIO_", "PARLEY_API_KEY", "PARLEY_INSPECT_TOKEN")),
    ("asr", "parley_asr", "PARLEY_ASR_PORT", 8081, None, ()),
    ("orchestrator", "parley_orchestrator", "PARLEY_ORCHESTRATOR_PORT", 8082, None, ("LLM_",)),
    ("tts", "parley_tts", "PARLEY_TTS_PORT", 8083, None, ()),
)
NATS_PORT_ENV = "PARLEY_NATS_PORT"
NATS_DEFAULT_PORT = 4222
REPLICAS_ENV = "PARLEY_REPLICAS"
REPLICA_PORT_STEP = 100  # replica k listens on port + 100·(k-1)
MAX_REPLICAS = 16
SELF = "stack"  # the prefix of the supervisor's own lines


def _port(env: Mapping[str, str], name: str | None, default: int) -> int:
    raw = env.get(name, "") if name else ""
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"{name}={raw!r} is not a TCP port")
    return int(raw)


def default_services(env: Mapping[str, str], python: str) -> list[Service]:
    return [
        Service(name, (python, "-m", module), _port(env, port_env, port), port_env, page, private)
        for name, module, port_env, port, page, private in DEFAULT_SERVICES
    ]


def services_from_json(data: object) -> list[Service]:
    """A stack from a JSON list of {name, argv, port, page?, private_env?}."""
    if not isinstance(data, list) or not data:
        raise ValueError("--services must be a non-empty JSON list")
    return [
        Service(
            name=str(item["name"]),
            argv=tuple(str(a) for a in item["argv"]),
            port=int(item["port"]),
            port_env=item.get("port_env"),
            page=item.get("page"),
            private_env=tuple(item.get("private_env", ())),
        )
        for item in data
    ]


def nats_port(env: Mapping[str, str]) -> int:
    return _port(env, NATS_PORT_ENV, NATS_DEFAULT_PORT)


def parse_replicas(text: str, names: Sequence[str]) -> dict[str, int]:
    """``"orchestrator=2,asr=2"`` -> {"orchestrator": 2, "asr": 2}; services
    not named run once. Errors name the variable and the bad part."""
    counts: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        m = re.fullmatch(r"([^=\s]+)\s*=\s*(\S+)", part)
        if not m:
            raise ValueError(f"{REPLICAS_ENV}={text!r}: {part!r} is not service=count (e.g. {REPLICAS_ENV}=orchestrator=2,asr=2)")
        name, count = m.groups()
        if name not in names:
            raise ValueError(f"{REPLICAS_ENV}={text!r}: no service called {name!r} (the services: {', '.join(names)})")
        if name in counts:
            raise ValueError(f"{REPLICAS_ENV}={text!r}: {name!r} is given twice")
        if not count.isdigit() or not 1 <= int(count) <= MAX_REPLICAS:
            raise ValueError(f"{REPLICAS_ENV}={text!r}: the count for {name!r} must be a whole number from 1 to {MAX_REPLICAS}, not {count!r}")
        counts[name] = int(count)
    return counts


def replicate(services: Sequence[Service], counts: Mapping[str, int]) -> list[Service]:
    """Each service as many times as asked: ``name#k`` on port + 100·(k-1).
    A service asked once keeps its plain name."""
    out: list[Service] = []
    for s in services:
        n = counts.get(s.name, 1)
        if n == 1:
            out.append(s)
            continue
        for k in range(1, n + 1):
            port = s.port + REPLICA_PORT_STEP * (k - 1)
            if port >= 65536:
                raise ValueError(f"{REPLICAS_ENV}: replica {k} of {s.name} would need port {port}; move {s.port_env or 'its port'} lower")
            out.append(replace(s, name=f"{s.name}#{k}", port=port, base=s.name, replica=k, page=s.page if k == 1 else None))
    return out


def port_problems(claims: Sequence[tuple[int, str, str | None]], busy: Callable[[int], bool]) -> list[str]:
    """One line per port that cannot be used: claimed twice, or already taken.

    ``claims`` are (port, who wants it, the variable that moves it).
    """
    problems = []
    owner: dict[int, str] = {}
    for port, who, var in claims:
        hint = f" (set {var} to use another)" if var else ""
        if port in owner:
            problems.append(f"port {port} is wanted by both {owner[port]} and {who}{hint}")
        elif busy(port):
            problems.append(f"port {port} is already in use; {who} needs it{hint}")
        owner.setdefault(port, who)
    return problems


def child_env(
    base: Mapping[str, str],
    service: Service,
    everyone: Iterable[Service],
    overrides: Mapping[str, str],
) -> dict[str, str]:
    """The environment one service starts with.

    Everything passes through (PARLEY_PROVIDERS=fixed reaches every service)
    except another service's private variables: LLM_API_KEY reaches the
    orchestrator only, TWILIO_AUTH_TOKEN the gateway only.
    """
    foreign = tuple(p for s in everyone if s.kind != service.kind for p in s.private_env if p not in service.private_env)
    env = {k: v for k, v in base.items() if not k.startswith(foreign)} if foreign else dict(base)
    env.update(overrides)
    return env


def settings_problems(env: Mapping[str, str], services: Sequence[Service]) -> list[str]:
    """Each installed service's settings, checked as it will get them, before
    anything starts: "make run: asr: PARLEY_ASR_THRESHOLD must be ..." and
    exit 2, rather than a service that dies at start and is restarted in a
    loop. The stack's own variables (NATS, ports, data dirs) are its to set."""
    from parley.config import installed
    from parley.settings import SettingsError

    known = installed()
    ours = ("NATS_URL", natsauth.SEED_FILE_ENV, "PARLEY_HTTP_HOST", "PARLEY_HTTP_PORT", "PARLEY_DATA_DIR")
    problems = []
    for service in services:
        cls = known.get(service.kind)
        if cls is None or service.replica > 1:
            continue
        mine = {k: v for k, v in child_env(env, service, services, {}).items() if k not in ours}
        try:
            cls.from_env(mine)
        except SettingsError as exc:
            problems += [f"{service.name}: {p}" for p in exc.problems]
    return problems


def probe_host(bind_host: str) -> str:
    """Where to reach a server bound to ``bind_host`` from this machine."""
    return "127.0.0.1" if bind_host in ("", "0.0.0.0", "::") else bind_host


# --- restarts ------------------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    """How soon a dead child is started again.

    A child that dies within ``stable_s`` of starting died young: each young
    death in a row doubles the wait (``first_s``, then 2x, 4x... up to
    ``cap_s``), and ``loop_after`` of them in a row is a crash loop. A child
    that ran for ``stable_s`` or longer starts again after ``first_s``.
    """

    first_s: float = 0.5
    cap_s: float = 30.0
    stable_s: float = 30.0
    loop_after: int = 3


@dataclass(frozen=True)
class Restarts:
    """One child's restart history."""

    total: int = 0  # restarts so far
    young: int = 0  # deaths in a row within stable_s of starting
    last_code: int | None = None


def after_death(history: Restarts, uptime: float, code: int, policy: Backoff) -> tuple[Restarts, float, bool]:
    """A child died after ``uptime`` seconds with exit ``code``: (its new
    history, seconds to wait before starting it again, whether it is in a
    crash loop)."""
    young = history.young + 1 if uptime < policy.stable_s else 0
    delay = min(policy.first_s * 2 ** max(young - 1, 0), policy.cap_s)
    return Restarts(total=history.total + 1, young=young, last_code=code), delay, young >= policy.loop_after


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


def split_lines(pending: bytes, data: bytes, limit: int = 65536) -> tuple[list[bytes], bytes]:
    """Complete lines from what was pending plus what arrived; the rest stays
    pending (a line longer than ``limit`` is cut there rather than held)."""
    buf = pending + data
    *lines, rest = buf.split(b"\n")
    while len(rest) > limit:
        lines.append(rest[:limit])
        rest = rest[limit:]
    return lines, rest


# --- health ------------------------------------------------------------------

DOWN, LOADING, READY = "down", "loading", "ready"


def health_state(status: int | None) -> str:
    """/healthz status code -> state: no answer, 503 while loading, 200 when ready."""
    if status is None:
        return DOWN
    return READY if status == 200 else LOADING


def brain_of(bodies: Iterable[bytes]) -> str | None:
    """The first ``brain`` any ready service's /healthz reports."""
    for body in bodies:
        try:
            data = json.loads(body)
        except ValueError:
            continue
        if isinstance(data, dict) and isinstance(data.get("brain"), str) and data["brain"]:
            return data["brain"]
    return None


def security_lines(env: Mapping[str, str], key_file: Path | None, nats_secrets: Path | None) -> list[str]:
    """What the banner says about who may do what (issue: the modes are stated)."""
    demo = env.get("PARLEY_DEMO", "")
    lines = [{
        "local": "mode:       LOCAL DEMO: the page gets session tokens by itself, for this machine only (PARLEY_DEMO= turns it off)",
        "open": "mode:       OPEN DEMO: the page gets session tokens by itself, for any client that reaches it (PARLEY_DEMO=open)",
    }.get(demo, "mode:       sessions need a token from POST /api/sessions (no demo mode)")]
    key = env.get("PARLEY_API_KEY", "")
    if key:
        where = f"made for you, kept in {key_file}" if key_file else "from PARLEY_API_KEY"
        lines.append(f"API key:    {key}   ({where}; POST /api/sessions and /api/calls take it as Authorization: Bearer)")
    if env.get("TWILIO_AUTH_TOKEN"):
        lines.append("Twilio:     requests must carry a valid X-Twilio-Signature")
    elif env.get("PARLEY_TWILIO_INSECURE", "").strip().lower() in ("1", "true", "yes", "on"):
        lines.append("Twilio:     INSECURE (PARLEY_TWILIO_INSECURE=1): unsigned webhooks and streams are accepted; local development only")
    else:
        lines.append("Twilio:     off (set TWILIO_AUTH_TOKEN; or PARLEY_TWILIO_INSECURE=1 for local development)")
    if nats_secrets:
        lines.append(f"bus:        each service with its own NATS key and permissions ({nats_secrets})")
    return lines


def banner(page_url: str | None, brain: str | None, providers: str, nats_url: str, logs: Path, inspect_token: str = "",
           replicas: Mapping[str, int] | None = None, security: Sequence[str] = ()) -> list[str]:
    lines = ["Parley is ready."]
    if page_url:
        lines.append(f"Open {page_url} in a browser.")
        if inspect_token:
            # The token is never put in a URL: the page asks for it once.
            lines.append(f"Watch any call (phone calls too): {page_url.rstrip('/')}/?watch   inspector token: {inspect_token}")
    lines.append(f"brain:      {brain or '(not reported)'}")
    lines.append(f"providers:  {providers}{'  (fixed-latency stand-ins)' if providers == 'fixed' else ''}")
    if replicas and any(n > 1 for n in replicas.values()):
        lines.append("replicas:   " + ", ".join(f"{name} x{n}" for name, n in replicas.items() if n > 1))
    lines.append(f"NATS:       {nats_url}   (its log: {logs})")
    lines.extend(security)
    lines.append("Ctrl-C stops everything.")
    width = max(len(line) for line in lines) + 4
    rule = "=" * width
    return [rule, *(f"  {line}" for line in lines), rule]


def crash_loop_report(name: str, history: Restarts, delay: float, policy: Backoff) -> list[str]:
    """The loud lines for a child in a crash loop."""
    return [
        f"!!! {name} is in a crash loop: it died {history.young} times in a row, each within {policy.stable_s:.0f} s of starting",
        f"!!! (last exit: {describe_exit(history.last_code or 0)}; {history.total} restarts in all). Its last lines are above.",
        f"!!! Starting it again in {delay:.1f} s, and backing off up to {policy.cap_s:.0f} s. Fix it, or Ctrl-C to stop everything.",
    ]


# --- how lines look ------------------------------------------------------------

COLOURS = ("36", "35", "33", "32", "34", "91", "96", "95")  # cyan, magenta, yellow, green, blue...
LEVEL_COLOURS = {"debug": "2", "warning": "33", "error": "31", "critical": "1;31"}
_QUIET_KEYS = ("ts", "level", "service", "logger", "msg", "exc", "color_message")  # uvicorn adds color_message


def paint(text: str, code: str | None) -> str:
    return f"\033[{code}m{text}\033[0m" if code else text


def compact(record: Mapping[str, object], colour: bool) -> list[str]:
    """A JSON log record as one short human line (plus a traceback, if any)."""
    ts = record.get("ts")
    clock = time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts % 1 * 1000):03d}" if isinstance(ts, (int, float)) else ""
    level = str(record.get("level", "info"))
    extras = " ".join(
        f"{k}={v if isinstance(v, str) else json.dumps(v, default=str)}" for k, v in record.items() if k not in _QUIET_KEYS
    )
    head = paint(f"{level[:5].upper():5}", LEVEL_COLOURS.get(level) if colour else None)
    line = " ".join(p for p in (clock, head, str(record.get("msg", "")), paint(extras, "2" if colour else None) if extras else "") if p)
    exc = record.get("exc")
    return [line, *str(exc).splitlines()] if exc else [line]


def render(line: str, name: str, width: int, colour_code: str | None, pretty: bool) -> list[str]:
    """One line a child printed -> the prefixed line(s) the stack prints."""
    body = [line]
    if pretty and line.startswith("{"):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            body = compact(record, colour_code is not None)
    prefix = paint(f"{name:<{width}} |", colour_code)
    return [f"{prefix} {text}" for text in body]


# --- the shell -------------------------------------------------------------------


def port_busy(port: int, host: str) -> bool:
    """Someone listens there, or we could not bind it the way a server would."""
    if natsd.port_in_use(port, probe_host(host)):
        return True
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn and nats-server do
        try:
            s.bind((host or "0.0.0.0", port))
        except OSError:
            return True
    return False


# Our own services on loopback: never through an HTTP proxy from the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get_health(url: str, timeout: float = 0.5) -> tuple[int | None, bytes]:
    try:
        with _DIRECT.open(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (OSError, ValueError):
        return None, b""


class Out:
    """Our stdout; a reader that went away does not stop the supervising."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def write(self, lines: Iterable[str]) -> None:
        try:
            for line in lines:
                self.stream.write(line + "\n")
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            pass  # nobody is reading any more; keep supervising anyway


@dataclass
class Child:
    service: Service
    index: int  # for its colour
    proc: subprocess.Popen | None = None
    started: float = 0.0
    state: str = DOWN
    body: bytes = b""
    last_note: float = 0.0
    pending: bytes = b""  # the start of a line not yet ended
    restarts: Restarts = field(default_factory=Restarts)
    due: float | None = None  # when to start it again (it is dead until then)


class Stack:
    def __init__(self, services: list[Service], env: Mapping[str, str], var: Path, out: Out, tty: bool, pretty: bool,
                 grace: float = 10.0, backoff: Backoff = Backoff(), replicas: Mapping[str, int] | None = None) -> None:
        self.services = services
        self.env = env
        self.var = var
        self.out = out
        self.tty = tty
        self.pretty = pretty
        self.grace = grace
        self.backoff = backoff
        self.replicas = dict(replicas or {})
        self.host = env.get("PARLEY_HTTP_HOST", "127.0.0.1")
        self.nats_port = nats_port(env)
        self.width = max(len(n) for n in [SELF, "nats", *(s.name for s in services)])
        self.children = [Child(s, i) for i, s in enumerate(services)]
        self.nats: natsd.NatsServer | None = None
        self.nats_restarts = Restarts()
        self.nats_started = 0.0
        self.creds: natsauth.Credentials | None = None
        self.nats_due: float | None = None
        self.signals = 0  # how many times we were asked to stop; the handler only counts
        self.selector = selectors.DefaultSelector()
        self.wake_r = self.wake_w = -1  # the signal wake-up pipe, made by run()

    # -- output
    def say(self, text: str, loud: bool = False) -> None:
        code = ("1;31" if loud else "1") if self.tty else None
        self.out.write(render(text, SELF, self.width, code, pretty=False))

    def colour(self, index: int) -> str | None:
        return COLOURS[index % len(COLOURS)] if self.tty else None

    def emit(self, child: Child, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        self.out.write(render(line, child.service.name, self.width, self.colour(child.index), self.pretty))

    # -- signals
    def on_signal(self, signum, _frame) -> None:
        # Nothing that takes a lock or does I/O: set_wakeup_fd already woke the loop.
        self.signals += 1

    # -- waiting: the children's output and the signal wake-up, in one select
    def pump(self, timeout: float) -> None:
        """Wait up to ``timeout`` for output or a signal, and pass output on."""
        try:
            ready = self.selector.select(timeout)
        except InterruptedError:  # pragma: no cover - PEP 475 retries select itself
            return
        for key, _ in ready:
            if key.data is None:
                self._drain_wake()
            else:
                self._read(key.data)

    def _drain_wake(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _read(self, child: Child) -> bool:
        """Read what the child's pipe holds; False at its end (then closed)."""
        assert child.proc is not None and child.proc.stdout is not None
        try:
            data = os.read(child.proc.stdout.fileno(), 65536)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if data:
            lines, child.pending = split_lines(child.pending, data)
            for line in lines:
                self.emit(child, line)
            return True
        if child.pending:
            self.emit(child, child.pending)
            child.pending = b""
        self.selector.unregister(child.proc.stdout)
        child.proc.stdout.close()
        return False

    def _last_words(self, child: Child, within: float = 1.0) -> None:
        """Pass on what a dead child's pipe still holds (its group is killed
        first, so the pipe's end comes soon)."""
        proc = child.proc
        if proc is None or proc.stdout is None or proc.stdout.closed:
            return
        deadline = time.monotonic() + within
        with selectors.DefaultSelector() as one:
            one.register(proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline and one.select(max(0.0, deadline - time.monotonic())):
                if not self._read(child):
                    return
        self.selector.unregister(proc.stdout)
        proc.stdout.close()

    # -- the run
    def run(self) -> int:
        # Signals first: from here on a Ctrl-C is counted, never a traceback.
        # SIGHUP too: the children have their own sessions, so a closed terminal reaches only us.
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)
        self.selector.register(self.wake_r, selectors.EVENT_READ, None)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self.on_signal)

        claims = [(self.nats_port, "nats-server", NATS_PORT_ENV)]
        claims += [(s.port, s.name, s.port_env) for s in self.services]
        problems = port_problems(claims, lambda p: port_busy(p, "127.0.0.1" if p == self.nats_port else self.host))
        if problems:
            for problem in problems:
                print(f"make run: {problem}", file=sys.stderr)
            return 2
        try:
            return self.supervise()
        finally:
            self.stop()
            # Everything is down. Ignore late signals while we exit: Python's
            # finalization puts the default handlers back, and a Ctrl-C in a
            # burst would turn a clean stop into "killed by SIGINT".
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)

    def supervise(self) -> int:
        logs = self.var / "log"
        logs.mkdir(parents=True, exist_ok=True)
        self.say(f"starting nats-server on port {self.nats_port} (JetStream store {self.var / 'nats'}; each service with its own nkey, in {self.var / 'secrets' / 'nats'})")
        if not self.start_nats():
            return 1
        if self.signals:
            return 0

        for child in self.children:
            (self.var / child.service.kind).mkdir(parents=True, exist_ok=True)
            if not self.spawn(child):
                self.say(f"{child.service.name} could not start; stopping the stack")
                return 1
            self.say(f"{child.service.name}: starting on port {child.service.port} (pid {child.proc.pid})")

        announced = False
        while not self.signals:
            self.reap()
            self.respawn()
            self.poll_health()
            if not announced and all(c.state == READY for c in self.children):
                self.announce()
                announced = True
            self.pump(0.25)
        self.say("stopping (signal received)")
        return 0

    # -- nats-server
    def start_nats(self) -> bool:
        nats_log = self.var / "log" / "nats.log"
        try:
            # Each service's own NATS identity and permissions: seeds made once in
            # var/secrets/nats, the server's config (public keys) written anew.
            self.creds = natsauth.ensure(self.var / "secrets" / "nats", ROOT / "deploy" / "nats.conf")
            self.nats = natsd.NatsServer(self.nats_port, self.var / "nats", self.creds.config)
            self.nats.start(log=nats_log)
        except RuntimeError as err:
            self.say(f"nats-server failed to start: {err} (see {nats_log})", loud=True)
            return False
        self.nats_started = time.monotonic()
        return True

    # -- children
    def spawn(self, child: Child) -> bool:
        service = child.service
        assert self.nats is not None
        role = natsauth.SERVICE_ROLES.get(service.kind)
        env = child_env(self.env, service, self.services, {
            "NATS_URL": self.nats.url,
            **({natsauth.SEED_FILE_ENV: str(self.creds.seed_file(role))} if role else {}),
            "PARLEY_HTTP_HOST": self.host,
            "PARLEY_HTTP_PORT": str(service.port),
            "PARLEY_DATA_DIR": str(self.var / service.kind),  # replicas share it (one appointment book)
            "PYTHONUNBUFFERED": "1",
            **fakeclock.child_env(os.environ),  # under faketime: the stack shares one clock
        })
        try:
            proc = subprocess.Popen(
                service.argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, bufsize=0,
                stderr=subprocess.STDOUT, start_new_session=True,  # own process group: Ctrl-C is ours to pass on
            )
        except OSError as err:
            self.say(f"{service.name} could not start: {err}", loud=True)
            return False
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        self.selector.register(proc.stdout, selectors.EVENT_READ, child)
        child.proc, child.started, child.state, child.due, child.pending = proc, time.monotonic(), DOWN, None, b""
        return True

    def reap(self) -> None:
        """Whoever died: say so, and when it starts again."""
        now = time.monotonic()
        if self.nats and self.nats.proc and self.nats_due is None and (rc := self.nats.proc.poll()) is not None:
            self.nats_restarts, delay, looping = after_death(self.nats_restarts, now - self.nats_started, rc, self.backoff)
            self.nats_due = now + delay
            self.say(f"nats-server exited unexpectedly with {describe_exit(rc)}; starting it again in {delay:.1f} s "
                     f"(restart {self.nats_restarts.total}; the services reconnect)", loud=True)
            if looping:
                for line in crash_loop_report("nats-server", self.nats_restarts, delay, self.backoff):
                    self.say(line, loud=True)
        for child in self.children:
            if child.proc is None or (rc := child.proc.poll()) is None:
                continue
            _killpg(child.proc.pid, signal.SIGKILL)  # grandchildren left in its group would hold its port
            self._last_words(child)
            child.restarts, delay, looping = after_death(child.restarts, now - child.started, rc, self.backoff)
            child.proc, child.state, child.due = None, DOWN, now + delay
            self.say(f"{child.service.name} exited unexpectedly with {describe_exit(rc)} after {now - child.started:.1f} s; "
                     f"starting it again in {delay:.1f} s (restart {child.restarts.total})", loud=True)
            if looping:
                for line in crash_loop_report(child.service.name, child.restarts, delay, self.backoff):
                    self.say(line, loud=True)

    def respawn(self) -> None:
        now = time.monotonic()
        if self.nats_due is not None and now >= self.nats_due and self.nats is not None:
            self.nats_due = None
            if self.start_nats():
                self.say(f"nats-server: started again on port {self.nats_port}")
            else:
                self.nats_restarts, delay, _ = after_death(self.nats_restarts, 0.0, 1, self.backoff)
                self.nats_due = now + delay
        for child in self.children:
            if child.due is None or now < child.due or self.signals:
                continue
            if self.spawn(child):
                self.say(f"{child.service.name}: started again (pid {child.proc.pid}, restart {child.restarts.total})")
            else:
                child.restarts, delay, _ = after_death(child.restarts, 0.0, 127, self.backoff)
                child.due = now + delay

    def poll_health(self) -> None:
        probe = probe_host(self.host)
        for child in self.children:
            if child.state == READY or child.proc is None or self.signals:
                continue
            status, body = get_health(f"http://{probe}:{child.service.port}/healthz")
            state, now = health_state(status), time.monotonic()
            name = child.service.name
            if state == LOADING and child.state == DOWN:
                self.say(f"{name}: loading models...")
                child.last_note = now
            elif state == READY:
                child.body = body
                again = f", restart {child.restarts.total}" if child.restarts.total else ""
                self.say(f"{name}: ready ({now - child.started:.1f} s{again})")
            elif now - max(child.last_note, child.started) >= 15:
                waiting = "still loading" if state == LOADING else "not answering /healthz yet"
                self.say(f"{name}: {waiting} ({now - child.started:.0f} s)")
                child.last_note = now
            child.state = state

    def announce(self) -> None:
        page = next((c.service for c in self.children if c.service.page), None)
        url = f"http://{probe_host(self.host)}:{page.port}{page.page}" if page else None
        brain = brain_of(c.body for c in self.children)
        providers = self.env.get("PARLEY_PROVIDERS", "real") or "real"
        assert self.nats is not None
        made_key = self.var / "secrets" / "api_key"
        key_file = made_key if made_key.exists() and made_key.read_text().strip() == self.env.get("PARLEY_API_KEY") else None
        lines = banner(url, brain, providers, self.nats.url, self.var / "log" / "nats.log", self.env.get("PARLEY_INSPECT_TOKEN", ""),
                       self.replicas, security_lines(self.env, key_file, self.var / "secrets" / "nats"))
        self.out.write(paint(line, "1;32") if self.tty else line for line in lines)

    def stop(self) -> None:
        """SIGTERM every process group, wait (passing their last lines on),
        SIGKILL what is left, then nats-server."""
        asked = self.signals
        live = [c for c in self.children if c.proc is not None and c.proc.poll() is None]
        for child in live:
            _killpg(child.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        # Another Ctrl-C while stopping skips the grace period.
        while any(c.proc.poll() is None for c in live) and time.monotonic() < deadline and self.signals == asked:
            self.pump(0.05)
        for child in live:
            if child.proc.poll() is None:
                self.say(f"{child.service.name}: did not stop in time; killing it")
        for child in self.children:
            if child.proc is None:
                continue
            # Also sweeps grandchildren left in the group after the leader exited.
            _killpg(child.proc.pid, signal.SIGKILL)
            child.proc.wait()
            self._last_words(child, within=0.5)
        if self.nats:
            self.nats.stop()
        restarted = [(c.service.name, c.restarts) for c in self.children if c.restarts.total]
        if self.nats_restarts.total:
            restarted.append(("nats-server", self.nats_restarts))
        if restarted:
            summary = ", ".join(f"{name} {r.total}x (last exit {describe_exit(r.last_code or 0)})" for name, r in restarted)
            self.say(f"restarts during this run: {summary}", loud=True)
        if any(c.started for c in self.children) or self.nats:
            self.say("stopped")


def stored_secret(path: Path) -> str:
    """A random secret kept in ``path`` (made once, mode 0600)."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    value = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=Path, help="JSON list of {name, argv, port, page?} to run instead of Parley's four")
    parser.add_argument("--var", type=Path, default=ROOT / "var", help="where state and logs go (default: var/)")
    parser.add_argument("--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL")
    parser.add_argument("--raw", action="store_true", help="print JSON log lines as they are, even on a terminal")
    parser.add_argument("--backoff", type=float, default=Backoff.first_s, help="seconds before the first restart of a dead service (doubles while it keeps dying)")
    args = parser.parse_args(argv)

    env = dict(os.environ)
    # The inspector shows what callers said: a fresh token per run unless one is set.
    env.setdefault("PARLEY_INSPECT_TOKEN", secrets.token_urlsafe(12))
    # The local demo: the page gets its own session tokens (for this machine
    # only), unless PARLEY_DEMO says otherwise (set it empty to turn it off).
    env.setdefault("PARLEY_DEMO", "local")
    # A deployer's backend mints session tokens with the API key: one is made
    # at first start and kept (var/secrets/api_key) unless PARLEY_API_KEY is set.
    if not env.get("PARLEY_API_KEY"):
        env["PARLEY_API_KEY"] = stored_secret(args.var.resolve() / "secrets" / "api_key")
    try:
        services = services_from_json(json.loads(args.services.read_text())) if args.services else default_services(env, sys.executable)
        replicas = parse_replicas(env.get(REPLICAS_ENV, ""), [s.name for s in services])
        services = replicate(services, replicas)
        nats_port(env)
    except (ValueError, KeyError, OSError) as err:
        print(f"make run: {err}", file=sys.stderr)
        return 2
    problems = settings_problems(env, services)
    for problem in problems:
        print(f"make run: {problem}", file=sys.stderr)
    if problems:
        return 2
    tty = sys.stdout.isatty()
    stack = Stack(services, env, args.var.resolve(), Out(sys.stdout), tty=tty and "NO_COLOR" not in env,
                  pretty=tty and not args.raw, grace=args.grace, backoff=Backoff(first_s=args.backoff), replicas=replicas)
    return stack.run()


if __name__ == "__main__":
    sys.exit(main())
