"""Settings: every service's configuration, declared once, typed, checked at start.

Each service has one ``Settings`` class, a pydantic-settings model deriving
from ``ServiceSettings`` (which declares what every service reads: where NATS
is, its identity there, where to serve HTTP, which providers, the log level).
A setting is one line that names its environment variable, its default, a
line of help and what values are allowed::

    threshold: float = setting("PARLEY_ASR_THRESHOLD", 0.5, "speech probability", ge=0.05, le=0.95)

``Settings.from_env(env)`` reads the environment once (never ``Settings()``:
that is the declared defaults, whatever the environment holds, so tests need
not patch anything). A value that is not allowed raises ``SettingsError``,
which names every variable refused, the value it had and what is allowed;
``load(Settings, service)`` turns that into one error line and exit status 2
before anything else starts. Validators that need more than a type and a range
raise ``Invalid("what is allowed")`` and get the same message.

Secrets are declared with ``secret=True``: ``repr()`` and ``parley config``
mask them, and the log formatter redacts their values (``secrets()``).
``parley config`` (parley.config) prints the effective configuration of every
installed service; docs/SETTINGS.md is generated from these declarations and
a test keeps it equal to them. How to add a setting: docs/SETTINGS.md.
"""

from __future__ import annotations

import annotated_types
import logging
import os
import types
import typing
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping

from pydantic import Field, PrivateAttr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from .natsauth import Credentials, read_seed, role_of_seed_file

log = logging.getLogger("parley.settings")

MASK = "********"


def setting(
    env: str,
    default: Any = ...,
    help: str = "",
    *,
    secret: bool = False,
    allowed: str = "",
    shown_default: str | None = None,
    default_factory: typing.Callable[[], Any] | None = None,
    **constraints: Any,
) -> Any:
    """One setting: its variable, default, help line, and constraints
    (``ge``/``le``/``gt``/``lt`` for numbers, ``min_length``/``max_length``/
    ``pattern`` for text; the type comes from the annotation). ``allowed``
    overrides the generated description of what is allowed (when a validator
    checks more than the type); ``shown_default`` is what the docs show for a
    default computed at start (``default_factory``)."""
    extra = {"env": env, "secret": secret, "allowed": allowed, "shown_default": shown_default}
    if default_factory is not None:
        return Field(default_factory=default_factory, validation_alias=env, description=help, json_schema_extra=extra, **constraints)
    return Field(default, validation_alias=env, description=help, json_schema_extra=extra, **constraints)


class Invalid(ValueError):
    """Raised by a setting's validator: the message says what is allowed. A
    check across settings (a model validator) names the variable at fault."""

    def __init__(self, allowed: str, *, variable: str = "", value: Any = None):
        super().__init__(allowed)
        self.variable = variable
        self.value = value


@dataclass(frozen=True)
class Problem:
    variable: str
    value: Any  # what the environment (or the caller) gave
    allowed: str  # what would have been accepted
    help: str = ""

    def __str__(self) -> str:
        shown = MASK if self.value is _SECRET else repr(self.value)
        why = f" ({self.help})" if self.help else ""
        return f"{self.variable} must be {self.allowed}, not {shown}{why}"


_SECRET = object()  # stands for a secret's value in a Problem


def exists(path: Path, kind: Literal["file", "dir"] = "file") -> bool:
    """Whether ``path`` is an existing file (or directory). A name the file
    system cannot even look up (too long, a loop of links) names none."""
    try:
        return path.is_dir() if kind == "dir" else path.is_file()
    except OSError:
        return False


class SettingsError(ValueError):
    """Some settings were refused; each problem names its variable."""

    def __init__(self, service: str, problems: list[Problem]):
        self.service = service
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


# ---------------------------------------------------------------- the base


