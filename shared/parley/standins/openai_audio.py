"""A local stand-in for OpenAI's audio endpoints (and the servers that copy them).

From platform.openai.com's API reference ("Create speech", "Create
transcription", "Error codes"):

* ``POST /v1/audio/speech``, JSON ``{"model", "input", "voice",
  "response_format"}``; with ``"pcm"`` the body is raw 16-bit little-endian
  mono at 24 kHz, streamed (chunked transfer encoding) as it is made.
* ``POST /v1/audio/transcriptions``, ``multipart/form-data`` with ``file``
  (here: a WAV) and ``model`` (``response_format`` json by default):
  ``{"text": "..."}``.
* ``Authorization: Bearer KEY``; errors are ``{"error": {"message", "type",
  "param", "code"}}`` with 401 (invalid_api_key), 429 (rate_limit_exceeded,
  with ``Retry-After``), 400, 500.

A tiny HTTP/1.1 server on asyncio streams rather than a framework, so that a
fault can do what a real network does: stall before the first byte, or cut
the connection in the middle of a chunked body; and so that it sees a client
close a speech stream before its end (``speeches``: each response's bytes
sent of its total, and how it ended), which is how a cancelled run is
stopped at the provider: the server stops making that audio.
"""

from __future__ import annotations

import asyncio
import io
import json
import wave
from email.parser import BytesParser
from email.policy import HTTP
from typing import Callable

from . import Faults, Threaded, tone_speech

RATE = 24000
PIECE = 4800  # bytes: 100 ms at 24 kHz


def _fixed_hearing(text: str) -> Callable[[bytes, int], str]:
    return lambda pcm, rate: text


class OpenAIAudio(Threaded):
    def __init__(
        self, key: str = "sk-test-openai-audio-key", speak: Callable[[str, int], bytes] = tone_speech,
        hear: Callable[[bytes, int], str] | None = None, host: str = "127.0.0.1",
    ):  # fmt: skip
        self.key = key
        self.speak = speak
        self.hear = hear or _fixed_hearing("I'd like to book an appointment.")
        self.host = host
        self.port = 0
        self.faults = Faults()
        self.requests: list[dict] = []  # speech bodies, and transcription fields (without the file)
        self.audio_seconds = 0.0  # transcribed
        self.aborted = 0  # responses whose client went away before the end
        # Per speech response: {"input", "total" bytes, "sent" bytes, "end": None while it streams, then
        # "complete", "client closed" (the client went away mid-body) or "cut" (a drop_after fault)}.
        self.speeches: list[dict] = []
        self._server: asyncio.base_events.Server | None = None

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def start(self) -> "OpenAIAudio":
        self._server = await asyncio.start_server(self._connection, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    # ------------------------------------------------------------------ HTTP
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                keep = await self._request(method, path, headers, body, writer, reader)
                if not keep or headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            try:
                writer.close()
            except Exception:  # noqa: BLE001
                pass

    async def _request(self, method: str, path: str, headers: dict, body: bytes, w: asyncio.StreamWriter, r: asyncio.StreamReader | None = None) -> bool:
        if headers.get("authorization") != f"Bearer {self.key}":
            return await _error(w, 401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        fault = self.faults.next()
        if fault is not None and fault.status:
            extra = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            if fault.status == 429:
                return await _error(w, 429, "Rate limit reached for requests.", "requests", "rate_limit_exceeded", extra)
            return await _error(w, fault.status, "The server had an error while processing your request.", "server_error", None, extra)
        if method == "POST" and path == "/v1/audio/speech":
            return await self._speech(body, w, fault, r)
        if method == "POST" and path == "/v1/audio/transcriptions":
            return await self._transcription(headers, body, w, fault)
        return await _error(w, 404, f"Invalid URL ({method} {path})", "invalid_request_error", None)

    async def _speech(self, body: bytes, w: asyncio.StreamWriter, fault, r: asyncio.StreamReader | None = None) -> bool:
        try:
            req = json.loads(body)
            text, model, voice = req["input"], req["model"], req["voice"]
        except (ValueError, KeyError, TypeError) as exc:
            return await _error(w, 400, f"Invalid request: {exc}", "invalid_request_error", None)
        self.requests.append(req)
        if req.get("response_format", "mp3") != "pcm":
            return await _error(w, 400, "This stand-in speaks only response_format=pcm", "invalid_request_error", None)
        if fault is not None and fault.delay_first:
            await asyncio.sleep(fault.delay_first)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        pcm = self.speak(text, RATE)
        record = {"input": text, "total": len(pcm), "sent": 0, "end": None}
        self.speeches.append(record)
        try:
            for i in range(0, len(pcm), PIECE):
                piece = pcm[i : i + PIECE]
                if fault is not None and fault.drop_after is not None and record["sent"] + len(piece) > fault.drop_after:
                    record["end"] = "cut"
                    w.transport.abort()  # cut mid-body: no terminating chunk
                    return False
                if w.transport.is_closing() or (r is not None and r.at_eof()):
                    raise ConnectionResetError("the client closed the connection")  # an HTTP client never half-closes
                w.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await w.drain()
                record["sent"] += len(piece)
                await asyncio.sleep(0.1 * 0.25)
            w.write(b"0\r\n\r\n")
            await w.drain()
        except ConnectionError:
            self.aborted += 1
            record["end"] = "client closed"
            return False
        record["end"] = "complete"
        return True

    async def _transcription(self, headers: dict, body: bytes, w: asyncio.StreamWriter, fault) -> bool:
        ctype = headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            return await _error(w, 400, "Expected multipart/form-data", "invalid_request_error", None)
        msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
        fields: dict[str, str] = {}
        audio = None
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name == "file":
                audio = part.get_payload(decode=True)
            elif name:
                fields[name] = part.get_content().strip()
        if audio is None or "model" not in fields:
            return await _error(w, 400, "file and model are required", "invalid_request_error", "file" if audio is None else "model")
        try:
            with wave.open(io.BytesIO(audio)) as wav:
                rate = wav.getframerate()
                pcm = wav.readframes(wav.getnframes())
        except (wave.Error, EOFError):
            return await _error(w, 400, "Invalid file format.", "invalid_request_error", "file")
        self.requests.append(fields)
        self.audio_seconds += len(pcm) / 2 / rate
        if fault is not None and fault.delay_first:
            await asyncio.sleep(fault.delay_first)
        text = await asyncio.get_running_loop().run_in_executor(None, self.hear, pcm, rate)  # requests run side by side, as on a server
        if fault is not None and fault.drop_after is not None:
            w.transport.abort()
            return False
        data = json.dumps({"text": text}).encode()
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data))
        await w.drain()
        return True


async def _error(w: asyncio.StreamWriter, status: int, message: str, type_: str, code: str | None, headers: dict | None = None) -> bool:
    reasons = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}
    data = json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    w.write(f"HTTP/1.1 {status} {reasons.get(status, 'Error')}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n{extra}\r\n".encode() + data)
    await w.drain()
    return True
