"""The `make run` supervisor: nats-server and the four services as one stack.

Order of business:
1. Check every port the stack will use, before starting anything (exit 2 if
   one is taken, naming the port and who wants it).
2. Start nats-server from the venv (JetStream, store under var/nats,
   deploy/nats.conf).
3. Start each service as a child in its own process group, and prefix every
   line it prints with its name (coloured, and JSON logs made compact, on a
   terminal; raw JSON otherwise).
4. Poll each /healthz until it answers 200, printing progress, then print a
   banner with the page's URL and the brain the orchestrator reports.
5. On Ctrl-C or SIGTERM, or when any child dies unexpectedly, stop every
   process group (SIGTERM, a grace period, then SIGKILL) and nats-server.

The stack is data: ``default_services`` below, or a JSON list given with
``--services`` (the tests run stand-in commands that way). Everything from
``plan`` to ``banner`` is pure; ``Stack`` is the thin shell that does I/O.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "shared"))  # so `python deploy/devstack.py` works outside `uv run` too

from parley import natsauth, natsd  # noqa: E402

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


# name, module, port variable, default port, page, private env prefixes
DEFAULT_SERVICES = (
    ("media-gateway", "parley_gateway", "PARLEY_GATEWAY_PORT", 8080, "/", ("TWILIO_",)),
    ("asr", "parley_asr", "PARLEY_ASR_PORT", 8081, None, ()),
    ("orchestrator", "parley_orchestrator", "PARLEY_ORCHESTRATOR_PORT", 8082, None, ("LLM_",)),
    ("tts", "parley_tts", "PARLEY_TTS_PORT", 8083, None, ()),
)
NATS_PORT_ENV = "PARLEY_NATS_PORT"
NATS_DEFAULT_PORT = 4222
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
    foreign = tuple(p for s in everyone if s.name != service.name for p in s.private_env if p not in service.private_env)
    env = {k: v for k, v in base.items() if not k.startswith(foreign)} if foreign else dict(base)
    env.update(overrides)
    return env


def probe_host(bind_host: str) -> str:
    """Where to reach a server bound to ``bind_host`` from this machine."""
    return "127.0.0.1" if bind_host in ("", "0.0.0.0", "::") else bind_host


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


def banner(page_url: str | None, brain: str | None, providers: str, nats_url: str, logs: Path, inspect_token: str = "") -> list[str]:
    lines = ["Parley is ready."]
    if page_url:
        lines.append(f"Open {page_url} in a browser.")
        if inspect_token:
            lines.append(f"Watch any call (phone calls too): {page_url.rstrip('/')}/?watch&token={inspect_token}")
    lines.append(f"brain:      {brain or '(not reported)'}")
    lines.append(f"providers:  {providers}{'  (fixed-latency stand-ins)' if providers == 'fixed' else ''}")
    lines.append(f"NATS:       {nats_url}   (its log: {logs})")
    lines.append("Ctrl-C stops everything.")
    width = max(len(line) for line in lines) + 4
    rule = "=" * width
    return [rule, *(f"  {line}" for line in lines), rule]


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


def get_health(url: str, timeout: float = 1.0) -> tuple[int | None, bytes]:
    try:
        with _DIRECT.open(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (OSError, ValueError):
        return None, b""


class Out:
    """Serialises lines from every reader thread onto our stdout."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def write(self, lines: Iterable[str]) -> None:
        with self.lock:
            try:
                for line in lines:
                    self.stream.write(line + "\n")
                self.stream.flush()
            except (BrokenPipeError, ValueError):
                pass  # nobody is reading any more; keep supervising anyway


@dataclass
class Child:
    service: Service
    proc: subprocess.Popen
    started: float
    state: str = DOWN
    body: bytes = b""
    reader: threading.Thread | None = None
    last_note: float = 0.0


