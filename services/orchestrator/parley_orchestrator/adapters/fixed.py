"""The fixed-latency LLM for benchmarks and load tests (PARLEY_PROVIDERS=fixed).

First token 200 ms after the request, then one token every 20 ms, a canned
reply and no tool calls: the orchestration around it is what gets measured.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Sequence

from parley.contract import Message

from .llm import Done, Token

CANNED_REPLY = "Sure. I have booked you in for tomorrow at three p.m. Is there anything else I can help you with?"


class FixedLatencyBrain:
    name = "Fixed-latency benchmark LLM (200 ms first token, 20 ms per token)"
    greeting = ""

    def __init__(self, first_token: float = 0.2, per_token: float = 0.02, reply: str = CANNED_REPLY):
        self.first_token = first_token
        self.per_token = per_token
        self.reply = reply

    async def stream(self, messages: Sequence[Message], tools: Sequence[dict]) -> AsyncIterator:
        words = self.reply.split(" ")
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i, word in enumerate(words):
            # Absolute deadlines, so scheduling jitter does not accumulate.
            delay = start + self.first_token + i * self.per_token - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            yield Token(text=word if i == len(words) - 1 else word + " ")
        yield Done(finish_reason="stop")
