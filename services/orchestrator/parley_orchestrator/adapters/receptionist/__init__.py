"""The built-in demo brain: a rule-based receptionist for the demo clinic, used
when no LLM is configured. It books, cancels and moves appointments, tells
callers when they are booked, and records call-backs, through the same tool
calls an LLM would make.

Pure core, thin shell. ``plan_reply(messages, today)`` reads the whole
conversation and returns a ``Plan`` (text to say, and maybe one tool call);
``Receptionist.stream`` only speaks the plan word by word. The core, by concern:

* ``words``: ASR text -> plain lower-case words with digits;
* ``when``: days and clock times (tables of patterns);
* ``intents``: what one utterance says (``hear``);
* ``say``: dates and times as TTS should read them;
* ``plan``: the call's ``Context`` and the ``Plan`` of a turn;
* ``booking``: arranging a new booking; ``existing``: the caller's
  appointments (look up, cancel, move, correct) and call-backs;
* ``dialogue``: the fold over the conversation that routes each turn.

Dates: "today" and "tomorrow" need the current date; the runtime writes
"Today is YYYY-MM-DD (Weekday)." into the system message and the receptionist
takes it from there, falling back to its own ``Clock`` (the clinic's zone, maybe pinned). After a look-up it may
act in the same turn (cancel, move); after any other tool result it only
speaks, so it cannot loop.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import AsyncIterator, Sequence

from parley.clock import Clock
from parley.contract import Message

from ..llm import Done, LLMOutput, Token, ToolCallOut
from .dialogue import plan_reply, read_conversation, step_tool, step_user, today_from
from .intents import Heard, hear
from .plan import CAN_DO, CLINIC_NAME, GREETING, Context, Plan
from .say import say_date, say_list, say_slot, say_time
from .when import parse_date, parse_period, parse_time
from .words import normalise

__all__ = [
    "CAN_DO", "CLINIC_NAME", "GREETING", "Context", "Heard", "Plan", "Receptionist", "hear", "normalise", "parse_date",
    "parse_period", "parse_time", "plan_reply", "read_conversation", "say_date", "say_list", "say_slot", "say_time",
    "step_tool", "step_user", "today_from",
]  # fmt: skip


class Receptionist:
    name = "Built-in demo receptionist (rule-based, no LLM)"
    greeting = GREETING

    def __init__(self, clock: Clock | None = None):
        self.clock = clock or Clock.system()  # the clinic's zone, maybe pinned

    async def stream(self, messages: Sequence[Message], tools: Sequence[dict]) -> AsyncIterator[LLMOutput]:
        names = {t.get("function", {}).get("name") for t in tools}
        plan = plan_reply(messages, self.clock.today(), tools=names)
        for word in re.findall(r"\S+\s*", plan.text):
            yield Token(text=word)
            await asyncio.sleep(0)  # a real stream: let other tasks run between tokens
        if plan.tool:
            yield ToolCallOut(call_id=f"call_{uuid.uuid4().hex[:16]}", name=plan.tool, arguments=json.dumps(plan.arguments))
            yield Done(finish_reason="tool_calls")
        else:
            yield Done(finish_reason="stop")