class Stack:
    def __init__(self, services: list[Service], env: Mapping[str, str], var: Path, out: Out, tty: bool, pretty: bool,
                 grace: float = 10.0) -> None:
        self.services = services
        self.env = env
        self.var = var
        self.out = out
        self.tty = tty
        self.pretty = pretty
        self.grace = grace
        self.host = env.get("PARLEY_HTTP_HOST", "127.0.0.1")
        self.nats_port = nats_port(env)
        self.width = max(len(n) for n in [SELF, "nats", *(s.name for s in services)])
        self.children: list[Child] = []
        self.nats: natsd.NatsServer | None = None
        self.signals = 0  # how many times we were asked to stop
        self.wake = threading.Event()

    # -- output
    def say(self, text: str) -> None:
        self.out.write(render(text, SELF, self.width, "1" if self.tty else None, pretty=False))

    def colour(self, index: int) -> str | None:
        return COLOURS[index % len(COLOURS)] if self.tty else None

    def pump(self, child: Child, index: int) -> None:
        name, code = child.service.name, self.colour(index)
        assert child.proc.stdout is not None
        for raw in child.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.out.write(render(line, name, self.width, code, self.pretty))

    # -- signals
    def on_signal(self, signum, _frame) -> None:
        self.signals += 1
        self.wake.set()

    # -- the run
    def run(self) -> int:
        claims = [(self.nats_port, "nats-server", NATS_PORT_ENV)]
        claims += [(s.port, s.name, s.port_env) for s in self.services]
        problems = port_problems(claims, lambda p: port_busy(p, "127.0.0.1" if p == self.nats_port else self.host))
        if problems:
            for problem in problems:
                print(f"make run: {problem}", file=sys.stderr)
            return 2

        # SIGHUP too: the children have their own sessions, so a closed terminal reaches only us.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self.on_signal)
        try:
            return self.supervise()
        finally:
            self.stop()

    def supervise(self) -> int:
        logs = self.var / "log"
        logs.mkdir(parents=True, exist_ok=True)
        nats_log = logs / "nats.log"
        # Each service's own NATS identity and permissions: seeds made once in
        # var/secrets/nats, the server's config (public keys) written anew.
        creds = natsauth.ensure(self.var / "secrets" / "nats", ROOT / "deploy" / "nats.conf")
        self.say(f"starting nats-server on port {self.nats_port} (JetStream store {self.var / 'nats'}; each service with its own nkey, {creds.root})")
        try:
            self.nats = natsd.NatsServer(self.nats_port, self.var / "nats", creds.config)
            self.nats.start(log=nats_log)
        except RuntimeError as err:
            self.say(f"nats-server failed to start: {err} (see {nats_log})")
            return 1
        if self.signals:
            return 0

        for index, service in enumerate(self.services):
            data_dir = self.var / service.name
            data_dir.mkdir(parents=True, exist_ok=True)
            role = natsauth.SERVICE_ROLES.get(service.name.split("#")[0])
            env = child_env(self.env, service, self.services, {
                "NATS_URL": self.nats.url,
                **({natsauth.SEED_FILE_ENV: str(creds.seed_file(role))} if role else {}),
                "PARLEY_HTTP_HOST": self.host,
                "PARLEY_HTTP_PORT": str(service.port),
                "PARLEY_DATA_DIR": str(data_dir),
                "PYTHONUNBUFFERED": "1",
            })
            try:
                proc = subprocess.Popen(
                    service.argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, start_new_session=True,  # own process group: Ctrl-C is ours to pass on
                )
            except OSError as err:
                self.say(f"{service.name} could not start: {err}; stopping the stack")
                return 1
            child = Child(service, proc, time.monotonic())
            child.reader = threading.Thread(target=self.pump, args=(child, index), daemon=True)
            child.reader.start()
            self.children.append(child)
            self.say(f"{service.name}: starting on port {service.port} (pid {proc.pid})")

        announced = False
        while not self.signals:
            if failed := self.first_dead():
                return failed
            if not announced:
                self.poll_health()
                if all(c.state == READY for c in self.children):
                    self.announce()
                    announced = True
            self.wake.wait(0.25)
        self.say("stopping (signal received)")
        return 0

    def first_dead(self) -> int:
        """If nats-server or any service has exited, say so and return a non-zero code."""
        if self.nats and self.nats.proc and (rc := self.nats.proc.poll()) is not None:
            self.say(f"nats-server exited unexpectedly with code {rc}; stopping the stack")
            return 1
        for child in self.children:
            if (rc := child.proc.poll()) is not None:
                if child.reader:
                    child.reader.join(1.0)  # let its last words through first
                self.say(f"{child.service.name} exited unexpectedly with code {rc}; stopping the stack")
                return rc if 0 < rc < 126 else 1
        return 0

    def poll_health(self) -> None:
        probe = probe_host(self.host)
        for child in self.children:
            if child.state == READY:
                continue
            status, body = get_health(f"http://{probe}:{child.service.port}/healthz")
            state, now = health_state(status), time.monotonic()
            name = child.service.name
            if state == LOADING and child.state == DOWN:
                self.say(f"{name}: loading models...")
                child.last_note = now
            elif state == READY:
                child.body = body
                self.say(f"{name}: ready ({now - child.started:.1f} s)")
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
        lines = banner(url, brain, providers, self.nats.url, self.var / "log" / "nats.log", self.env.get("PARLEY_INSPECT_TOKEN", ""))
        self.out.write(paint(line, "1;32") if self.tty else line for line in lines)

    def stop(self) -> None:
        """SIGTERM every process group, wait, SIGKILL what is left, then nats-server."""
        asked = self.signals
        live = [c for c in self.children if c.proc.poll() is None]
        for child in live:
            _killpg(child.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for child in live:
            while child.proc.poll() is None and time.monotonic() < deadline and self.signals == asked:
                time.sleep(0.05)  # another Ctrl-C while stopping skips the grace period
            if child.proc.poll() is None:
                self.say(f"{child.service.name}: did not stop in time; killing it")
        for child in self.children:
            # Also sweeps grandchildren left in the group after the leader exited.
            _killpg(child.proc.pid, signal.SIGKILL)
            child.proc.wait()
            if child.reader:
                child.reader.join(2.0)
        if self.nats:
            self.nats.stop()
        if self.children or self.nats:
            self.say("stopped")


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
    args = parser.parse_args(argv)

    env = dict(os.environ)
    # The inspector shows what callers said: a fresh token per run unless one is set.
    env.setdefault("PARLEY_INSPECT_TOKEN", secrets.token_urlsafe(12))
    try:
        services = services_from_json(json.loads(args.services.read_text())) if args.services else default_services(env, sys.executable)
        nats_port(env)
    except (ValueError, KeyError, OSError) as err:
        print(f"make run: {err}", file=sys.stderr)
        return 2
    tty = sys.stdout.isatty()
    stack = Stack(services, env, args.var.resolve(), Out(sys.stdout), tty=tty and "NO_COLOR" not in env,
                  pretty=tty and not args.raw, grace=args.grace)
    return stack.run()


if __name__ == "__main__":
    sys.exit(main())
