"""The `make run` supervisor (deploy/devstack.py), run for real with stand-in services.

The stand-ins are tiny HTTP servers answering /healthz (503 twice, then 200),
each with a grandchild in its process group, so the tests can check that
Ctrl-C leaves no process behind. nats-server is the real one from the venv,
with deploy/nats.conf, on a free port.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from parley.natsd import free_port

ROOT = Path(__file__).resolve().parent.parent
DEVSTACK = ROOT / "deploy" / "devstack.py"

_spec = importlib.util.spec_from_file_location("devstack", DEVSTACK)
devstack = importlib.util.module_from_spec(_spec)
sys.modules["devstack"] = devstack  # dataclasses look their module up there
_spec.loader.exec_module(devstack)

STAND_IN = r'''
import http.server, json, os, socket, subprocess, sys, time
from pathlib import Path

name, mode, report = sys.argv[1], sys.argv[2], Path(sys.argv[3])
port = int(os.environ["PARLEY_HTTP_PORT"])

# Ask the real nats-server who it is: proves it runs, with our config.
host, nport = os.environ["NATS_URL"].removeprefix("nats://").rsplit(":", 1)
with socket.create_connection((host, int(nport)), timeout=5) as s:
    info = json.loads(s.makefile().readline().removeprefix("INFO "))

sleeper = subprocess.Popen(["sleep", "300"])  # a grandchild in our process group
keys = ("NATS_URL", "PARLEY_PROVIDERS", "LLM_API_KEY", "TWILIO_AUTH_TOKEN", "PARLEY_DATA_DIR", "PARLEY_HTTP_HOST")
report.write_text(json.dumps({
    "pid": os.getpid(), "grandchild": sleeper.pid, "env": {k: os.environ.get(k) for k in keys},
    "jetstream": info.get("jetstream"), "max_payload": info.get("max_payload"),
}))
print(json.dumps({"ts": time.time(), "level": "info", "service": name, "msg": "stand-in up"}), file=sys.stderr, flush=True)
print(f"plain line from {name}", flush=True)
if mode == "crash":
    time.sleep(0.5)
    sys.exit(3)
if mode == "stubborn":
    import signal
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

asked = 0

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global asked
        asked += 1
        ready = asked > 2  # "loading models" for the first two polls, whatever the timing
        body = json.dumps({"ok": ready, "brain": f"{name} brain"} if ready else {"ok": False}).encode()
        self.send_response(200 if ready else 503)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
'''


# --- the pure parts --------------------------------------------------------------


def test_default_stack_is_parleys_four_services_and_ports_move_by_env():
    services = devstack.default_services({"PARLEY_ASR_PORT": "9081"}, "/py")
    assert [(s.name, s.argv, s.port) for s in services] == [
        ("media-gateway", ("/py", "-m", "parley_gateway"), 8080),
        ("asr", ("/py", "-m", "parley_asr"), 9081),
        ("orchestrator", ("/py", "-m", "parley_orchestrator"), 8082),
        ("tts", ("/py", "-m", "parley_tts"), 8083),
    ]
    assert [s.name for s in services if s.page] == ["media-gateway"]
    with pytest.raises(ValueError, match="PARLEY_TTS_PORT"):
        devstack.default_services({"PARLEY_TTS_PORT": "eighty"}, "/py")


def test_every_default_module_exists():
    for name, module, *_ in devstack.DEFAULT_SERVICES:
        assert list(ROOT.glob(f"services/*/{module}/__main__.py")), f"{name}: no {module}/__main__.py"


def test_port_problems_names_the_port_and_who_wants_it():
    claims = [(4222, "nats-server", "PARLEY_NATS_PORT"), (8080, "gw", "PARLEY_GATEWAY_PORT"), (8081, "asr", None), (8080, "tts", None)]
    problems = devstack.port_problems(claims, busy=lambda p: p == 4222)
    assert problems == [
        "port 4222 is already in use; nats-server needs it (set PARLEY_NATS_PORT to use another)",
        "port 8080 is wanted by both gw and tts",
    ]
    assert devstack.port_problems(claims[:3], busy=lambda p: False) == []


def test_private_variables_reach_only_their_service():
    a = devstack.Service("orchestrator", ("x",), 1, private_env=("LLM_",))
    b = devstack.Service("gateway", ("x",), 2, private_env=("TWILIO_",))
    c = devstack.Service("asr", ("x",), 3)
    base = {"LLM_API_KEY": "k", "LLM_MODEL": "m", "TWILIO_AUTH_TOKEN": "t", "PARLEY_PROVIDERS": "fixed", "PATH": "/bin"}
    env = {s.name: devstack.child_env(base, s, [a, b, c], {"PARLEY_HTTP_PORT": str(s.port)}) for s in (a, b, c)}
    assert env["orchestrator"] == {"LLM_API_KEY": "k", "LLM_MODEL": "m", "PARLEY_PROVIDERS": "fixed", "PATH": "/bin", "PARLEY_HTTP_PORT": "1"}
    assert env["gateway"] == {"TWILIO_AUTH_TOKEN": "t", "PARLEY_PROVIDERS": "fixed", "PATH": "/bin", "PARLEY_HTTP_PORT": "2"}
    assert env["asr"] == {"PARLEY_PROVIDERS": "fixed", "PATH": "/bin", "PARLEY_HTTP_PORT": "3"}


@pytest.mark.parametrize("status, state", [(None, "down"), (503, "loading"), (500, "loading"), (200, "ready")])
def test_health_state(status, state):
    assert devstack.health_state(status) == state


def test_brain_comes_from_whichever_service_reports_one():
    assert devstack.brain_of([b"", b"not json", b'{"ok": true}', b'{"ok": true, "brain": "demo receptionist"}']) == "demo receptionist"
    assert devstack.brain_of([b'{"ok": true}']) is None


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=80), st.sampled_from(["asr", "orchestrator"]))
def test_raw_lines_pass_through_unchanged_behind_the_prefix(line, name):
    assert devstack.render(line, name, 13, None, pretty=False) == [f"{name:<13} | {line}"]


@given(st.dictionaries(st.text(min_size=1, max_size=8), st.one_of(st.text(max_size=20), st.integers(), st.none()), max_size=5))
def test_pretty_json_is_one_prefixed_line_per_record(extra):
    record = {"ts": 1700000000.25, "level": "warning", "service": "asr", "logger": "x", "msg": "hello", **extra}
    lines = devstack.render(json.dumps(record), "asr", 5, None, pretty=True)
    assert len(lines) == 1 and lines[0].startswith("asr   | ")
    if record["msg"] == "hello" and record["level"] == "warning":
        assert " WARNI hello" in lines[0]


def test_pretty_json_shows_fields_and_traceback_and_leaves_other_lines_alone():
    record = {"ts": 1700000000.5, "level": "error", "service": "tts", "logger": "t", "msg": "boom", "session_id": "s1", "exc": "Traceback\n  line"}
    lines = devstack.render(json.dumps(record), "tts", 3, None, pretty=True)
    assert lines[0].endswith("ERROR boom session_id=s1") and lines[1:] == ["tts | Traceback", "tts |   line"]
    assert devstack.render("{not json", "tts", 3, None, pretty=True) == ["tts | {not json"]


def test_banner_has_the_url_and_the_brain():
    lines = devstack.banner("http://127.0.0.1:8080/", "demo receptionist", "fixed", "nats://127.0.0.1:4222", Path("var/log/nats.log"))
    text = "\n".join(lines)
    assert "http://127.0.0.1:8080/" in text and "demo receptionist" in text and "fixed" in text


# --- the real thing, with stand-ins ---------------------------------------------------


class Supervisor:
    """deploy/devstack.py as a child process, its output collected line by line."""

    def __init__(self, tmp_path: Path, modes: dict[str, str], env: dict[str, str] | None = None,
                 ports: dict[str, int] | None = None, argv: dict[str, list[str]] | None = None, grace: float = 5):
        script = tmp_path / "stand_in.py"
        script.write_text(STAND_IN)
        self.reports = {name: tmp_path / f"{name}.json" for name in modes}
        ports = ports or {}
        services = [
            {"name": name, "argv": (argv or {}).get(name) or [sys.executable, str(script), name, mode, str(self.reports[name])],
             "port": ports.get(name) or free_port(), "page": "/" if i == 0 else None,
             "private_env": ["LLM_"] if name == "brainy" else []}
            for i, (name, mode) in enumerate(modes.items())
        ]
        spec = tmp_path / "services.json"
        spec.write_text(json.dumps(services))
        self.services = services
        self.var = tmp_path / "var"
        self.nats_port = free_port()
        full_env = {**os.environ, "PARLEY_NATS_PORT": str(self.nats_port), **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, str(DEVSTACK), "--services", str(spec), "--var", str(self.var), "--grace", str(grace)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env, start_new_session=True,
        )
        self.lines: list[str] = []
        self.eof = False
        self.changed = threading.Condition()
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        for line in self.proc.stdout:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.eof = True
            self.changed.notify_all()

    @property
    def text(self) -> str:
        with self.changed:
            return "\n".join(self.lines)

    def wait_for(self, needle: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not any(needle in line for line in self.lines) and not self.eof and time.monotonic() < deadline:
                self.changed.wait(0.5)
        assert needle in self.text, f"{needle!r} never appeared; output:\n{self.text}\nstderr:\n{self.stderr()}"

    def stderr(self) -> str:
        return self.proc.stderr.read() if self.proc.poll() is not None else "(still running)"

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def cleanup(self) -> None:
        """After a failed test: kill the supervisor and everything it started, whatever it left."""
        if self.proc.poll() is None:
            left = self.descendants()
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            for proc in left:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()
        for proc in mentioning(self.var.parent):
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(procs: list[psutil.Process], timeout: float = 10) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while (left := [p for p in procs if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def mentioning(path: Path) -> list[psutil.Process]:
    """Live processes whose command line names something under ``path``."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(f"{path}/" in arg for arg in proc.info["cmdline"] or ()) and alive(proc):
            found.append(proc)
    return found