class _MappingSource(EnvSettingsSource):
    """pydantic-settings' environment source, over a given mapping."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]):
        self._env = env
        super().__init__(settings_cls, case_sensitive=True, env_ignore_empty=True)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._env, True, True, None)


class ServiceSettings(BaseSettings):
    """What every service reads. Subclasses redeclare ``http_port`` with their
    own default port and add their own settings."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",  # a misspelt keyword in a test or a caller fails loudly
        validate_by_name=True,
        validate_by_alias=True,
        case_sensitive=True,
        allow_inf_nan=False,
        arbitrary_types_allowed=True,
        validate_default=False,
    )

    service: ClassVar[str] = "parley"  # the name in logs and in `parley config`
    # Variables no longer read -> what replaced them: set, they stop the
    # service at start instead of being silently ignored.
    retired: ClassVar[dict[str, str]] = {}

    nats_url: str = setting(
        "NATS_URL", "nats://127.0.0.1:4222", "the NATS server(s), comma separated",
        pattern=r"^(nats|tls|ws|wss)://[^,\s]+(,(nats|tls|ws|wss)://[^,\s]+)*$",
        allowed="nats://HOST:PORT (or tls://, ws://, wss://), comma separated",
    )  # fmt: skip
    nats_seed_file: Path | None = setting(
        "PARLEY_NATS_SEED_FILE", None, "this service's NATS nkey seed (parley.natsauth); unset: no NATS authentication",
        allowed="a readable file holding a NATS user nkey seed (SU...)",
    )  # fmt: skip
    nats_tls_ca: Path | None = setting(
        "PARLEY_NATS_TLS_CA", None, "the CA that signed nats-server's certificate (tls:// URLs)", allowed="an existing file"
    )
    nats_replicas: int = setting(
        "PARLEY_NATS_REPLICAS", 1, "copies the NATS cluster keeps of each stream and KV bucket this service creates (1: one server; 3: a three-node cluster)",
        ge=1, le=5,
    )  # fmt: skip
    http_host: str = setting("PARLEY_HTTP_HOST", "127.0.0.1", "address the HTTP server (health, metrics) listens on", min_length=1)
    http_port: int = setting("PARLEY_HTTP_PORT", 8080, "port the HTTP server listens on", ge=1, le=65535)
    providers: Literal["real", "fixed"] = setting(
        "PARLEY_PROVIDERS", "real", "real models, or fixed-latency stand-ins for load tests"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = setting("PARLEY_LOG_LEVEL", "INFO", "the lowest log level written")
    otlp_endpoint: str = setting(
        "OTEL_EXPORTER_OTLP_ENDPOINT", "", "where traces and metrics go over OTLP/HTTP (Jaeger, a collector); unset: nowhere",
        pattern=r"^https?://\S+$", allowed="an http(s):// URL (the collector's OTLP/HTTP base; /v1/traces and /v1/metrics are added)",
    )  # fmt: skip

    _credentials: Credentials = PrivateAttr(default_factory=Credentials)

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_upper(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().upper() in ("DEBUG", "INFO", "WARNING", "ERROR"):
            return value.strip().upper()
        return value

    @field_validator("nats_seed_file")
    @classmethod
    def _readable_seed(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                read_seed(value)
            except OSError as exc:
                raise Invalid(f"a readable file holding a NATS user nkey seed (cannot read it: {exc.strerror})") from None
            except ValueError:
                raise Invalid("a file holding a NATS user nkey seed (it holds none: a seed starts with SU)") from None
        return value

    @field_validator("nats_tls_ca")
    @classmethod
    def _ca_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not exists(value):
            raise Invalid("an existing file (the CA that signed nats-server's certificate)")
        return value

    def model_post_init(self, context: Any) -> None:
        seed = read_seed(self.nats_seed_file) if self.nats_seed_file else ""
        role = role_of_seed_file(self.nats_seed_file) if self.nats_seed_file else ""
        self._credentials = Credentials(seed=seed, role=role, tls_ca=str(self.nats_tls_ca or ""))

    # ------------------------------------------------------------ reading

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any):
        """The settings in ``env`` (default: this process's environment), with
        ``overrides`` (by field name) on top. Empty variables count as unset.
        Raises SettingsError naming every variable refused."""
        env = os.environ if env is None else env
        values = cls._values(env)
        values.update(overrides)
        retired = [Problem(old, env[old], f"unset: it is now {new}") for old, new in cls.retired.items() if env.get(old)]
        try:
            settings = cls(**values)
        except ValidationError as exc:
            raise SettingsError(cls.service, retired + problems(cls, exc)) from None
        if retired:
            raise SettingsError(cls.service, retired)
        return settings

    @classmethod
    def _values(cls, env: Mapping[str, str]) -> dict[str, Any]:
        """Field name -> raw value, for the fields whose variable is set."""
        by_alias = _MappingSource(cls, env)()
        names = {field.validation_alias: name for name, field in cls.model_fields.items()}
        return {names.get(key, key): value for key, value in by_alias.items()}

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, **_sources):
        # Only what from_env (or a test) passes in: constructing Settings()
        # gives the declared defaults whatever this process's environment is.
        return (init_settings,)

    # ------------------------------------------------------------ using

    @property
    def fixed(self) -> bool:
        return self.providers == "fixed"

    @property
    def nats_credentials(self) -> Credentials:
        return self._credentials

    def secrets(self) -> list[str]:
        """The values of the secret settings that are set (for log redaction)."""
        return [v for name, field in type(self).model_fields.items() if _extra(field)["secret"] and (v := str(getattr(self, name) or ""))]

    def __repr_args__(self):
        for name, value in super().__repr_args__():
            field = type(self).model_fields.get(name or "")
            yield name, (MASK if field is not None and _extra(field)["secret"] and value else value)


# ---------------------------------------------------------------- errors


class CloudProvider:
    """For a service whose work a cloud provider may do instead of its
    embedded model (mixed into its ``Settings`` beside ``ServiceSettings``):
    its ``provider``, ``base_url`` and ``model`` settings fall back to the
    provider's public endpoint and model (``provider_defaults``)."""

    provider_defaults: ClassVar[Mapping[str, Mapping[str, str]]] = {}

    def provider_default(self, key: str) -> str:
        return self.provider_defaults.get(self.provider, {}).get(key, "")  # type: ignore[attr-defined]

    @property
    def base(self) -> str:
        return (self.base_url or self.provider_default("base")).rstrip("/")  # type: ignore[attr-defined]

    @property
    def model_name(self) -> str:
        return self.model or self.provider_default("model")  # type: ignore[attr-defined]

    def check_endpoint(self, schemes: tuple[str, str]) -> None:
        """Refuse an endpoint whose scheme is not the provider's protocol
        (``schemes``: the plain one, the secure one)."""
        if self.base.split("://", 1)[0] not in schemes:
            cls = type(self)
            raise Invalid(
                f"a {schemes[1]}:// (or {schemes[0]}://) URL for {variable(cls, 'provider')}={self.provider}",  # type: ignore[attr-defined]
                variable=variable(cls, "base_url"), value=self.base_url,  # type: ignore[attr-defined]
            )  # fmt: skip


def _extra(field: FieldInfo) -> dict:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return {"env": extra.get("env") or "", "secret": bool(extra.get("secret")), "allowed": extra.get("allowed") or "", "shown_default": extra.get("shown_default")}


def variable(cls: type[ServiceSettings], name: str) -> str:
    return _extra(cls.model_fields[name])["env"] or name


def problems(cls: type[ServiceSettings], exc: ValidationError) -> list[Problem]:
    by_alias = {field.validation_alias: (name, field) for name, field in cls.model_fields.items()}
    out: list[Problem] = []
    for err in exc.errors(include_url=False):
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, Invalid) and cause.variable:  # a check across settings
            out.append(Problem(cause.variable, cause.value, str(cause)))
            continue
        key = str(err["loc"][0]) if err["loc"] else ""
        name, field = by_alias.get(key) or (key, cls.model_fields.get(key))
        if field is None:  # a keyword no setting has
            out.append(Problem(key or cls.service, err.get("input"), err["msg"]))
            continue
        meta = _extra(field)
        allowed = str(cause) if isinstance(cause, Invalid) else meta["allowed"] or describe(field)
        value = _SECRET if meta["secret"] else err.get("input")
        out.append(Problem(meta["env"] or name, value, allowed, field.description or ""))
    return out


