"""Who may say what on the bus: one NATS identity per service, least privilege.

Each service connects with its own nkey (an Ed25519 key pair: the server's
configuration holds only the public key and the service signs the server's
challenge with its seed, so the secret never crosses the network, TLS or
not). Its permissions are the subjects it needs and no more, written here
from ``parley.subjects``, JetStream API subjects scoped to the streams,
consumers and buckets it uses, and an inbox prefix of its own
(``_INBOX.<its public key>``), so one service cannot read another's replies.

Why nkeys rather than passwords or JWTs: a password travels to the server on
every connect (readable without TLS, and stored in the server's config);
JWT/operator mode needs an account server or resolver and tooling to mint
user JWTs, for one account and five identities. nkeys are the server's own
mechanism for exactly this, and nats-py supports them (``nkeys_seed_str``).

``ROLES`` is the table; ``server_config`` renders it as nats-server's
``authorization`` block; ``ensure`` creates the seeds once (``make run``:
``var/secrets/nats``, mode 0600) and ``Credentials.from_env`` reads a
service's seed (``PARLEY_NATS_SEED_FILE``). ``tests/test_natsauth.py`` proves
against a real server that a client without credentials, and each service
outside its permissions, is refused, and that every subject in
``parley.subjects`` has a publisher and a subscriber here.
"""

from __future__ import annotations

import inspect
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

from . import subjects

SEED_FILE_ENV = "PARLEY_NATS_SEED_FILE"
TLS_CA_ENV = "PARLEY_NATS_TLS_CA"

# --- subject patterns, from the functions in parley.subjects -----------------

_STR, _INT = "zz0sessionzz", 987654321


def wildcard(fn: Callable[..., str]) -> str:
    """The subject ``fn`` builds, with each of its arguments a ``*`` wildcard
    (``wildcard(subjects.tts_audio)`` == ``"parley.tts.audio.*.*"``)."""
    params = inspect.signature(fn).parameters.values()
    args = [_INT if p.annotation in (int, "int") else _STR for p in params]
    out = fn(*args)
    return ".".join("*" if t in (_STR, str(_INT)) else t for t in out.split("."))


def inbox(public_key: str) -> str:
    """The prefix of one identity's reply subjects (nats-py ``inbox_prefix``):
    its public key, so that the prefix follows the key whatever the seed
    file is called, and nobody else may subscribe there."""
    return f"_INBOX.{public_key}"


def _js(verb: str, *names: str) -> str:
    return ".".join(("$JS.API", verb, *names))


def _kv_stream(bucket: str) -> str:
    return f"KV_{bucket}"


def _stream_reader(stream: str) -> tuple[str, ...]:
    """Read a stream from the start with an ordered consumer (nats-py makes an
    ephemeral consumer, and acknowledges flow control), or one message directly."""
    return (
        _js("STREAM.INFO", stream),
        _js("CONSUMER.CREATE", stream),
        _js("CONSUMER.CREATE", stream, ">"),
        _js("CONSUMER.DELETE", stream, "*"),
        _js("CONSUMER.INFO", stream, "*"),
        _js("DIRECT.GET", stream),
        _js("DIRECT.GET", stream, ">"),
        _js("STREAM.MSG.GET", stream),
        f"$JS.FC.{stream}.>",
    )


def _kv_writer(bucket: str) -> tuple[str, ...]:
    s = _kv_stream(bucket)
    return (
        _js("STREAM.CREATE", s),
        _js("STREAM.UPDATE", s),
        *_stream_reader(s),
        f"$KV.{bucket}.>",
    )


def _event_stream_owner() -> tuple[str, ...]:
    """The orchestrator: creates the event stream and its partition consumers,
    pulls each partition (pinned), unpins a dead replica's, acks, and reads a
    session's stored events back on catch-up (directly with one copy; from
    the stream's leader with several: a follower may lag)."""
    s = subjects.EVENTS_STREAM
    return (
        _js("STREAM.CREATE", s),
        _js("STREAM.UPDATE", s),
        _js("STREAM.INFO", s),
        _js("CONSUMER.CREATE", s, "*"),
        _js("CONSUMER.CREATE", s, "*", ">"),
        _js("CONSUMER.INFO", s, "*"),
        _js("CONSUMER.MSG.NEXT", s, "*"),
        _js("CONSUMER.UNPIN", s, "*"),
        _js("DIRECT.GET", s),
        _js("DIRECT.GET", s, ">"),
        _js("STREAM.MSG.GET", s),
        f"$JS.ACK.{s}.>",
    )


