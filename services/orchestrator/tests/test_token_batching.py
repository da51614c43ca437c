"""LLM tokens joined into fewer events (adapters/batching.py): same text, same
order, nothing that lets the chunker cut is held back, nothing waits longer
than the window. Times come from a paced fake stream; assertions are about
grouping and order, with the window far from the pacing."""

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley_orchestrator import chunking
from parley_orchestrator.adapters.batching import cuttable, joined
from parley_orchestrator.adapters.llm import Done, Token, ToolCallOut


async def paced(items, gaps):
    for item, gap in zip(items, gaps):
        if gap:
            await asyncio.sleep(gap)
        yield item


def run(items, gaps, window):
    async def main():
        return [i async for i in joined(paced(items, gaps), window)]

    return asyncio.run(main())


def texts(out):
    return [i.text for i in out if isinstance(i, Token)]


def test_tokens_close_together_go_as_one_event_and_the_first_at_once():
    words = ["Sure", " I", " have", " booked", " you", " in"]
    out = run([Token(w) for w in words] + [Done()], [0] * 7, window=0.5)
    assert texts(out) == ["Sure", " I have booked you in"]
    assert out[-1] == Done()


def test_a_token_that_lets_the_chunker_cut_goes_at_once_with_what_waited():
    words = ["Sure", ".", " I", " have", " booked", " you", ",", " Anna", ",", " for", " three"]
    # The space after "." and "," arrives in the next token: that token goes.
    out = run([Token(w) for w in words] + [Done()], [0] * 12, window=5.0)
    assert texts(out) == ["Sure", ". I", " have booked you, Anna", ", for", " three"]


def test_nothing_waits_longer_than_the_window():
    words = ["One", " two", " three", " four", " five"]
    # A slow provider: 0.3 s between tokens, window 0.1 s: each goes alone.
    out = run([Token(w) for w in words] + [Done()], [0, 0.3, 0.3, 0.3, 0.3, 0], window=0.1)
    assert texts(out) == words


def test_a_tool_call_or_a_failure_first_sends_the_tokens_that_wait():
    call = ToolCallOut(call_id="c1", name="book", arguments="{}")
    out = run([Token("Let"), Token(" me"), Token(" check"), call, Done()], [0] * 5, window=5.0)
    assert out == [Token("Let"), Token(" me check"), call, Done()]

    async def failing():
        yield Token("Let")
        yield Token(" me")
        raise RuntimeError("provider went away")

    async def main():
        got = []
        with pytest.raises(RuntimeError, match="went away"):
            async for item in joined(failing(), 5.0):
                got.append(item)
        return got

    assert asyncio.run(main()) == [Token("Let"), Token(" me")]


def test_closing_the_joined_stream_closes_the_provider_stream():
    closed = asyncio.Event()

    async def endless():
        try:
            while True:
                yield Token(" word")
                await asyncio.sleep(0.01)
        finally:
            closed.set()

    async def main():
        stream = joined(endless(), 0.05)
        async for item in stream:
            break
        await stream.aclose()
        await asyncio.wait_for(closed.wait(), 5)

    asyncio.run(main())


def test_window_zero_passes_every_item_through():
    items = [Token("a"), Token(" b"), Done()]
    assert run(items, [0, 0, 0], window=0) == items


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["Sure", ".", " I", " have", ",", " three", " p.m.", " Dr.", " Is", "?", "\n", " -", " ok", "!"]), min_size=1, max_size=25))
def test_the_text_and_every_chunk_cut_are_the_same_as_token_by_token(words):
    """The joined events carry the same text in the same order, and every
    point where the chunker could cut after a token is the end of an event."""
    out = run([Token(w) for w in words] + [Done()], [0] * (len(words) + 1), window=5.0)
    assert "".join(texts(out)) == "".join(words)
    ends = set()
    acc = ""
    for t in texts(out):
        acc += t
        ends.add(len(acc))
    acc = ""
    for w in words:
        before, acc = acc, acc + w
        if cuttable(before, w):
            assert len(acc) in ends, (words, texts(out))
    # And the chunker never finds a cut inside a joined event that was not at its end.
    acc = ""
    for t in texts(out):
        for i in range(1, len(t)):
            n = chunking.next_chunk(acc + t[:i], first=True, final=False, first_min=1, min_len=1, max_len=10_000)
            # (a cut may take the white space after it: what it says ends in acc)
            assert n == 0 or len((acc + t[:i])[:n].rstrip()) <= len(acc) or cuttable(acc, t[:i]), (acc, t)
        acc += t
