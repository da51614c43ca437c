"""The tools an agent may call.

A ``Tool`` is a name, a description, its arguments as a msgspec ``Struct``
(from which the JSON schema the LLM sees is generated, and against which the
LLM's JSON is decoded and validated) and an async handler. ``ToolRegistry``
hands the schemas to the LLM in the OpenAI function format and runs a call
from the LLM's raw JSON text. It never raises: an unknown tool, bad JSON,
invalid arguments or a failing handler all come back as
``(False, '{"error": "..."}')`` for the model to read.

A tool declares whether it only *reads* (``reads_only``: availability, the
caller's bookings, opening hours): such a call runs at once even while the
answer that asked for it is held (the caller may still go on), so its result
is ready when the answer is heard. Every other tool changes something (a
booking, a cancellation, a call-back) and runs only once that answer is heard
(reducer RULES 19/25). Undeclared tools are taken to change something.

Handlers also get a ``ToolContext``: the session, the caller's number (from
the telephony provider, never from the model) and the call id. The model
cannot name another caller's number; bookings and look-ups use the context's.

The demo clinic's tools are in ``appointments.py``; ``end_call``,
``transfer_call`` and ``send_digits`` are declared here for the model and
handled by the reducer itself (send_digits on calls Parley placed).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable

import msgspec

from parley.contract import END_CALL, SEND_DIGITS, TRANSFER_CALL

log = logging.getLogger("parley.orchestrator.tools")


class ToolInputError(ValueError):
    """The arguments were well-formed but made no sense (a bad date...): the
    message goes back to the model."""


@dataclass(frozen=True)
class ToolContext:
    session: str = ""
    caller: str = ""  # the caller's number as the telephony provider gave it ("" if unknown)
    call_id: str = ""  # unique per session and call: "<session>/<call id>"


class NoArguments(msgspec.Struct, frozen=True):
    pass


Handler = Callable[[Any, ToolContext], Awaitable[dict]]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    arguments: type[msgspec.Struct]
    handler: Handler  # async (arguments: the Struct, context) -> dict
    # True: the handler only reads (changes nothing anywhere), so it may run
    # while the answer that asked for it is still held (RULES 25).
    reads_only: bool = False

    def parameters(self) -> dict:
        """The JSON schema of the arguments object, generated from the Struct."""
        (_, components) = msgspec.json.schema_components([self.arguments])
        schema = dict(components[self.arguments.__name__])
        schema.pop("title", None)
        schema.setdefault("properties", {})
        return schema

    def schema(self) -> dict:
        return {"type": "function", "function": {"name": self.name, "description": self.description, "parameters": self.parameters()}}


def _error(message: str) -> str:
    return json.dumps({"error": message})


class ToolRegistry:
    def __init__(self, tools: Iterable[Tool] = ()):
        self._tools: dict[str, Tool] = {}
        self._decoders: dict[str, msgspec.json.Decoder] = {}
        self._schemas: list[dict] | None = None  # made once (msgspec's schema generation is slow), again after an add
        for tool in tools:
            self.add(tool)

    def add(self, tool: Tool) -> None:
        if tool.name in self._tools:
            raise ValueError(f"tool {tool.name!r} registered twice")
        self._tools[tool.name] = tool
        self._schemas = None
        # strict=False: models write numbers as strings ("appointment_id": "3").
        self._decoders[tool.name] = msgspec.json.Decoder(tool.arguments, strict=False)

    def names(self) -> list[str]:
        return list(self._tools)

    def reads_only(self, name: str) -> bool:
        """Whether ``name`` is declared to only read (False for an unknown tool)."""
        tool = self._tools.get(name)
        return tool is not None and tool.reads_only

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def schemas(self) -> list[dict]:
        """The tools in the OpenAI ``tools`` format (every LLM request sends
        them: made once; a copy of the list, the dicts shared and not to be
        changed)."""
        if self._schemas is None:
            self._schemas = [t.schema() for t in self._tools.values()]
        return list(self._schemas)

    async def call(self, name: str, arguments_json: str, context: ToolContext | None = None) -> tuple[bool, str]:
        """Run one call; never raises (except cancellation)."""
        context = context or ToolContext()
        tool = self._tools.get(name)
        if tool is None:
            known = ", ".join(self._tools) or "none"
            return False, _error(f"unknown tool '{name}' (available: {known})")
        text = arguments_json.strip() if isinstance(arguments_json, str) else ""
        try:
            arguments = self._decoders[name].decode(text or "{}")
        except msgspec.ValidationError as exc:
            return False, _error(f"invalid arguments for {name}: {exc}")
        except msgspec.DecodeError as exc:
            return False, _error(f"arguments of {name} are not valid JSON: {exc}")
        try:
            return True, json.dumps(await tool.handler(arguments, context))
        except asyncio.CancelledError:
            raise
        except ToolInputError as exc:
            return False, _error(str(exc))
        except Exception as exc:  # noqa: BLE001 - a tool failure is reported to the model, not raised
            log.warning("tool failed", extra={"tool": name, "session_id": context.session, "error": repr(exc)})
            return False, _error(f"{name} failed: {type(exc).__name__}: {exc}")


async def _end_call_not_run_here(arguments: NoArguments, context: ToolContext) -> dict:
    # The reducer handles end_call itself (the call ends once the goodbye has
    # been heard); the runtime never executes it.
    return {"ok": True}


END_CALL_TOOL = Tool(
    name=END_CALL,
    description=(
        "Hang up. Call it in the same turn as your goodbye, after saying it: the call ends once the caller "
        "has heard your whole reply. If the caller interrupts, the call goes on."
    ),
    arguments=NoArguments,
    handler=_end_call_not_run_here,
)


class TransferArgs(msgspec.Struct, frozen=True):
    summary: str = msgspec.field(default="")


async def _no_transfer_destination(arguments: TransferArgs, context: ToolContext) -> dict:
    # Reached only when the session has no transfer destination: the reducer
    # handles transfer_call itself when it has one.
    return {"error": "no transfer destination is configured for this line: offer a call-back (request_callback) instead"}


TRANSFER_CALL_TOOL = Tool(
    name=TRANSFER_CALL,
    description=(
        "Put the caller through to a person at the clinic. Say that you are putting them through, and call it in the same turn: "
        "the transfer happens once the caller has heard your reply. summary: two sentences for the person taking the call "
        "(who is calling, what they need, what you did)."
    ),
    arguments=TransferArgs,
    handler=_no_transfer_destination,
)


class DigitsArgs(msgspec.Struct, frozen=True):
    digits: str = msgspec.field(default="")


async def _keys_only_on_placed_calls(arguments: DigitsArgs, context: ToolContext) -> dict:
    # Reached only on calls Parley did not place: the reducer handles
    # send_digits itself on outbound calls.
    return {"error": "keys can only be pressed on calls you placed (an automated line's menu); this caller called in"}


SEND_DIGITS_TOOL = Tool(
    name=SEND_DIGITS,
    description=(
        "Press keys on the phone's keypad, on a call you placed that an automated menu answered "
        "('for billing, press 2'). digits: the keys, 0-9, * and #; w waits half a second ('1w2'). "
        "Call it alone, saying nothing, when the menu asks for keys; then listen to what the line says next."
    ),
    arguments=DigitsArgs,
    handler=_keys_only_on_placed_calls,
)