@pytest.fixture
def supervisors():
    started: list[Supervisor] = []
    yield started
    for sup in started:
        sup.cleanup()


def test_stack_starts_prefixes_output_shows_the_banner_and_ctrl_c_leaves_nothing(tmp_path, supervisors):
    # A proxy in the environment must not catch the health checks on loopback.
    env = {"LLM_API_KEY": "sk-test-key-1234", "PARLEY_PROVIDERS": "fixed", "http_proxy": "http://127.0.0.1:9", "no_proxy": ""}
    sup = Supervisor(tmp_path, {"front": "ok", "brainy": "ok"}, env=env)
    supervisors.append(sup)
    front, brainy = sup.services

    sup.wait_for("Ctrl-C stops everything")
    out = sup.text
    # Every child line carries its service's name, padded to one width.
    assert "front  | plain line from front" in out
    assert "brainy | plain line from brainy" in out
    assert 'brainy | {"ts"' in out and '"msg": "stand-in up"' in out  # not a tty: raw JSON
    # Progress, then the banner, in that order.
    assert "front: loading models..." in out
    assert out.index("brainy: loading models...") < out.index("brainy: ready (") < out.index("Parley is ready.")
    assert f"Open http://127.0.0.1:{front['port']}/ in a browser." in out
    assert "brainy brain" in out or "front brain" in out
    assert "providers:  fixed" in out

    # What each child was given: NATS, its data dir, the providers; secrets only where they belong.
    reports = {name: json.loads(path.read_text()) for name, path in sup.reports.items()}
    nats_url = f"nats://127.0.0.1:{sup.nats_port}"
    for name, report in reports.items():
        assert report["env"]["NATS_URL"] == nats_url
        assert report["env"]["PARLEY_PROVIDERS"] == "fixed"
        assert report["env"]["PARLEY_DATA_DIR"] == str(sup.var / name)
        assert report["jetstream"] is True
        assert report["max_payload"] == 2 * 1024 * 1024  # deploy/nats.conf is in force
    assert reports["brainy"]["env"]["LLM_API_KEY"] == "sk-test-key-1234"
    assert reports["front"]["env"]["LLM_API_KEY"] is None
    assert (sup.var / "nats" / "jetstream").is_dir()

    procs = sup.descendants()
    names = {p.name() for p in procs}
    assert "nats-server" in names and "sleep" in names, names
    pids = {p.pid for p in procs}
    assert {r["pid"] for r in reports.values()} | {r["grandchild"] for r in reports.values()} <= pids

    sup.proc.send_signal(signal.SIGINT)
    assert sup.proc.wait(30) == 0
    assert not wait_gone(procs), "processes left behind after Ctrl-C"
    assert "stopped" in sup.text


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_a_closed_terminal_stops_the_stack_too(tmp_path, supervisors, sig):
    sup = Supervisor(tmp_path, {"only": "ok"})
    supervisors.append(sup)
    sup.wait_for("Ctrl-C stops everything")
    procs = sup.descendants()
    sup.proc.send_signal(sig)
    assert sup.proc.wait(30) == 0
    assert not wait_gone(procs)


