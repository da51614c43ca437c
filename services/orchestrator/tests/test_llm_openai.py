"""The OpenAI-compatible adapter: the pure pieces (message conversion, SSE
decoding, tool-call assembly) and the adapter against a small real HTTP/1.1
server started here on a free port, which speaks the streaming wire format
(chunked transfer, ``data:`` events, tool-call deltas split across chunks and
across TCP writes, error statuses) and records what it received."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.contract import Message, ToolCallItem
from parley_orchestrator.adapters.llm import Done, LLMFailure, Token, ToolCallOut
from parley_orchestrator.adapters.openai_chat import (
    INTERRUPTED_HINT,
    OpenAIChat,
    SSEDecoder,
    StepAssembler,
    sse_payloads,
    to_openai_messages,
)

KEY = "sk-test-SECRET-123"
TOOLS = [{"type": "function", "function": {"name": "book_appointment", "description": "d", "parameters": {"type": "object", "properties": {}}}}]
HELLO = [Message(role="system", content="Be brief."), Message(role="user", content="Hi")]


# --------------------------------------------------------------- conversion


def test_conversion_pairs_tool_calls_with_results_and_marks_interruptions():
    call = ToolCallItem(call_id="c1", name="book_appointment", arguments='{"date": "2026-11-25"}')
    msgs = [
        Message(role="system", content="sys"),
        Message(role="user", content="book me"),
        Message(role="assistant", content="One moment.", tool_calls=(call,)),
        Message(role="tool", tool_call_id="c1", name="book_appointment", content='{"booked": true}'),
        Message(role="assistant", content="You're booked for", interrupted=True),
        Message(role="user", content="thanks"),
    ]
    assert to_openai_messages(msgs) == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "book me"},
        {
            "role": "assistant",
            "content": "One moment.",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "book_appointment", "arguments": '{"date": "2026-11-25"}'}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"booked": true}'},
        {"role": "assistant", "content": f"You're booked for {INTERRUPTED_HINT}"},
        {"role": "user", "content": "thanks"},
    ]


def test_conversion_drops_unpaired_calls_and_results():
    a = ToolCallItem(call_id="a", name="t", arguments="")
    b = ToolCallItem(call_id="b", name="t", arguments="{}")
    msgs = [
        Message(role="user", content="x"),
        Message(role="tool", tool_call_id="zz", content="orphan"),
        Message(role="assistant", content="", tool_calls=(a, b)),
        Message(role="tool", tool_call_id="b", content="rb"),
        Message(role="assistant", content="", interrupted=True),
        Message(role="assistant", content=""),
    ]
    out = to_openai_messages(msgs)
    assert out == [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "b", "type": "function", "function": {"name": "t", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "b", "content": "rb"},
        {"role": "assistant", "content": INTERRUPTED_HINT},
    ]


def test_sse_decoder_joins_data_lines_and_skips_comments():
    lines = [": keep-alive", "event: message", 'data: {"a":', "data: 1}", "", "data: [DONE]", ""]
    assert list(sse_payloads(lines)) == ['{"a":\n1}', "[DONE]"]
    decoder = SSEDecoder()
    assert decoder.line("data:x") is None and decoder.flush() == "x"


def _chunk(delta: dict, finish: str | None = None) -> dict:
    return {"id": "x", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def _split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in zip(points, points[1:])]


@settings(max_examples=150, deadline=None)
@given(
    st.text(min_size=0, max_size=40),
    st.lists(st.tuples(st.sampled_from(["book_appointment", "check_availability", "end"]), st.dictionaries(st.text(max_size=5), st.text(max_size=8), max_size=3)), max_size=3),
    st.lists(st.integers(0, 200), max_size=6),
    st.randoms(use_true_random=False),
)
def test_assembler_reassembles_any_fragmentation(content, calls, cuts, rnd):
    chunks = [_chunk({"role": "assistant"})]
    chunks += [_chunk({"content": piece}) for piece in _split(content, cuts)]
    fragments = []
    for i, (name, args) in enumerate(calls):
        text = json.dumps(args)
        pieces = _split(text, cuts)
        fragments.append([{"index": i, "id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": pieces[0] if pieces else ""}}])
        fragments[-1] += [{"index": i, "function": {"arguments": p}} for p in pieces[1:]]
    # Interleave the calls' fragments (order within one call kept), as
    # parallel tool calls can arrive.
    while any(fragments):
        f = rnd.choice([f for f in fragments if f])
        chunks.append(_chunk({"tool_calls": [f.pop(0)]}))
    chunks.append(_chunk({}, "tool_calls" if calls else "stop"))
    asm = StepAssembler()
    out = [item for c in chunks for item in asm.feed(c)] + asm.finish()
    tokens = [o for o in out if isinstance(o, Token)]
    assert "".join(t.text for t in tokens) == content
    tool_outs = [o for o in out if isinstance(o, ToolCallOut)]
    assert [(t.call_id, t.name, json.loads(t.arguments)) for t in tool_outs] == [(f"call_{i}", n, a) for i, (n, a) in enumerate(calls)]
    # Text first, then the calls, then exactly one Done, last.
    assert out[-1] == Done(finish_reason="tool_calls" if calls else "stop")
    assert [type(o) for o in out] == [Token] * len(tokens) + [ToolCallOut] * len(tool_outs) + [Done]


def test_assembler_without_index_and_with_stop_reason_still_reports_tool_calls():
    asm = StepAssembler()
    asm.feed(_chunk({"tool_calls": [{"id": "a1", "function": {"name": "book_appointment", "arguments": {"date": "2026-11-25"}}}]}))
    asm.feed(_chunk({"tool_calls": [{"id": "b2", "function": {"name": "check_availability", "arguments": '{"date":'}}]}))
    asm.feed(_chunk({"tool_calls": [{"function": {"arguments": ' "2026-11-26"}'}}]}, "stop"))
    out = asm.finish()
    assert out == [
        ToolCallOut(call_id="a1", name="book_appointment", arguments='{"date": "2026-11-25"}'),
        ToolCallOut(call_id="b2", name="check_availability", arguments='{"date": "2026-11-26"}'),
        Done(finish_reason="tool_calls"),
    ]


# --------------------------------------------------------------- local server


def _sse(obj) -> bytes:
    return b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n"


class FakeOpenAI:
    """A minimal HTTP/1.1 server speaking the chat completions stream. The
    request's ``model`` picks the scenario."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.connections = 0
        self.closed_by_client = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> "FakeOpenAI":
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:  # keep-alive: several requests per connection
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode().split("\r\n")
                method, path, _ = lines[0].split(" ")
                headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ln)}
                body = json.loads(await reader.readexactly(int(headers.get("content-length", 0))))
                self.requests.append({"method": method, "path": path, "headers": headers, "body": body})
                if not await self._respond(body["model"], reader, writer):
                    return
        finally:
            writer.close()

    async def _respond(self, scenario: str, reader, writer) -> bool:
        async def send(data: bytes, split: bool = False) -> None:
            parts = [data[: len(data) // 2], data[len(data) // 2 :]] if split else [data]
            for part in parts:  # one chunk per part, each its own TCP write
                writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                await writer.drain()
                await asyncio.sleep(0.001)

        if scenario == "unauthorized":
            body = json.dumps({"error": {"message": f"Incorrect API key provided: {KEY}", "type": "invalid_request_error"}}).encode()
            writer.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()
            return True
        if scenario == "busy":
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nmodel busy!")
            await writer.drain()
            return True
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        await send(_sse(_chunk({"role": "assistant", "content": ""})))
        if scenario == "text":
            for piece in ["Hello", " there", ", how can I help?"]:
                await send(_sse(_chunk({"content": piece})), split=True)
            await send(_sse(_chunk({}, "stop")))
        elif scenario == "tools":
            await send(b": keep-alive\n\n")
            await send(_sse(_chunk({"content": "One moment."})))
            deltas = [
                {"index": 0, "id": "call_A", "type": "function", "function": {"name": "book_appointment", "arguments": ""}},
                {"index": 0, "function": {"arguments": '{"da'}},
                {"index": 1, "id": "call_B", "type": "function", "function": {"name": "check_availability", "arguments": '{"date"'}},
                {"index": 0, "function": {"arguments": 'te": "2026-11-25", '}},
                {"index": 1, "function": {"arguments": ': "2026-11-26"}'}},
                {"index": 0, "function": {"arguments": '"time": "15:00"}'}},
            ]
            for d in deltas:
                await send(_sse(_chunk({"tool_calls": [d]})), split=True)
            await send(_sse(_chunk({}, "tool_calls")))
        elif scenario == "stream_error":
            await send(_sse({"error": {"message": "model overloaded"}}))
        elif scenario == "truncated":
            await send(_sse(_chunk({"content": "I was about to"})))
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        elif scenario == "hang":
            await send(_sse(_chunk({"content": "Thinking"})))
            # Wait for the client to go away: EOF means it closed the connection.
            await reader.read()
            self.closed_by_client.set()
            return False
        await send(_sse(b"[DONE]"))
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True


async def collect(brain: OpenAIChat, messages=HELLO, tools=TOOLS) -> list:
    return [item async for item in brain.stream(messages, tools)]


def test_streams_text_and_sends_the_request_openai_expects():
    async def main():
        async with FakeOpenAI() as server:
            brain = OpenAIChat(server.base_url + "/", KEY, "text", temperature=0.3)
            out = await collect(brain)
            await brain.aclose()
            return server, out

    server, out = asyncio.run(main())
    assert out == [Token("Hello"), Token(" there"), Token(", how can I help?"), Done("stop")]
    (req,) = server.requests
    assert req["method"] == "POST" and req["path"] == "/v1/chat/completions"
    assert req["headers"]["authorization"] == f"Bearer {KEY}"
    assert req["body"]["stream"] is True and req["body"]["model"] == "text" and req["body"]["temperature"] == 0.3
    assert req["body"]["tools"] == TOOLS
    assert req["body"]["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


def test_tool_call_deltas_become_whole_calls_after_the_text():
    async def main():
        async with FakeOpenAI() as server:
            brain = OpenAIChat(server.base_url, KEY, "tools")
            return await collect(brain)

    out = asyncio.run(main())
    assert out == [
        Token("One moment."),
        ToolCallOut(call_id="call_A", name="book_appointment", arguments='{"date": "2026-11-25", "time": "15:00"}'),
        ToolCallOut(call_id="call_B", name="check_availability", arguments='{"date": "2026-11-26"}'),
        Done("tool_calls"),
    ]


def test_no_api_key_no_authorization_header_and_no_tools_field():
    async def main():
        async with FakeOpenAI() as server:
            await collect(OpenAIChat(server.base_url, "", "text"), tools=[])
            return server.requests[0]

    req = asyncio.run(main())
    assert "authorization" not in req["headers"] and "tools" not in req["body"]


@pytest.mark.parametrize(
    ("scenario", "needle"),
    [("unauthorized", "HTTP 401: Incorrect API key provided: ***"), ("busy", "HTTP 503: model busy!"),
     ("stream_error", "reported an error: model overloaded"), ("truncated", "ended before the reply was complete")],
)  # fmt: skip
def test_errors_raise_a_clear_message_without_the_key(scenario, needle):
    async def main():
        async with FakeOpenAI() as server:
            brain = OpenAIChat(server.base_url, KEY, scenario)
            got: list = []
            with pytest.raises(LLMFailure) as err:
                async for item in brain.stream(HELLO, TOOLS):
                    got.append(item)
            return str(err.value), got, brain

    message, got, brain = asyncio.run(main())
    assert needle in message
    assert KEY not in message and KEY not in brain.name and KEY not in repr(brain)
    assert not any(isinstance(g, Done) for g in got)


def test_unreachable_server_raises_llm_failure():
    from parley.natsd import free_port

    async def main():
        brain = OpenAIChat(f"http://127.0.0.1:{free_port()}/v1", KEY, "m", connect_timeout=2)
        with pytest.raises(LLMFailure, match="cannot reach LLM at http://127.0.0.1"):
            await collect(brain)

    asyncio.run(main())


def test_cancelling_the_consumer_closes_the_http_connection():
    async def main():
        async with FakeOpenAI() as server:
            brain = OpenAIChat(server.base_url, KEY, "hang")
            first = asyncio.Event()
            got = []

            async def consume():
                async for item in brain.stream(HELLO, TOOLS):
                    got.append(item)
                    first.set()

            task = asyncio.create_task(consume())
            await asyncio.wait_for(first.wait(), 10)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            # Generous bound: only guards against hanging forever.
            await asyncio.wait_for(server.closed_by_client.wait(), 10)
            return got, task

    got, task = asyncio.run(main())
    assert got == [Token("Thinking")] and task.cancelled()


def test_connection_is_reused_across_turns():
    async def main():
        async with FakeOpenAI() as server:
            brain = OpenAIChat(server.base_url, KEY, "text")
            for _ in range(3):
                assert (await collect(brain))[-1] == Done("stop")
            await brain.aclose()
            return server.connections

    assert asyncio.run(main()) == 1


def test_name_hides_credentials_in_the_url():
    brain = OpenAIChat("https://user:pw@llm.example.com:8443/v1?key=abc", KEY, "gpt-4o-mini")
    assert brain.name == "OpenAI-compatible (gpt-4o-mini at https://llm.example.com:8443/v1)"


def test_the_usage_chunk_gives_the_steps_tokens_and_its_absence_gives_none():
    # stream_options.include_usage: a last chunk with no choices and the counts (OpenAI's documented shape).
    asm = StepAssembler()
    asm.feed(_chunk({"content": "Hello"}, "stop"))
    asm.feed({"id": "x", "object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49}})
    assert asm.finish() == [Done(finish_reason="stop", input_tokens=42, output_tokens=7)]
    bare = StepAssembler()
    bare.feed(_chunk({"content": "Hello"}, "stop"))
    bare.feed({"choices": [], "usage": {"prompt_tokens": "many"}})  # a server that says nonsense: nothing counted
    assert bare.finish() == [Done(finish_reason="stop")]
