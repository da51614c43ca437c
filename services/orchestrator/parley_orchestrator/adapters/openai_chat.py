"""Adapter for any OpenAI-compatible chat completions server (OpenAI, vLLM,
Ollama's /v1, llama.cpp's server): streams one step of the conversation.

Three pure pieces, each tested on its own, around one HTTP request:

* ``to_openai_messages`` converts Parley's conversation to the chat format
  (tool calls and results paired up, interrupted replies marked for the model);
* ``sse_payloads`` pulls the ``data:`` payloads out of the server-sent events;
* ``StepAssembler`` turns the chunks into Parley's outputs: text deltas become
  ``Token``s at once; tool-call deltas, which arrive in fragments keyed by
  ``index`` (id and name first, the arguments in pieces), are accumulated and
  come out whole at the end of the step, followed by one ``Done``.

The request runs inside ``async with`` blocks, so cancelling the task that
iterates ``stream()`` closes the HTTP response (and its connection) at once.
The API key goes into the Authorization header and nowhere else: not into the
brain's name, its repr, or any error message.
"""

from __future__ import annotations

import json
import uuid
from typing import AsyncIterator, Iterable, Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

import httpx

from parley.contract import Message

from .llm import Done, LLMFailure, LLMOutput, Token, ToolCallOut

INTERRUPTED_HINT = "[interrupted by the caller]"


# ---------------------------------------------------------------------------
# Parley conversation -> OpenAI chat messages (pure)


def to_openai_messages(messages: Sequence[Message]) -> list[dict]:
    """The conversation in the OpenAI chat format.

    Servers reject an assistant tool call without its result and a result
    without its call, so unpaired ones are left out: each assistant message
    keeps only the calls answered by the tool messages right after it.
    """
    out: list[dict] = []
    for i, m in enumerate(messages):
        if m.role == "assistant":
            answered = set()
            for later in messages[i + 1 :]:
                if later.role != "tool":
                    break
                answered.add(later.tool_call_id)
            calls = [c for c in m.tool_calls if c.call_id in answered]
            content = m.content
            if m.interrupted:
                content = f"{content} {INTERRUPTED_HINT}" if content else INTERRUPTED_HINT
            item: dict = {"role": "assistant", "content": content if content or not calls else None}
            if calls:
                item["tool_calls"] = [
                    {"id": c.call_id, "type": "function", "function": {"name": c.name, "arguments": c.arguments or "{}"}} for c in calls
                ]
            if not item["content"] and not calls:
                continue  # nothing said, nothing called: nothing to show the model
            out.append(item)
        elif m.role == "tool":
            previous = out[-1] if out else None
            # The call this answers must be in the assistant message this tool
            # message (and its siblings) follows.
            owner = next((o for o in reversed(out) if o["role"] != "tool"), None)
            ids = {c["id"] for c in owner.get("tool_calls", ())} if owner and owner["role"] == "assistant" else set()
            if m.tool_call_id not in ids or previous is None or previous["role"] not in ("assistant", "tool"):
                continue
            out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content})
        else:
            out.append({"role": m.role, "content": m.content})
    return out


# ---------------------------------------------------------------------------
# Server-sent events -> JSON payloads (pure)

DONE_SENTINEL = "[DONE]"


