"""The small interface between the runtime and whatever writes the agent's replies.

A ``Brain`` streams one LLM step: text ``Token``s as they come, then the step's
tool calls complete (``ToolCallOut``, after all of the step's text), then
exactly one ``Done`` (``finish_reason="tool_calls"`` when it asked for tools).
The runtime turns these into LLMToken / LLMToolCall / LLMDone events; an
exception becomes an LLMError, so raise with a message a person can act on.
Cancelling the task that iterates ``stream()`` must stop the work promptly
(the OpenAI adapter closes its HTTP stream).

``brain_for(settings)`` picks the brain: an OpenAI-compatible server
when LLM_BASE_URL and LLM_MODEL are set (LLM_API_KEY optional, for servers
that need it), otherwise the built-in rule-based receptionist.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, AsyncIterator, Protocol, Sequence, Union

import msgspec

from parley.contract import Message

if TYPE_CHECKING:
    from ..settings import Settings


class Token(msgspec.Struct, frozen=True):
    text: str


class ToolCallOut(msgspec.Struct, frozen=True):
    call_id: str
    name: str
    arguments: str  # JSON text


class Done(msgspec.Struct, frozen=True):
    finish_reason: str = "stop"
    # What the provider billed for this step (its ``usage``), 0 when it did not say.
    input_tokens: int = 0
    output_tokens: int = 0


LLMOutput = Union[Token, ToolCallOut, Done]


class LLMFailure(RuntimeError):
    """The LLM could not produce this step; the message says why (never secrets)."""


class Brain(Protocol):
    name: str  # human-readable, shown on /healthz, the README and the browser page

    def stream(self, messages: Sequence[Message], tools: Sequence[dict]) -> AsyncIterator[LLMOutput]: ...


def brain_for(settings: "Settings") -> Brain:
    """OpenAIChat when LLM_BASE_URL and LLM_MODEL are set, else the receptionist.

    Half a configuration is refused by the settings rather than a silent
    fallback to the demo brain: someone who set LLM_API_KEY expects their LLM
    to answer.
    """
    if settings.llm:
        from .openai_chat import OpenAIChat

        return OpenAIChat(
            base_url=settings.llm_base_url,
            api_key=settings.llm_api_key,
            model=settings.llm_model,
            timeout=settings.llm_timeout,
            temperature=settings.llm_temperature,
        )
    from .receptionist import Receptionist

    return Receptionist(clock=settings.clock)
