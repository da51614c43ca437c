"""docker-compose.yml, the Dockerfiles and deploy/ agree with each other and with the code.

No Docker engine runs here, so these tests read the files: every build
context and Dockerfile exists, each container runs a module that exists in
the package its Dockerfile installs, the scalable services can be scaled,
and the ports match what `make run` uses.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from parley import natsd

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
BUILT = {name: svc for name, svc in SERVICES.items() if "build" in svc}
SCALABLE = ("asr", "orchestrator", "tts")
NATS_NODES = ("nats-1", "nats-2", "nats-3")

_spec = importlib.util.spec_from_file_location("devstack", ROOT / "deploy" / "devstack.py")
devstack = importlib.util.module_from_spec(_spec)
sys.modules["devstack"] = devstack
_spec.loader.exec_module(devstack)


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")))
    pairs = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def dockerfile_of(name: str) -> Path:
    build = BUILT[name]["build"]
    return (ROOT / build["context"]) / build["dockerfile"]


def pyproject_beside(dockerfile: Path) -> dict:
    return tomllib.loads((dockerfile.parent / "pyproject.toml").read_text())


def command_module(command: list[str]) -> str:
    assert command[:2] == ["python", "-m"], command
    return command[2]


def test_the_stack_has_three_nats_nodes_jaeger_and_the_four_services():
    assert set(SERVICES) == {*NATS_NODES, "jaeger", "media-gateway", "asr", "orchestrator", "tts"}
    assert set(BUILT) == {"media-gateway", "asr", "orchestrator", "tts"}


def test_every_service_directory_is_in_the_compose_file():
    dirs = {p.parent.name for p in ROOT.glob("services/*/pyproject.toml")}
    assert dirs == set(BUILT), "a service without a container, or a container without a service"


@pytest.mark.parametrize("name", sorted(BUILT))
def test_build_context_is_the_repo_root_and_the_dockerfile_exists(name):
    build = BUILT[name]["build"]
    assert (ROOT / build["context"]).resolve() == ROOT, "context must be the repo root: images copy shared/ and uv.lock"
    assert build["dockerfile"] == f"services/{name}/Dockerfile"
    assert dockerfile_of(name).is_file()


@pytest.mark.parametrize("name", sorted(BUILT))
def test_the_command_names_a_module_of_the_package_the_dockerfile_installs(name):
    dockerfile = dockerfile_of(name)
    project = pyproject_beside(dockerfile)
    module = command_module(BUILT[name]["command"])
    assert (dockerfile.parent / module / "__main__.py").is_file(), f"{name}: no {module}/__main__.py"
    assert module in project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]

    steps = dockerfile_instructions(dockerfile)
    syncs = [shlex.split(args) for op, args in steps if op == "RUN" and args.startswith("uv sync")]
    assert syncs, f"{dockerfile} never runs uv sync"
    for argv in syncs:
        assert "--frozen" in argv and "--no-dev" in argv, argv
        assert argv[argv.index("--package") + 1] == project["project"]["name"]
    assert ("CMD", f'["python", "-m", "{module}"]') in steps  # the image alone runs the same thing
    assert steps[0] == ("FROM", "python:3.11-slim")


@pytest.mark.parametrize("name", sorted(BUILT))
def test_every_file_the_dockerfile_copies_exists(name):
    for op, args in dockerfile_instructions(dockerfile_of(name)):
        if op == "COPY":
            *sources, _dest = args.split()
            for source in sources:
                assert (ROOT / source).exists(), f"{name}: COPY {source} is not in the repo"


@pytest.mark.parametrize("name", sorted(BUILT))
def test_containers_listen_on_all_interfaces_at_the_port_make_run_uses(name):
    env = BUILT[name]["environment"]
    defaults = {s.name: s.port for s in devstack.default_services({}, "python")}
    assert env["PARLEY_HTTP_HOST"] == "0.0.0.0"
    assert int(env["PARLEY_HTTP_PORT"]) == defaults[name]
    assert env["NATS_URL"].split(",") == [f"nats://{node}:4222" for node in NATS_NODES]  # any node will do
    assert env["PARLEY_NATS_REPLICAS"] == str(len(NATS_NODES))  # every stream on every node
    assert set(NATS_NODES) <= set(BUILT[name]["depends_on"])
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
    steps = dockerfile_instructions(dockerfile_of(name))
    assert ("EXPOSE", str(defaults[name])) in steps


@pytest.mark.parametrize("name", SCALABLE)
def test_scalable_services_have_no_fixed_name_or_host_port(name):
    svc = SERVICES[name]
    assert "container_name" not in svc
    assert not svc.get("ports"), f"{name} publishes a host port, so --scale {name}=2 would collide"


def test_only_the_orchestrator_gets_the_llm_settings():
    for name, svc in BUILT.items():
        has = {k for k in svc["environment"] if k.startswith("LLM_")}
        assert has == ({"LLM_BASE_URL", "LLM_API_KEY", "LLM_MODEL"} if name == "orchestrator" else set()), name


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_nats_runs_a_three_node_jetstream_cluster_with_the_generated_config_and_jaeger_takes_otlp():
    routes = None
    for node in NATS_NODES:
        nats = SERVICES[node]
        # Pinned consumers (the event partitions' priority groups) need 2.11.
        assert nats["image"].startswith("nats:2.11")
        command = nats["command"]
        assert "-js" in command
        assert flag(command, "-c") == "/run/secrets/nats_config" and "nats_config" in nats["secrets"]
        assert flag(command, "-n") == node  # unique: JetStream's RAFT knows servers by name
        assert flag(command, "--cluster_name") == "parley"
        assert flag(command, "--cluster") == "nats://0.0.0.0:6222"
        assert routes in (None, flag(command, "--routes"))
        routes = flag(command, "--routes")
        assert nats["volumes"] == [f"{node}-data:/data"]  # a store of its own
        assert f"{node}-data" in COMPOSE["volumes"]
    assert routes.split(",") == [f"nats://{node}:6222" for node in NATS_NODES]
    assert COMPOSE["secrets"]["nats_config"]["file"] == "./var/secrets/nats/nats-server.conf"

    jaeger = SERVICES["jaeger"]
    assert jaeger["image"].startswith("jaegertracing/all-in-one")
    assert str(jaeger["environment"]["COLLECTOR_OTLP_ENABLED"]).lower() == "true"
    assert "127.0.0.1:16686:16686" in jaeger["ports"]


def test_nats_is_reachable_only_on_the_internal_network():
    for node in NATS_NODES:
        assert not SERVICES[node].get("ports")
        assert SERVICES[node]["networks"] == ["bus"]
    assert COMPOSE["networks"]["bus"]["internal"] is True
    for name, svc in BUILT.items():
        assert "bus" in svc["networks"], name
    assert SERVICES["asr"]["networks"] == ["bus"] and SERVICES["tts"]["networks"] == ["bus"]


@pytest.mark.parametrize("name", sorted(BUILT))
def test_each_service_gets_only_its_own_nats_key(name):
    from parley import natsauth

    role = natsauth.SERVICE_ROLES[name]
    svc = BUILT[name]
    assert svc["secrets"] == [f"nats_{role}"]
    assert svc["environment"]["PARLEY_NATS_SEED_FILE"] == f"/run/secrets/nats_{role}"
    assert COMPOSE["secrets"][f"nats_{role}"]["file"] == f"./var/secrets/nats/{role}.nk"


def test_nats_server_accepts_our_config():
    result = subprocess.run([natsd.binary(), "-c", str(ROOT / "deploy" / "nats.conf"), "-t"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "is valid" in result.stdout + result.stderr


@pytest.mark.parametrize("node", NATS_NODES)
def test_nats_server_accepts_our_config_with_each_nodes_cluster_flags(node, tmp_path):
    local = {"/run/secrets/nats_config": str(ROOT / "deploy" / "nats.conf"), "/data": str(tmp_path)}
    argv = [natsd.binary(), *(local.get(a, a) for a in SERVICES[node]["command"]), "-t"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_docker_compose_accepts_the_file():
    # deploy/system-deps.sh installs Debian's docker-compose 1.29 (make test):
    # it validates the file offline against the Compose schema.
    assert shutil.which("docker-compose"), "docker-compose is missing: run deploy/system-deps.sh"
    result = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_make_uses_the_lock_frozen_and_ci_runs_make_test():
    plan = subprocess.run(["make", "-n", "-C", str(ROOT), "run", "test"], capture_output=True, text=True, timeout=30)
    assert plan.returncode == 0, plan.stderr
    assert "sync --frozen" in plan.stdout
    assert "deploy/devstack.py" in plan.stdout and "pytest" in plan.stdout
    ci = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in ci and "make test" in ci