class SSEDecoder:
    """Server-sent events, one line at a time: an event's ``data:`` lines are
    joined and handed out at the blank line that ends the event."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def line(self, raw: str) -> str | None:
        line = raw.rstrip("\r\n")
        if not line:
            return self.flush()
        if line.startswith(":"):
            return None  # comment / keep-alive
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None

    def flush(self) -> str | None:
        if not self._data:
            return None
        data, self._data = "\n".join(self._data), []
        return data


def sse_payloads(lines: Iterable[str]) -> Iterator[str]:
    decoder = SSEDecoder()
    for raw in lines:
        payload = decoder.line(raw)
        if payload is not None:
            yield payload
    last = decoder.flush()
    if last is not None:
        yield last


def payload_error(chunk: dict) -> str | None:
    """An error some servers send inside a 200 stream."""
    err = chunk.get("error")
    if not err:
        return None
    if isinstance(err, dict):
        return str(err.get("message") or err)
    return str(err)


class StepAssembler:
    """Chunks of one streamed completion -> Tokens now, ToolCallOuts + Done at the end."""

    def __init__(self) -> None:
        self._calls: dict[int, dict] = {}
        self._last_index: int | None = None
        self.finish_reason: str | None = None
        self.usage: dict = {}

    def feed(self, chunk: dict) -> list[LLMOutput]:
        out: list[LLMOutput] = []
        if isinstance(chunk.get("usage"), dict):  # stream_options.include_usage: the last chunk, no choices
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # n > 1 is never requested
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                out.append(Token(text=text))
            for frag in delta.get("tool_calls") or ():
                self._add_fragment(frag)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return out

    def _add_fragment(self, frag: dict) -> None:
        index = frag.get("index")
        if index is None:
            # Servers that omit the index: a new id starts a new call,
            # anything else continues the last one.
            if frag.get("id") and (self._last_index is None or self._calls[self._last_index]["id"] not in ("", frag["id"])):
                index = len(self._calls)
            else:
                index = self._last_index if self._last_index is not None else 0
        call = self._calls.setdefault(index, {"id": "", "name": "", "arguments": ""})
        self._last_index = index
        fn = frag.get("function") or {}
        if frag.get("id") and not call["id"]:
            call["id"] = frag["id"]
        if fn.get("name") and not call["name"]:
            call["name"] = fn["name"]
        args = fn.get("arguments")
        if isinstance(args, str):
            call["arguments"] += args
        elif isinstance(args, dict):  # a few servers send the object itself
            call["arguments"] += json.dumps(args)

    def finish(self) -> list[LLMOutput]:
        calls = [
            ToolCallOut(call_id=c["id"] or f"call_{uuid.uuid4().hex[:16]}", name=c["name"], arguments=c["arguments"] or "{}")
            for _, c in sorted(self._calls.items())
            if c["name"]
        ]
        reason = "tool_calls" if calls else (self.finish_reason or "stop")
        return [*calls, Done(finish_reason=reason, input_tokens=_tokens(self.usage, "prompt_tokens"), output_tokens=_tokens(self.usage, "completion_tokens"))]


def _tokens(usage: dict, key: str) -> int:
    value = usage.get(key)
    return value if isinstance(value, int) and value >= 0 else 0


# ---------------------------------------------------------------------------
# The adapter


def _public_url(url: str) -> str:
    """The URL without user info or query (either may hold a secret)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class OpenAIChat:
    greeting = ""  # no canned greeting: the deployment's PARLEY_GREETING, if any

    def __init__(
        self,
        base_url: str,
        api_key: str,
        model: str,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        temperature: float | None = None,
        max_tokens: int | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self._api_key = api_key
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self.name = f"OpenAI-compatible ({model} at {_public_url(base_url.rstrip('/'))})"

    def _scrub(self, text: str) -> str:
        """Servers sometimes echo the key back in an error."""
        return text.replace(self._api_key, "***") if self._api_key else text

    def __repr__(self) -> str:
        return f"<OpenAIChat {self.name}>"

    def _http(self) -> httpx.AsyncClient:
        # One pooled client: a kept-alive connection saves a TLS handshake per
        # turn, which the caller would hear.
        if self._client is None or self._client.is_closed:
            self._client = httpx.AsyncClient(timeout=self.timeout, transport=self._transport)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def request_body(self, messages: Sequence[Message], tools: Sequence[dict]) -> dict:
        body: dict = {"model": self.model, "messages": to_openai_messages(messages), "stream": True,
                      # The last chunk then says what the step cost (Usage events, parley usage).
                      "stream_options": {"include_usage": True}}  # fmt: skip
        if tools:
            body["tools"] = list(tools)
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        return body

    async def stream(self, messages: Sequence[Message], tools: Sequence[dict]) -> AsyncIterator[LLMOutput]:
        headers = {"Accept": "text/event-stream"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        body = self.request_body(messages, tools)
        where = _public_url(self.url)
        assembler = StepAssembler()
        saw_done = False
        try:
            async with self._http().stream("POST", self.url, json=body, headers=headers) as resp:
                if resp.status_code >= 400:
                    detail = self._scrub(await _error_text(resp))
                    raise LLMFailure(f"LLM at {where} answered HTTP {resp.status_code}: {detail}")
                async for payload in _aiter_payloads(resp):
                    # Read on to the end of the body after [DONE] (it follows
                    # at once): a fully read response leaves the connection
                    # in the pool for the next turn.
                    if saw_done:
                        continue
                    if payload.strip() == DONE_SENTINEL:
                        saw_done = True
                        continue
                    try:
                        chunk = json.loads(payload)
                    except json.JSONDecodeError:
                        raise LLMFailure(f"LLM at {where} sent a malformed stream chunk: {self._scrub(payload[:200])!r}") from None
                    if not isinstance(chunk, dict):
                        continue
                    problem = payload_error(chunk)
                    if problem:
                        raise LLMFailure(f"LLM at {where} reported an error: {self._scrub(problem[:300])}")
                    for item in assembler.feed(chunk):
                        yield item
        except httpx.TimeoutException as exc:
            raise LLMFailure(f"LLM at {where} timed out ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise LLMFailure(f"cannot reach LLM at {where}: {type(exc).__name__}: {self._scrub(str(exc))}") from None
        if not saw_done and assembler.finish_reason is None:
            raise LLMFailure(f"LLM stream from {where} ended before the reply was complete")
        for item in assembler.finish():
            yield item


async def _aiter_payloads(resp: httpx.Response) -> AsyncIterator[str]:
    decoder = SSEDecoder()
    async for raw in resp.aiter_lines():
        payload = decoder.line(raw)
        if payload is not None:
            yield payload
    last = decoder.flush()
    if last is not None:
        yield last


async def _error_text(resp: httpx.Response) -> str:
    raw = (await resp.aread())[:4000].decode("utf-8", "replace")
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        return raw.strip()[:300] or resp.reason_phrase
    if isinstance(parsed, dict):
        message = payload_error(parsed) or parsed.get("message") or parsed.get("detail")
        if message:
            return str(message)[:300]
    return raw.strip()[:300]
