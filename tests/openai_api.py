"""A local stand-in for an OpenAI-compatible chat completions server, for
end-to-end tests of the LLM path (``LLM_BASE_URL``).

It speaks the documented streaming wire format: ``POST {base}/chat/completions``
with ``"stream": true`` answers ``text/event-stream``, one ``data: {chunk}``
event per ``chat.completion.chunk`` (``choices[0].delta`` carries ``content``
or ``tool_calls`` fragments keyed by ``index``; the last chunk has a
``finish_reason``), then ``data: [DONE]``. What it says is decided by a
``script`` (the request's messages -> text, or a tool call); every request
is kept in ``requests`` for assertions. It runs in a thread with its own loop.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Callable

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from parley.natsd import free_port

# (text, tool call or None): a tool call is (name, arguments dict)
Reply = tuple[str, tuple[str, dict] | None]


class OpenAIApi:
    def __init__(self, script: Callable[[list[dict]], Reply]):
        self.script = script
        self.requests: list[dict] = []
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/v1"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "OpenAIApi":
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def completions(request: Request):
            body = await request.json()
            self.requests.append(body)
            text, call = self.script(body["messages"])
            usage = None
            if (body.get("stream_options") or {}).get("include_usage"):
                # As documented: one more chunk before [DONE], no choices, the step's token counts.
                prompt = sum(len(str(m.get("content") or "").split()) for m in body["messages"])
                usage = {"prompt_tokens": prompt, "completion_tokens": len(text.split()) + (5 if call else 0), "total_tokens": 0}
            return StreamingResponse(self._events(body.get("model", "m"), text, call, usage), media_type="text/event-stream")

        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, name="openai-api", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    async def _events(self, model: str, text: str, call: tuple[str, dict] | None, usage: dict | None = None):
        def chunk(delta: dict, finish: str | None = None) -> str:
            obj = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
            return f"data: {json.dumps(obj)}\n\n"

        yield chunk({"role": "assistant", "content": ""})
        for word in text.split(" ") if text else []:
            await asyncio.sleep(0.01)
            yield chunk({"content": word + " "})
        if call is not None:
            name, arguments = call
            args = json.dumps(arguments)
            yield chunk({"tool_calls": [{"index": 0, "id": f"call_{len(self.requests)}", "type": "function", "function": {"name": name, "arguments": ""}}]})
            for i in range(0, len(args), 5):  # arguments arrive in fragments
                yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": args[i : i + 5]}}]})
            yield chunk({}, "tool_calls")
        else:
            yield chunk({}, "stop")
        if usage is not None:
            yield f"data: {json.dumps({'id': 'chatcmpl-test', 'object': 'chat.completion.chunk', 'created': int(time.time()), 'model': model, 'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"