def _tts_puller() -> tuple[str, ...]:
    """A TTS worker: makes its durable consumer if missing, pulls one request
    at a time, acks and says "in progress". It may not make the stream: a
    worker that could would choose its subjects (callers' audio, say) and
    read them through its consumer; the orchestrator makes it."""
    s, c = subjects.TTS_STREAM, subjects.TTS_CONSUMER
    return (
        _js("STREAM.INFO", s),
        _js("CONSUMER.CREATE", s, c),
        _js("CONSUMER.CREATE", s, c, ">"),
        _js("CONSUMER.DURABLE.CREATE", s, c),
        _js("CONSUMER.INFO", s, c),
        _js("CONSUMER.MSG.NEXT", s, c),
        f"$JS.ACK.{s}.>",
    )


@dataclass(frozen=True)
class Role:
    """One identity's permissions. ``subscribe`` entries may name a queue
    group (``"subject group"``): the role may then subscribe only in it.
    ``responds``: it answers requests (NATS ``allow_responses``: one reply to
    each request it received, on the reply subject the requester chose)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    responds: bool = False
    about: str = ""

    def subscribe_subjects(self) -> tuple[str, ...]:
        return tuple(s.split(" ", 1)[0] for s in self.subscribe)


def events_of(producer: str) -> str:
    """The session events one producer may publish (any session, its own
    producer token only: contract.PRODUCERS says which types are its)."""
    if producer not in subjects.PRODUCERS:
        raise ValueError(f"unknown event producer {producer!r}")
    return f"{subjects.PREFIX}.evt.*.{producer}"


def load_of(kind: str) -> str:
    """The load reports one kind of service may publish (parley.load)."""
    return f"{subjects.PREFIX}.load.{kind}.*"


CREATE_EVENT_STREAM = _js("STREAM.CREATE", subjects.EVENTS_STREAM)  # only the orchestrator makes the stream

ROLES: dict[str, Role] = {
    "gateway": Role(
        about="media-gateway: callers' audio in, agent audio out, the inspector",
        publish=(
            wildcard(subjects.audio_in),
            wildcard(subjects.audio_native),
            events_of("gateway"),
            wildcard(subjects.control),
            wildcard(subjects.notices),
            subjects.ASR_CLAIM,
            wildcard(subjects.asr_alive),
            wildcard(subjects.tts_alive),
            subjects.ORCHESTRATOR_INFO,
            subjects.ORCHESTRATOR_CALLBACKS,
            _js("STREAM.NAMES"),
            *_stream_reader(subjects.LOG_STREAM),  # the inspector replays a call's steps
            *_kv_writer(subjects.GRANTS_BUCKET),  # session tokens, shared by every gateway replica
            load_of("gateway"),
            subjects.LOAD_ASK,
        ),
        subscribe=(
            wildcard(subjects.tts_audio),
            wildcard(subjects.playback),
            wildcard(subjects.observe),
            wildcard(subjects.notices),
            subjects.LOAD_ALL,
            subjects.LOAD_ASK,
            wildcard(subjects.tts_resume),  # a TTS worker given a chunk again asks where its call's audio stands
        ),
        responds=True,
    ),
    "asr": Role(
        about="asr: hears a claimed session's audio, publishes speech and transcript events",
        publish=(events_of("asr"), load_of("asr")),
        subscribe=(
            subjects.LOAD_ASK,
            f"{subjects.ASR_CLAIM} {subjects.ASR_GROUP}",
            wildcard(subjects.asr_alive),
            wildcard(subjects.audio_in),
            wildcard(subjects.audio_native),
            subjects.CONTROL_ALL,
        ),
        responds=True,
    ),
    "tts": Role(
        about="tts: synthesizes requested text into a run's audio",
        publish=(
            wildcard(subjects.tts_audio), events_of("tts"), *_tts_puller(), load_of("tts"), wildcard(subjects.tts_resume),
            # what it holds (its peers hand a dead worker's requests back), and whether a peer is alive
            wildcard(subjects.tts_held), wildcard(subjects.tts_alive),
        ),  # fmt: skip
        subscribe=(
            subjects.LOAD_ASK,
            subjects.TTS_CANCEL,
            subjects.CONTROL_ALL,
            wildcard(subjects.tts_alive),
            wildcard(subjects.tts_held),
        ),
        responds=True,
    ),
    "orchestrator": Role(
        about="orchestrator: reduces every session's events, commands the others, keeps state and logs",
        publish=(
            events_of("orchestrator"),
            subjects.EVENT_BEATS,
            wildcard(subjects.log),
            wildcard(subjects.observe),
            subjects.LLM_CANCEL,
            subjects.TTS_REQUEST,
            subjects.TTS_CANCEL,
            wildcard(subjects.playback),
            wildcard(subjects.control),
            subjects.ORCHESTRATOR_MEMBERS,
            wildcard(subjects.orchestrator_alive),
            *_event_stream_owner(),
            _js("STREAM.CREATE", subjects.TTS_STREAM),
            _js("STREAM.UPDATE", subjects.TTS_STREAM),
            _js("STREAM.INFO", subjects.TTS_STREAM),
            _js("STREAM.CREATE", subjects.LOG_STREAM),
            _js("STREAM.UPDATE", subjects.LOG_STREAM),
            _js("STREAM.INFO", subjects.LOG_STREAM),
            *_kv_writer(subjects.SESSIONS_BUCKET),
            *_kv_writer(subjects.LIVE_BUCKET),
            load_of("orchestrator"),
        ),
        subscribe=(
            subjects.LOAD_ASK,
            subjects.LLM_CANCEL,
            f"{subjects.ORCHESTRATOR_INFO} {subjects.ORCHESTRATOR_GROUP}",
            f"{subjects.ORCHESTRATOR_CALLBACKS} {subjects.ORCHESTRATOR_GROUP}",
            subjects.ORCHESTRATOR_MEMBERS,
            wildcard(subjects.orchestrator_alive),
        ),
        responds=True,
    ),
    "operator": Role(
        about="people's tools (parley sessions/replay/export, parley scenarios): read-only",
        publish=(
            _js("STREAM.NAMES"),
            *_stream_reader(subjects.LOG_STREAM),
            *_stream_reader(_kv_stream(subjects.SESSIONS_BUCKET)),
            subjects.ORCHESTRATOR_INFO,
        ),
        subscribe=(wildcard(subjects.observe), wildcard(subjects.notices)),
    ),
}

# Service name (as devstack and docker compose call it) -> role.
SERVICE_ROLES = {"media-gateway": "gateway", "asr": "asr", "orchestrator": "orchestrator", "tts": "tts"}

# Subjects a JetStream stream stores: the stream is their subscriber (the
# orchestrator reads the events through consumers, the inspector and the
# tools read the log).
STREAMS: dict[str, tuple[str, ...]] = {
    subjects.EVENTS_STREAM: (subjects.EVENTS_ALL, subjects.EVENT_BEATS),
    subjects.LOG_STREAM: (subjects.LOG_ALL,),
    subjects.TTS_STREAM: (subjects.TTS_REQUEST,),
}


def stored_by(subject: str) -> list[str]:
    """The streams that store ``subject`` (a pattern: every subject it matches)."""
    return [name for name, filters in STREAMS.items() if any(matches(f, subject) for f in filters)]


def intersects(a: str, b: str) -> bool:
    """Is there a subject both patterns match?"""
    x, y = a.split("."), b.split(".")
    for i in range(max(len(x), len(y))):
        s, t = (x[i] if i < len(x) else None), (y[i] if i < len(y) else None)
        if s == ">" or t == ">":
            return s is not None and t is not None
        if s is None or t is None:
            return False
        if s != "*" and t != "*" and s != t:
            return False
    return True


# Subjects inside a stream only (the server's transform writes them): nobody
# publishes or subscribes to them on core NATS.
STREAM_INTERNAL = (subjects.stored_events, subjects.event_partition)


# --- subject matching --------------------------------------------------------


def matches(pattern: str, subject: str) -> bool:
    """Does the NATS wildcard ``pattern`` cover ``subject`` (itself possibly a
    pattern: then every subject it matches)?"""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i and all(t != "" for t in s[i:])
        if i >= len(s):
            return False
        if s[i] == ">":
            return False
        if token != "*" and token != s[i]:
            return False
    return len(s) == len(p)


def may_publish(role: str, subject: str) -> bool:
    return any(matches(a, subject) for a in ROLES[role].publish)


def may_subscribe(role: str, subject: str) -> bool:
    return any(matches(a, subject) for a in ROLES[role].subscribe_subjects())


def subject_patterns() -> dict[str, str]:
    """Every subject ``parley.subjects`` defines, as a pattern, by name."""
    out: dict[str, str] = {}
    for name, value in vars(subjects).items():
        if name.startswith("_"):
            continue
        if isinstance(value, str) and value.startswith(subjects.PREFIX + "."):
            out[name] = value
        elif inspect.isfunction(value) and value.__module__ == subjects.__name__ and value not in STREAM_INTERNAL:
            try:
                pattern = wildcard(value)
            except (TypeError, ValueError):
                continue
            if pattern.startswith(subjects.PREFIX + "."):
                out[name + "()"] = pattern
    return out


# --- keys and the server's configuration -----------------------------------


def new_seed() -> str:
    """A fresh user nkey seed ("SU...")."""
    import nkeys

    return nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER).decode()


def public_key(seed: str) -> str:
    import nkeys

    return nkeys.from_seed(seed.encode()).public_key.decode()


def _q(value: str) -> str:
    return json.dumps(value)  # a quoted string nats-server's config parser reads


def _list(values: Iterable[str]) -> str:
    return "[" + ", ".join(_q(v) for v in values) + "]"


def user_block(role: str, *, nkey: str | None = None, user: str | None = None, password: str | None = None) -> str:
    r = ROLES[role] if role in ROLES else None
    who = f"nkey: {_q(nkey)}" if nkey else f"user: {_q(user or role)}, password: {_q(password or '')}"
    if r is None:  # everything (test stacks' own client only)
        return f"    {{ {who} }}"
    responses = ", allow_responses: { max: 1, expires: \"5m\" }" if r.responds else ""
    subscribe = (*r.subscribe, inbox(nkey) + ".>") if nkey else r.subscribe
    return (
        f"    # {role}: {r.about}\n"
        f"    {{ {who}, permissions: {{ publish: {{ allow: {_list(r.publish)} }}, "
        f"subscribe: {{ allow: {_list(subscribe)} }}{responses} }} }}"
    )


def authorization_block(keys: Mapping[str, str], extra_users: Iterable[str] = ()) -> str:
    """nats-server's ``authorization`` block: one user per role, by public key."""
    users = [user_block(role, nkey=keys[role]) for role in ROLES if role in keys]
    users += list(extra_users)
    return "authorization {\n  timeout: 5\n  users: [\n" + "\n".join(users) + "\n  ]\n}\n"


