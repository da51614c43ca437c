"""``parley config``: every installed service's effective settings, and their docs.

Services never import each other, so this finds them the way plugins are
found: each service's package declares its settings class under the
``parley.settings`` entry-point group (its pyproject.toml). What is installed
here is what is shown; a container holding one service shows that one.

    parley config                 effective settings of every service (secrets masked)
    parley config asr tts         of these
    parley config --json          the same, as JSON
    parley config --markdown asr  the settings table of one service (docs)
    parley config --write FILE..  regenerate the tables between the markers
                                  ``<!-- parley config NAME -->`` and ``<!-- /parley config -->``
                                  (NAME: a service, or ``common`` for what every service reads)

Exit status 2 when any service would refuse its settings (each problem is
printed with its variable): ``parley config`` is also the check to run before
starting a deployment.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import asdict, dataclass
from enum import Enum
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Mapping

from .settings import MASK, ServiceSettings, SettingsError, _extra, describe

GROUP = "parley.settings"
COMMON = "common"


def installed() -> dict[str, type[ServiceSettings]]:
    """Service name -> settings class, for every service installed here."""
    return {ep.name: ep.load() for ep in sorted(entry_points(group=GROUP), key=lambda ep: ep.name)}


@dataclass(frozen=True)
class Row:
    variable: str
    value: str  # effective (secrets masked)
    default: str
    allowed: str
    help: str
    origin: str  # "env" or "default"


def shown(value: Any) -> str:
    """A value as a person would write it in the environment."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return str(value)  # a named tuple says itself (a rate: 20/60)
    if isinstance(value, (tuple, list)):
        return ",".join(shown(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def own_fields(cls: type[ServiceSettings]) -> list[str]:
    """The fields a service adds, or whose default it changes (its port)."""
    base = ServiceSettings.model_fields
    return [n for n, f in cls.model_fields.items() if n not in base or f.default != base[n].default]


def rows(cls: type[ServiceSettings], env: Mapping[str, str] | None = None, names: list[str] | None = None) -> list[Row]:
    """One row per setting; with ``env``, the effective values (raises SettingsError).
    A family of variables (``PARLEY_POLICY_<FIELD>``) gets a row per member set."""
    settings = cls.from_env(env) if env is not None else None
    out = []
    for name in names or list(cls.model_fields):
        field = cls.model_fields[name]
        meta = _extra(field)
        default = meta["shown_default"] if meta["shown_default"] is not None else shown(field.get_default(call_default_factory=False))
        allowed = meta["allowed"] or describe(field)
        if meta["secret"]:
            allowed = f"{allowed} (a secret: masked here and in logs)"
        value = getattr(settings, name) if settings is not None else None
        if isinstance(value, dict) and "<" in meta["env"]:
            prefix = meta["env"].split("<")[0]
            out += [Row(f"{prefix}{k.upper()}", shown(v), "", allowed, field.description or "", "env") for k, v in value.items()]
            continue
        shown_value, origin = default, "default"
        if settings is not None:
            shown_value = shown(value)
            origin = "env" if (env or {}).get(meta["env"]) else "default"
        if meta["secret"]:
            shown_value, default = (MASK if shown_value else ""), ""
        out.append(Row(meta["env"], shown_value, default, allowed, field.description or "", origin))
    return out


def markdown(cls: type[ServiceSettings], names: list[str] | None = None) -> str:
    lines = ["| variable | default | allowed | meaning |", "| --- | --- | --- | --- |"]
    for r in rows(cls, names=names):
        default = f"`{r.default}`" if r.default else "unset"
        lines.append(f"| `{r.variable}` | {default} | {_cell(r.allowed)} | {_cell(r.help)} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table_for(name: str, services: Mapping[str, type[ServiceSettings]] | None = None) -> str:
    if name == COMMON:
        return markdown(ServiceSettings)
    services = installed() if services is None else services
    if name not in services:
        raise KeyError(f"no installed service is called {name!r} (installed: {', '.join(services) or 'none'})")
    return markdown(services[name], own_fields(services[name]))


BLOCK = re.compile(r"(<!-- parley config (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /parley config -->)", re.S)


def regenerate(text: str, services: Mapping[str, type[ServiceSettings]] | None = None) -> str:
    """``text`` with every marked block replaced by its generated table."""
    return BLOCK.sub(lambda m: m.group(1) + table_for(m.group("name"), services) + m.group(4), text)


def effective(services: Mapping[str, type[ServiceSettings]], env: Mapping[str, str]) -> tuple[dict, list[str]]:
    """{service: [Row]} and the problems (each naming service and variable)."""
    out: dict[str, list[Row]] = {}
    problems: list[str] = []
    for name, cls in services.items():
        try:
            out[name] = rows(cls, env)
        except SettingsError as exc:
            problems += [f"{name}: {p}" for p in exc.problems]
            out[name] = rows(cls)
    return out, problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="parley config", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("services", nargs="*", help="service names (default: every installed one)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--markdown", action="store_true", help="the documentation table instead of the effective values")
    p.add_argument("--write", nargs="+", type=Path, metavar="FILE", help="regenerate the marked tables in these files")
    a = p.parse_args(argv)
    services = installed()
    if a.write:
        for path in a.write:
            path.write_text(regenerate(path.read_text(), services))
        return 0
    unknown = [s for s in a.services if s not in services and s != COMMON]
    if unknown:
        print(f"parley config: unknown service {', '.join(unknown)} (installed: {', '.join(services)})", file=sys.stderr)
        return 2
    if a.markdown:
        sys.stdout.write("\n".join(table_for(s, services) for s in a.services or [COMMON, *services]))
        return 0
    chosen = {s: services[s] for s in a.services} if a.services else services
    table, problems = effective(chosen, os.environ)
    if a.json:
        print(json.dumps({"services": {s: [asdict(r) for r in rs] for s, rs in table.items()}, "problems": problems}, indent=2))
    else:
        print(text(table, problems))
    return 2 if problems else 0


def text(table: Mapping[str, list[Row]], problems: list[str]) -> str:
    lines = []
    for service, rs in table.items():
        lines.append(f"{service}:")
        width = max(len(r.variable) for r in rs)
        for r in rs:
            mark = "" if r.origin == "default" else "   (set)"
            lines.append(f"  {r.variable:<{width}}  {r.value or '(unset)'}{mark}")
    if problems:
        lines += ["", "refused (the service would not start):", *(f"  {p}" for p in problems)]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
