"""Adapter: an OpenAI-compatible ``POST {base}/audio/speech`` (OpenAI, and
local servers that speak the same API), streamed.

    POST {base}/audio/speech   Authorization: Bearer KEY
    {"model", "input", "voice", "response_format": "pcm"}
    -> 200, the body is raw PCM16 LE mono at 24 kHz, streamed as it is made
    -> 4xx/5xx with {"error": {"message", "type", "code"}}; 429 may carry Retry-After

Each piece of the body goes out as it arrives (cut to ``piece_ms``; an odd
byte waits for its pair). Cancelling the run closes the response, which
closes the connection: the server stops generating. A refused key, a rate
limit, a body that breaks off, or no byte within ``first_audio_s`` (first or
next) raises ``ProviderError`` and the worker falls back. This API gives no
word timing, so a chunk broken mid-way is said again from its start by the
fallback voice (logged as such).

httpx rather than the ``openai`` SDK: the SDK's streaming response is the same
httpx stream underneath, plus retries of its own that would hide a failure
the fallback must see at once.
"""

from __future__ import annotations

import json
import logging
from typing import AsyncIterator

import httpx

from parley.providers import ProviderError, kind_of_status, retry_after

from .. import audio
from ..lanes import Job

log = logging.getLogger("parley_tts.openai")

RATE = 24000  # response_format=pcm is always 24 kHz


class OpenAISpeech:
    name = "openai"
    cloud = True
    sample_rate = RATE

    def __init__(self, *, base: str, api_key: str, model: str, voice: str, first_audio_s: float = 1.5, piece_ms: float = 200.0):
        self.url = f"{base.rstrip('/')}/audio/speech"
        self.api_key = api_key
        self.model = model
        self.voice = voice
        self.max_samples = audio.samples_for_ms(piece_ms, RATE)
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=first_audio_s, read=first_audio_s, write=5.0, pool=5.0), trust_env=False
        )
        self.first_audio_s = first_audio_s

    async def stream(self, job: Job) -> AsyncIterator[bytes]:
        body = {"model": self.model, "input": job.text, "voice": self.voice, "response_format": "pcm"}
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        sent = False
        try:
            async with self.client.stream("POST", self.url, json=body, headers=headers) as response:
                if response.status_code != 200:
                    detail = _error_text(await response.aread())
                    raise ProviderError(
                        self.name, kind_of_status(response.status_code), f"HTTP {response.status_code} {detail}".strip(),
                        retry_after=retry_after(response.headers),
                    )  # fmt: skip
                carry = b""
                async for data in response.aiter_bytes():
                    pcm = carry + data
                    pcm, carry = pcm[: len(pcm) // 2 * 2], pcm[len(pcm) // 2 * 2 :]
                    for piece in audio.split(pcm, self.max_samples):
                        sent = True
                        yield piece
        except httpx.TimeoutException:
            what = "no more audio" if sent else "no audio"
            raise ProviderError(self.name, "timeout", f"{what} within {self.first_audio_s:g} s") from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise ProviderError(self.name, "dropped", f"the response broke off: {type(exc).__name__}") from None
        except httpx.ConnectError as exc:
            raise ProviderError(self.name, "dropped", f"cannot connect: {exc}") from None

    async def aclose(self) -> None:
        await self.client.aclose()

    def close(self) -> None:
        pass


def _error_text(body: bytes) -> str:
    try:
        data = json.loads(body)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            return str(err.get("message") or err.get("code") or "")[:200]
        if isinstance(err, str):
            return err[:200]
    except ValueError:
        pass
    return body[:200].decode(errors="replace")
