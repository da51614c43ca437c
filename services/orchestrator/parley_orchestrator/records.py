"""What the orchestrator writes down about a session, and how it reads it back.

Two records outlive the process that wrote them, and are read by later
releases:

- the session's state in JetStream KV (``Stored``): the reducer's state and
  how many events it has consumed;
- one ``contract.Step`` per consumed event in the session's event log.

Both carry ``contract.SCHEMA``, the version of their format, and steps carry
``reducer.RULES``, the version of the decisions. A record of a newer schema
than this release knows is refused with that reason (decoding it would
silently drop the fields this release does not know); an older one is read,
its missing fields taking their defaults. Replay uses the versions to say why
an old log cannot be compared exactly (``replay.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from parley import contract
from parley.contract import AnyCommand, AnyEvent, Step

from . import reducer


class Stored(msgspec.Struct, frozen=True, kw_only=True):
    """The KV value of a session. ``schema`` is absent (1) in values written
    before versions. The fields after it are the runtime's (runtime.py's
    header): where the session is in the event stream, who wrote it, and what
    a new owner must resume."""

    consumed: int  # events consumed: the index of the next log entry (drops count)
    state: reducer.SessionState
    schema: int = 1
    applied: int = 0  # stream sequence (PARLEY_EVENTS) of the last event reduced
    owner: str = ""  # the orchestrator replica that wrote this
    timers: tuple[tuple[str, int, float], ...] = ()  # running timers: name, token, due (epoch s)
    outbox: tuple[AnyCommand, ...] = ()  # one-shot commands of the last batch, re-sent by a new owner
    unlogged: tuple[bytes, ...] = ()  # the last batch's steps (encoded), logged again by a new owner


class NewerSchema(ValueError):
    """A record written by a newer release than this one."""


class _Version(msgspec.Struct):
    schema: int = 1


_stored_decoder = msgspec.msgpack.Decoder(Stored)
_version_decoder = msgspec.msgpack.Decoder(_Version)


def decode_stored(data: bytes) -> Stored:
    """The KV value; raises NewerSchema, or DecodeError/ValidationError naming
    the schema that wrote it."""
    schema = _version_decoder.decode(data).schema
    if schema > contract.SCHEMA:
        raise NewerSchema(f"session state written by schema {schema}; this release reads schemas up to {contract.SCHEMA}")
    try:
        return _stored_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise msgspec.ValidationError(f"session state of schema {schema} does not fit schema {contract.SCHEMA}: {exc}") from exc


def step(index: int, event: AnyEvent, commands: Sequence[AnyCommand], outcome: reducer.Outcome) -> Step:
    """The log record of one reducer step, stamped with the versions."""
    return Step(
        index=index,
        event=event,
        state_from=outcome.path[0],
        state_to=outcome.path[-1],
        commands=tuple(commands),
        dropped=outcome.dropped,
        note=outcome.note if outcome.error else outcome.text(),
        error=outcome.error,
        judgements=outcome.judgements,
        schema=contract.SCHEMA,
        rules=reducer.RULES,
    )


_step_version_json = msgspec.json.Decoder(_Version)


def read_step(data: bytes | str, json: bool = False) -> Step:
    """One log record (msgpack from the log, or a JSON line of an export).
    Raises NewerSchema, or ValueError naming the schema that wrote it."""
    version = (_step_version_json if json else _version_decoder).decode(data).schema
    if version > contract.SCHEMA:
        raise NewerSchema(f"step written by schema {version}; this release reads schemas up to {contract.SCHEMA}")
    try:
        return contract.step_from_json(data) if json else contract.decode_step(data)  # type: ignore[arg-type]
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"step of schema {version} does not fit schema {contract.SCHEMA}: {exc}") from exc
