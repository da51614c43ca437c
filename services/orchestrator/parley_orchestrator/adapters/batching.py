"""LLM tokens joined into fewer events, without delaying a cut the reducer can make.

Every ``LLMToken`` is a stored event: published, stored in the event stream,
delivered to the session's owner, acked, reduced (state written to KV, the
step stored in the log). An LLM streams 30-100 tokens a second, so tokens
were most of a call's events (120 of ~230 per three-turn call, measured with
``bench/cpu_ab.py --tap``). ``joined`` passes a provider's stream through and
joins consecutive tokens into one:

* the first token of a stream goes at once (time to first token, the
  reducer's ``llm_first_token`` timer);
* a token that lets the chunker cut (``chunking.next_chunk`` cuts only at
  punctuation followed by white space: a sentence or clause end) goes at once
  with whatever waited before it, so no TTS chunk starts later than before;
* otherwise tokens wait at most ``window`` seconds after the first of them;
* anything else the provider yields (a tool call, the end, a failure) first
  sends the tokens that wait.

The text is the same, in the same order; only how it is split changes, which
the reducer does not depend on (it appends the text; a restarted attempt's
echo is matched across any split). It is transport, not a decision.
"""

from __future__ import annotations

import asyncio
import re
from typing import AsyncIterator

from .llm import Token

# Where chunking.next_chunk may cut: ., !, ?, ",", ";", ":" or a dash (with
# closing quotes), then white space.
_CUTTABLE = re.compile(r"[.!?,;:\u2013\u2014-][\"')\]\u201d\u2019]*\s")

_END = object()


def cuttable(before: str, text: str) -> bool:
    """Could the reducer cut a chunk once ``text`` follows ``before`` (the
    last characters already sent)?"""
    tail = before[-3:]
    return any(m.end() > len(tail) for m in _CUTTABLE.finditer(tail + text))


async def _pump(stream: AsyncIterator, queue: asyncio.Queue) -> None:
    """The provider's items into ``queue``, then _END (or its failure)."""
    try:
        async for item in stream:
            queue.put_nowait(item)
        queue.put_nowait(_END)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there in order
        queue.put_nowait(exc)


async def joined(stream: AsyncIterator, window: float) -> AsyncIterator:
    """``stream``'s items, consecutive ``Token``s joined (see the module doc).
    ``window`` <= 0 passes every item through as it comes."""
    if window <= 0:
        async for item in stream:
            yield item
        return
    queue: asyncio.Queue = asyncio.Queue()
    reader = asyncio.create_task(_pump(stream, queue), name="llm-stream")
    loop = asyncio.get_running_loop()
    waiting = ""  # token text not sent yet
    due = 0.0  # when it must go
    sent = ""  # the last characters sent
    first = True
    try:
        while True:
            try:
                item = await (asyncio.wait_for(queue.get(), max(0.0, due - loop.time())) if waiting else queue.get())
            except TimeoutError:
                item = None  # the window is over: what waits goes
            if isinstance(item, Token) and not (first or cuttable(sent + waiting, item.text)):
                due = due if waiting else loop.time() + window
                waiting += item.text
                continue
            if isinstance(item, Token):
                waiting, item, first = waiting + item.text, None, False
            if waiting:
                sent = (sent + waiting)[-3:]
                yield Token(text=waiting)
                waiting = ""
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            if item is not None:
                yield item
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