def server_config(base: str, keys: Mapping[str, str], extra_users: Iterable[str] = ()) -> str:
    """``base`` (deploy/nats.conf) plus the authorization block."""
    header = "# Generated by parley.natsauth from deploy/nats.conf and ROLES: do not edit, it is rewritten at start.\n"
    return header + base.rstrip() + "\n\n" + authorization_block(keys, extra_users)


@dataclass
class Secrets:
    """A folder of seeds, one file per role (``<role>.nk``, mode 0600), and
    the server config rendered from them (``nats-server.conf``)."""

    root: Path
    seeds: dict[str, str] = field(default_factory=dict)

    def seed_file(self, role: str) -> Path:
        return self.root / f"{role}.nk"

    @property
    def config(self) -> Path:
        return self.root / "nats-server.conf"

    def public_keys(self) -> dict[str, str]:
        return {role: public_key(seed) for role, seed in self.seeds.items()}


def ensure(root: Path, base_config: Path | None = None, extra_users: Iterable[str] = ()) -> Secrets:
    """Make (once) a seed per role under ``root`` and (every time, so a new
    permission in ROLES takes effect at the next start) the server config."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    out = Secrets(root)
    for role in ROLES:
        path = out.seed_file(role)
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(new_seed() + "\n")
        out.seeds[role] = read_seed(path)
    base = base_config.read_text() if base_config is not None and base_config.exists() else ""
    out.config.write_text(server_config(base, out.public_keys(), extra_users))
    os.chmod(out.config, 0o600)
    return out


def role_of_seed_file(path: Path) -> str:
    """The role a seed file is named after: ``<role>.nk`` (make run, tests) or
    ``nats_<role>`` (docker compose's secrets). Only used to know whether this
    service may make streams (the server's permissions decide the rest)."""
    return path.stem.removeprefix("nats_")


def read_seed(path: Path) -> str:
    seed = path.read_text().strip()
    if not seed.startswith("SU"):
        raise ValueError(f"{path} holds no NATS user nkey seed (it should start with SU)")
    return seed


# --- the client side -----------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """How one client authenticates: its nkey seed (or nothing: a server
    without authorization, as in the services' own unit tests), and a CA to
    verify a TLS server with (``tls://`` URLs)."""

    seed: str = ""
    role: str = ""
    tls_ca: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Credentials":
        path = env.get(SEED_FILE_ENV, "")
        seed = role = ""
        if path:
            try:
                seed = read_seed(Path(path))
            except OSError as exc:
                raise ValueError(f"{SEED_FILE_ENV}={path!r} cannot be read: {exc.strerror}") from None
            except ValueError as exc:
                raise ValueError(f"{SEED_FILE_ENV}={path!r}: {exc}") from None
            role = role_of_seed_file(Path(path))
        ca = env.get(TLS_CA_ENV, "")
        if ca and not Path(ca).is_file():
            raise ValueError(f"{TLS_CA_ENV}={ca!r} is not a file (the CA that signed nats-server's certificate)")
        return cls(seed=seed, role=role, tls_ca=ca)

    def connect_options(self) -> dict:
        """Extra ``nats.connect`` arguments."""
        out: dict = {}
        if self.seed:
            out["nkeys_seed_str"] = self.seed
            out["inbox_prefix"] = inbox(public_key(self.seed))
        if self.tls_ca:
            import ssl

            out["tls"] = ssl.create_default_context(cafile=self.tls_ca)
        return out


# Where ``make run`` keeps the seeds (relative to the repository, where
# people run ``uv run parley ...``).
DEV_SECRETS = Path("var") / "secrets" / "nats"


def operator_credentials(env: Mapping[str, str]) -> Credentials:
    """People's tools: PARLEY_NATS_SEED_FILE if set, else the operator seed
    ``make run`` made (var/secrets/nats/operator.nk) if there is one."""
    if env.get(SEED_FILE_ENV) or not (DEV_SECRETS / "operator.nk").exists():
        return Credentials.from_env(env)
    return Credentials.from_env({**env, SEED_FILE_ENV: str(DEV_SECRETS / "operator.nk")})


def main(argv: list[str] | None = None) -> int:
    """``python -m parley.natsauth DIR [--base deploy/nats.conf]``: make the
    seeds and the server config (docker compose reads them as secrets)."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__.splitlines()[0] if main.__doc__ else None)
    p.add_argument("dir", type=Path)
    p.add_argument("--base", type=Path, default=Path("deploy/nats.conf"))
    a = p.parse_args(argv)
    made = ensure(a.dir, a.base)
    for role in ROLES:
        print(f"{role:13} {made.seed_file(role)}  {made.public_keys()[role]}")
    print(f"server config {made.config}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
