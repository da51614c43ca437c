"""The small interface between the runtime and whatever writes the agent's replies.

A ``Brain`` streams one LLM step: text ``Token``s as they come, then the step's
tool calls complete (``ToolCallOut``, after all of the step's text), then
exactly one ``Done`` (``finish_reason="tool_calls"`` when it asked for tools).
The runtime turns these into LLMToken / LLMToolCall / LLMDone events; an
exception becomes an LLMError, so raise with a message a person can act on.
Cancelling the task that iterates ``stream()`` must stop the work promptly
(the OpenAI adapter closes its HTTP stream).

``brain_from_env`` picks the brain: an OpenAI-compatible server when
LLM_BASE_URL and LLM_MODEL are set (LLM_API_KEY optional, for servers that
need it), otherwise the built-in rule-based receptionist.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, AsyncIterator, Mapping, Protocol, Sequence, Union

import msgspec

from parley.clock import Clock
from parley.contract import Message

if TYPE_CHECKING:
    from ..tools import ToolRegistry


class Token(msgspec.Struct, frozen=True):
    text: str


class ToolCallOut(msgspec.Struct, frozen=True):
    call_id: str
    name: str
    arguments: str  # JSON text


class Done(msgspec.Struct, frozen=True):
    finish_reason: str = "stop"


LLMOutput = Union[Token, ToolCallOut, Done]


class LLMFailure(RuntimeError):
    """The LLM could not produce this step; the message says why (never secrets)."""


class Brain(Protocol):
    name: str  # human-readable, shown on /healthz, the README and the browser page

    def stream(self, messages: Sequence[Message], tools: Sequence[dict]) -> AsyncIterator[LLMOutput]: ...


def brain_from_env(env: Mapping[str, str], tools: "ToolRegistry", clock: Clock | None = None) -> Brain:
    """OpenAIChat when LLM_BASE_URL and LLM_MODEL are set, else the receptionist.

    Half a configuration is an error rather than a silent fallback to the demo
    brain: someone who set LLM_API_KEY expects their LLM to answer.
    """
    base_url = env.get("LLM_BASE_URL", "").strip()
    model = env.get("LLM_MODEL", "").strip()
    api_key = env.get("LLM_API_KEY", "").strip()
    if base_url or model or api_key:
        missing = [name for name, value in (("LLM_BASE_URL", base_url), ("LLM_MODEL", model)) if not value]
        if missing:
            raise ValueError(
                f"LLM configuration incomplete: set {' and '.join(missing)} "
                "(e.g. LLM_BASE_URL=https://api.openai.com/v1 LLM_MODEL=gpt-4o-mini), or unset LLM_* to use the built-in receptionist"
            )
        from .openai_chat import OpenAIChat

        timeout = float(env.get("LLM_TIMEOUT", "30"))
        temperature = env.get("LLM_TEMPERATURE", "").strip()
        return OpenAIChat(base_url=base_url, api_key=api_key, model=model, timeout=timeout, temperature=float(temperature) if temperature else None)
    from .receptionist import Receptionist

    return Receptionist(clock=clock)
