"""The `make run` supervisor (deploy/devstack.py), run for real with stand-in services.

The stand-ins are tiny HTTP servers answering /healthz (503 twice, then 200),
each with a grandchild in its process group, so the tests can check that
Ctrl-C leaves no process behind. nats-server is the real one from the venv,
with deploy/nats.conf, on a free port.

The harness reads the supervisor's output with ``select`` and no threads or
timed lock waits, so these tests also run under libfaketime (where a timed
``Condition.wait`` never times out).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
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
marker = report.with_suffix(".crashed")  # crash-once: crashed already

# Ask the real nats-server who it is: proves it runs, with our config.
host, nport = os.environ["NATS_URL"].removeprefix("nats://").rsplit(":", 1)
with socket.create_connection((host, int(nport)), timeout=5) as s:
    info = json.loads(s.makefile().readline().removeprefix("INFO "))

sleeper = subprocess.Popen(["sleep", "300"])  # a grandchild in our process group
keys = ("NATS_URL", "PARLEY_PROVIDERS", "LLM_API_KEY", "TWILIO_AUTH_TOKEN", "PARLEY_DATA_DIR", "PARLEY_HTTP_HOST", "PARLEY_HTTP_PORT")
facts = json.dumps({
    "pid": os.getpid(), "grandchild": sleeper.pid, "env": {k: os.environ.get(k) for k in keys},
    "jetstream": info.get("jetstream"), "max_payload": info.get("max_payload"),
})
report.write_text(facts)
report.with_name(f"{report.stem}.{port}.json").write_text(facts)  # one per replica
print(json.dumps({"ts": time.time(), "level": "info", "service": name, "msg": "stand-in up"}), file=sys.stderr, flush=True)
print(f"plain line from {name}", flush=True)
if mode == "crash" or (mode == "crash-once" and not marker.exists()):
    marker.write_text(facts)
    time.sleep(0.5)
    print(f"last words from {name}", flush=True)
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


def test_replicas_parse_and_each_replica_gets_a_name_and_a_port():
    services = devstack.default_services({}, "/py")
    names = [s.name for s in services]
    counts = devstack.parse_replicas(" orchestrator=2, asr=3,tts=1 ", names)
    assert counts == {"orchestrator": 2, "asr": 3, "tts": 1}
    assert devstack.parse_replicas("", names) == {}
    stack = devstack.replicate(services, counts)
    assert [(s.name, s.port, s.kind) for s in stack] == [
        ("media-gateway", 8080, "media-gateway"),  # one gateway unless asked
        ("asr#1", 8081, "asr"), ("asr#2", 8181, "asr"), ("asr#3", 8281, "asr"),
        ("orchestrator#1", 8082, "orchestrator"), ("orchestrator#2", 8182, "orchestrator"),
        ("tts", 8083, "tts"),
    ]
    # Private variables follow the kind: every orchestrator replica sees LLM_*, nobody else does.
    base = {"LLM_API_KEY": "k", "PATH": "/bin"}
    assert all(("LLM_API_KEY" in devstack.child_env(base, s, stack, {})) == (s.kind == "orchestrator") for s in stack)
    with pytest.raises(ValueError, match="PARLEY_REPLICAS='tts=9999'"):
        devstack.parse_replicas("tts=9999", names)
    with pytest.raises(ValueError, match="would need port"):
        devstack.replicate([devstack.Service("x", ("x",), 65500)], {"x": 2})


@given(st.lists(st.floats(min_value=0, max_value=120), min_size=1, max_size=30))
def test_restart_backoff_doubles_while_dying_young_is_capped_and_resets_after_a_stable_run(uptimes):
    policy = devstack.Backoff(first_s=0.5, cap_s=30, stable_s=30, loop_after=3)
    history, young = devstack.Restarts(), 0
    for n, uptime in enumerate(uptimes, 1):
        history, delay, looping = devstack.after_death(history, uptime, 3, policy)
        young = young + 1 if uptime < policy.stable_s else 0
        assert history.total == n and history.young == young and history.last_code == 3
        assert delay == min(0.5 * 2 ** max(young - 1, 0), 30)
        assert 0.5 <= delay <= 30
        assert looping == (young >= 3)


@given(st.lists(st.binary(max_size=50), max_size=20))
def test_split_lines_loses_nothing_and_cuts_only_at_newlines(chunks):
    pending, lines = b"", []
    for chunk in chunks:
        done, pending = devstack.split_lines(pending, chunk, limit=1000)
        lines += done
    assert b"\n".join([*lines, pending]) == b"".join(chunks)
    assert all(b"\n" not in line for line in lines)


def test_a_very_long_line_is_passed_on_in_pieces():
    done, rest = devstack.split_lines(b"", b"x" * 25, limit=10)
    assert done == [b"x" * 10, b"x" * 10] and rest == b"x" * 5


def test_banner_states_the_mode_the_key_twilio_and_never_puts_the_inspector_token_in_a_url():
    env = {"PARLEY_DEMO": "local", "PARLEY_API_KEY": "k3y", "PARLEY_TWILIO_INSECURE": "1"}
    lines = devstack.banner("http://127.0.0.1:8080/", "b", "real", "nats://x", Path("l"), "t0ken", security=
                            devstack.security_lines(env, Path("var/secrets/api_key"), Path("var/secrets/nats")))
    text = "\n".join(lines)
    assert "LOCAL DEMO" in text and "k3y" in text and "var/secrets/api_key" in text and "INSECURE" in text
    assert "t0ken" in text and not any("token=" in line or "?t0ken" in line for line in lines)
    assert "off (set TWILIO_AUTH_TOKEN" in "\n".join(devstack.security_lines({}, None, None))
    assert "no demo mode" in "\n".join(devstack.security_lines({"PARLEY_DEMO": ""}, None, None))


def test_the_api_key_is_made_once_and_kept_private(tmp_path):
    first = devstack.stored_secret(tmp_path / "secrets" / "api_key")
    assert len(first) >= 24 and devstack.stored_secret(tmp_path / "secrets" / "api_key") == first
    assert oct((tmp_path / "secrets" / "api_key").stat().st_mode & 0o777) == "0o600"


# --- the real thing, with stand-ins ---------------------------------------------------


class Supervisor:
    """deploy/devstack.py as a child process, its output collected line by line."""

    def __init__(self, tmp_path: Path, modes: dict[str, str], env: dict[str, str] | None = None,
                 ports: dict[str, int] | None = None, argv: dict[str, list[str]] | None = None, grace: float = 5,
                 backoff: float = 0.5):
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
            [sys.executable, str(DEVSTACK), "--services", str(spec), "--var", str(self.var), "--grace", str(grace), "--backoff", str(backoff)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, start_new_session=True,
        )
        self.lines: list[str] = []
        self.partial = b""
        self.eof = False
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.proc.stdout, selectors.EVENT_READ)

    def _collect(self, timeout: float) -> None:
        """Take in what the supervisor printed, waiting up to ``timeout`` for some."""
        if self.eof or not self.selector.select(timeout):
            return
        try:
            data = os.read(self.proc.stdout.fileno(), 65536)
        except BlockingIOError:
            return
        if not data:
            self.eof = True
            data = b"\n" if self.partial else b""
        *done, self.partial = (self.partial + data).split(b"\n")
        self.lines += [line.decode("utf-8", "replace") for line in done]

    @property
    def text(self) -> str:
        while not self.eof and self.selector.select(0):
            self._collect(0)
        return "\n".join(self.lines)

    def wait_for(self, needle: str, timeout: float = 60, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while sum(needle in line for line in self.lines) < count and not self.eof and time.monotonic() < deadline:
            self._collect(min(0.5, max(0.0, deadline - time.monotonic())))
        assert self.text.count(needle) >= count, f"{needle!r} never appeared {count}x; output:\n{self.text}\nstderr:\n{self.stderr()}"

    def stderr(self) -> str:
        return self.proc.stderr.read().decode("utf-8", "replace") if self.proc.poll() is not None else "(still running)"

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


def test_a_child_that_dies_is_started_again_and_the_rest_keeps_running(tmp_path, supervisors):
    sup = Supervisor(tmp_path, {"steady": "ok", "fragile": "crash-once"})
    supervisors.append(sup)
    sup.wait_for("Ctrl-C stops everything")
    out = sup.text
    assert "last words from fragile" in out  # what it said before dying was not lost
    assert out.index("fragile exited unexpectedly with code 3") < out.index("fragile: started again") < out.index("Parley is ready.")
    assert "starting it again in 0.5 s (restart 1)" in out and "crash loop" not in out
    first = json.loads(sup.reports["fragile"].with_suffix(".crashed").read_text())
    assert not wait_gone([psutil.Process(first["grandchild"])] if psutil.pid_exists(first["grandchild"]) else []), "the dead child's group was not swept"
    steady = json.loads(sup.reports["steady"].read_text())
    assert out.count("steady: starting") == 1 and psutil.pid_exists(steady["pid"])  # untouched
    procs = sup.descendants()
    sup.proc.send_signal(signal.SIGINT)
    assert sup.proc.wait(30) == 0
    assert not wait_gone(procs)
    assert "restarts during this run: fragile 1x (last exit code 3)" in sup.text


def test_a_crash_loop_is_reported_loudly_and_ctrl_c_still_stops_everything(tmp_path, supervisors):
    sup = Supervisor(tmp_path, {"steady": "ok", "fragile": "crash"}, backoff=0.1)
    supervisors.append(sup)
    sup.wait_for("fragile is in a crash loop", count=2)
    out = sup.text
    # Backing off: each young death doubles the wait.
    for restart, delay in ((1, "0.1"), (2, "0.2"), (3, "0.4"), (4, "0.8")):
        assert f"starting it again in {delay} s (restart {restart})" in out, out
    assert "it died 3 times in a row" in out and "it died 4 times in a row" in out
    assert "Parley is ready." not in out  # not all ready, and not pretending
    steady = json.loads(sup.reports["steady"].read_text())
    assert out.count("steady: starting") == 1 and psutil.pid_exists(steady["pid"])
    sup.proc.send_signal(signal.SIGINT)
    assert sup.proc.wait(30) == 0
    assert not wait_gone(mentioning(tmp_path)), "something outlived the stack"
    assert "restarts during this run: fragile" in sup.text


def _free_pair(step: int = 100) -> int:
    """A port p with p + step free too (replica 2's)."""
    for _ in range(50):
        port = free_port()
        if port + step < 65536 and not devstack.port_busy(port + step, "127.0.0.1"):
            return port
    raise RuntimeError("no free pair of ports")


def test_replicas_each_get_a_port_and_a_prefix(tmp_path, supervisors):
    base = _free_pair()
    sup = Supervisor(tmp_path, {"front": "ok", "brainy": "ok"}, env={"PARLEY_REPLICAS": "brainy=2"}, ports={"brainy": base})
    supervisors.append(sup)
    sup.wait_for("Ctrl-C stops everything")
    out = sup.text
    assert "brainy#1 | plain line from brainy" in out and "brainy#2 | plain line from brainy" in out
    assert f"brainy#1: starting on port {base}" in out and f"brainy#2: starting on port {base + 100}" in out
    assert "replicas:   brainy x2" in out
    one, two = (json.loads((tmp_path / f"brainy.{p}.json").read_text()) for p in (base, base + 100))
    assert one["pid"] != two["pid"]
    assert one["env"]["PARLEY_DATA_DIR"] == two["env"]["PARLEY_DATA_DIR"] == str(sup.var / "brainy")  # one appointment book
    assert one["env"]["LLM_API_KEY"] == two["env"]["LLM_API_KEY"]  # private variables reach every replica
    assert "front#" not in out  # one gateway unless asked
    procs = sup.descendants()
    sup.proc.send_signal(signal.SIGTERM)
    assert sup.proc.wait(30) == 0
    assert not wait_gone(procs)


@pytest.mark.parametrize("value, complaint", [
    ("brainy=two", "the count for 'brainy' must be a whole number"),
    ("brainy=0", "the count for 'brainy' must be a whole number"),
    ("ghost=2", "no service called 'ghost'"),
    ("brainy", "'brainy' is not service=count"),
    ("brainy=2,brainy=3", "'brainy' is given twice"),
])
def test_a_bad_replicas_setting_is_named_and_nothing_starts(tmp_path, supervisors, value, complaint):
    sup = Supervisor(tmp_path, {"brainy": "ok"}, env={"PARLEY_REPLICAS": value})
    supervisors.append(sup)
    assert sup.proc.wait(30) == 2
    err = sup.stderr()
    assert f"PARLEY_REPLICAS={value!r}" in err and complaint in err, err
    assert not (sup.var / "nats").exists()


def test_a_refused_service_setting_is_named_and_nothing_starts(tmp_path, supervisors):
    """The stack checks each installed service's settings (parley.settings) as
    that service will get them, before nats-server or any child starts."""
    sup = Supervisor(tmp_path, {"asr": "ok", "tts": "ok"}, env={"PARLEY_ASR_THRESHOLD": "abc", "PARLEY_TTS_THREADS": "0"})
    supervisors.append(sup)
    assert sup.proc.wait(30) == 2
    err = sup.stderr()
    assert "make run: asr: PARLEY_ASR_THRESHOLD must be a number from 0.05 to 0.95, not 'abc'" in err, err
    assert "make run: tts: PARLEY_TTS_THREADS must be a whole number from 1 to 64, not '0'" in err, err
    assert not (sup.var / "nats").exists()


def test_signals_at_random_moments_always_stop_the_stack(tmp_path):
    """SIGINT and SIGTERM, in bursts, at random moments from start-up to the
    banner and after: the supervisor stops every time and leaves nothing."""

    def trial(seed: int) -> str:
        rng = random.Random(seed)
        root = tmp_path / f"trial{seed}"
        root.mkdir()
        sup = Supervisor(root, {"one": "ok", "two": "ok"}, grace=2)
        try:
            # Our handlers are in place from here on. Three supervisors start at once: on a
            # loaded CI box the first line once took more than the usual 60 s.
            sup.wait_for("starting nats-server", timeout=180)
            time.sleep(rng.uniform(0, 2.0))
            for _ in range(rng.randint(1, 6)):
                sup.proc.send_signal(rng.choice((signal.SIGINT, signal.SIGTERM)))
                time.sleep(rng.uniform(0, 0.05))
            try:
                code = sup.proc.wait(30)
            except subprocess.TimeoutExpired:
                return f"seed {seed}: still running 30 s after the signals:\n{sup.text}"
            if code != 0:
                return f"seed {seed}: exit code {code}:\n{sup.text}\n{sup.stderr()}"
            if left := wait_gone(mentioning(root)):
                return f"seed {seed}: left behind {[p.pid for p in left]}"
            return ""
        finally:
            sup.cleanup()

    with ThreadPoolExecutor(3) as pool:
        failures = [f for f in pool.map(trial, range(12)) if f]
    assert not failures, "\n\n".join(failures)


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
        err = sup.stderr()
    assert expected in err
    assert len(err.strip().splitlines()) == 1
    assert not sup.reports["svc"].exists(), "a service started despite the busy port"
    assert not (sup.var / "nats").exists(), "nats-server started despite the busy port"