def describe(field: FieldInfo) -> str:
    """What a field allows, in words: its type and its bounds."""
    kind = _plain(field.annotation)
    optional = kind is not field.annotation
    if typing.get_origin(kind) is Literal:
        text = "one of " + ", ".join(repr(v) for v in typing.get_args(kind))
    elif isinstance(kind, type) and issubclass(kind, Enum):
        text = "one of " + ", ".join(repr(m.value) for m in kind)
    elif kind is bool:
        text = "1 or 0 (true/false, yes/no, on/off)"
    elif kind is int:
        text = "a whole number" + _range(field)
    elif kind is float:
        text = "a number" + _range(field)
    elif kind is Path:
        text = "a path"
    else:
        text = "text" + _length(field)
    return f"{text}, or unset" if optional and field.default is None and kind is not Path else text


def _plain(annotation: Any) -> Any:
    """``X | None`` -> ``X``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def bounds(field: FieldInfo) -> tuple[Any, Any, bool, bool]:
    """(low, high, low inclusive, high inclusive); None where unbounded."""
    low = high = None
    low_in = high_in = True
    for m in field.metadata:
        if isinstance(m, annotated_types.Ge):
            low = m.ge
        elif isinstance(m, annotated_types.Gt):
            low, low_in = m.gt, False
        elif isinstance(m, annotated_types.Le):
            high = m.le
        elif isinstance(m, annotated_types.Lt):
            high, high_in = m.lt, False
    return low, high, low_in, high_in


def _num(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _range(field: FieldInfo) -> str:
    low, high, low_in, high_in = bounds(field)
    if low is not None and high is not None and low_in and high_in:
        return f" from {_num(low)} to {_num(high)}"
    parts = []
    if low is not None:
        parts.append(f"from {_num(low)} up" if low_in else f"above {_num(low)}")
    if high is not None:
        parts.append(f"up to {_num(high)}" if high_in else f"below {_num(high)}")
    return (" " + ", ".join(parts)) if parts else ""


def _length(field: FieldInfo) -> str:
    low = high = None
    pattern = None
    for m in field.metadata:
        low = getattr(m, "min_length", low)
        high = getattr(m, "max_length", high)
        pattern = getattr(m, "pattern", pattern)
    parts = []
    if pattern:
        parts.append(f"matching {pattern}")
    if low and high:
        parts.append(f"of {low} to {high} characters")
    elif low:
        parts.append("not empty" if low == 1 else f"of at least {low} characters")
    elif high:
        parts.append(f"of at most {high} characters")
    return (" " + ", ".join(parts)) if parts else ""


# ---------------------------------------------------------------- start-up


def load(cls: type[ServiceSettings], env: Mapping[str, str] | None = None):
    """A service's start: JSON logs, its settings, then the logs again at
    PARLEY_LOG_LEVEL with its secrets redacted. A refused setting exits with
    status 2 and one error line naming every problem: before a model loads or
    a port is bound, with no traceback."""
    from . import logs

    logs.setup(cls.service)
    try:
        settings = cls.from_env(env)
    except SettingsError as exc:
        log.error(
            f"{cls.service} cannot start: {exc}",
            extra={"settings_errors": [{"variable": p.variable, "allowed": p.allowed} for p in exc.problems]},
        )
        raise SystemExit(2) from None
    logs.setup(cls.service, settings.log_level, secrets=settings.secrets())
    return settings