def test_a_crashing_child_stops_the_stack_with_its_exit_code(tmp_path, supervisors):
    sup = Supervisor(tmp_path, {"steady": "ok", "fragile": "crash"})
    supervisors.append(sup)
    sup.wait_for("fragile exited unexpectedly with code 3")
    assert sup.proc.wait(30) == 3
    steady = json.loads(sup.reports["steady"].read_text())
    left = wait_gone([psutil.Process(pid) for pid in (steady["pid"], steady["grandchild"]) if psutil.pid_exists(pid)])
    assert not left
    assert "plain line from fragile" in sup.text  # its last words were not lost
    assert "Parley is ready." not in sup.text


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path, supervisors):
    sup = Supervisor(tmp_path, {"calm": "ok", "stubborn": "stubborn"}, grace=1)
    supervisors.append(sup)
    sup.wait_for("Ctrl-C stops everything")
    procs = sup.descendants()
    sup.proc.send_signal(signal.SIGINT)
    assert sup.proc.wait(30) == 0
    assert "stubborn: did not stop in time; killing it" in sup.text
    assert "calm: did not stop" not in sup.text
    assert not wait_gone(procs)


def test_a_command_that_cannot_start_stops_the_stack(tmp_path, supervisors):
    sup = Supervisor(tmp_path, {"first": "ok", "missing": "ok"}, argv={"missing": [str(tmp_path / "no-such-program")]})
    supervisors.append(sup)
    sup.wait_for("missing could not start")
    assert sup.proc.wait(30) == 1
    assert not wait_gone(mentioning(tmp_path)), "nats-server or the first service outlived the stack"
    assert "stopped" in sup.text


@pytest.mark.parametrize("who", ["a service", "nats-server"])
def test_a_busy_port_is_named_and_nothing_starts(tmp_path, supervisors, who):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        if who == "nats-server":
            sup = Supervisor(tmp_path, {"svc": "ok"}, env={"PARLEY_NATS_PORT": str(port)})
            sup.nats_port = port
            expected = f"port {port} is already in use; nats-server needs it (set PARLEY_NATS_PORT to use another)"
        else:
            sup = Supervisor(tmp_path, {"svc": "ok"}, ports={"svc": port})
            expected = f"port {port} is already in use; svc needs it"
        supervisors.append(sup)
        assert sup.proc.wait(30) == 2
        err = sup.proc.stderr.read()
    assert expected in err
    assert len(err.strip().splitlines()) == 1
    assert not sup.reports["svc"].exists(), "a service started despite the busy port"
    assert not (sup.var / "nats").exists(), "nats-server started despite the busy port"
