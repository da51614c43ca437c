"""Provider: an OpenAI-compatible ``POST {base}/audio/transcriptions``
(OpenAI, and local servers that speak the same API: faster-whisper-server,
speaches, vLLM...).

    POST {base}/audio/transcriptions   Authorization: Bearer KEY   multipart/form-data
      file=@utterance.wav (16 kHz PCM16 mono), model=..., response_format=json
    -> {"text": "..."}; errors {"error": {"message", "type", "code"}} with 401, 429 (+ Retry-After), 5xx

One request per utterance for its final, and one per partial while the
caller speaks (at most one in flight per session, at the worker's partial
cadence): each sends the utterance so far, so partials multiply the audio
billed (``take_billed`` counts every second sent, so the cost shows). Both
raise ``ProviderError``: a failed partial is counted (and a refused key or a
rate limit opens the worker's breaker), a failed final is heard by Whisper.
"""

from __future__ import annotations

import io
import json
import logging
import wave

import httpx
import numpy as np

from parley.providers import ProviderError, kind_of_status, retry_after

log = logging.getLogger("parley_asr.openai")

RATE = 16000


def wav_bytes(pcm16: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm16.astype("<i2").tobytes())
    return buf.getvalue()


class OpenAITranscription:
    """Shared by every session of a worker (one HTTP connection pool)."""

    name = "openai"

    def __init__(self, *, base: str, api_key: str, model: str, timeout_s: float = 2.0):
        self.url = f"{base.rstrip('/')}/audio/transcriptions"
        self.api_key = api_key
        self.model = model
        self.timeout_s = timeout_s
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=timeout_s), trust_env=False)

    def listener(self, session: str) -> "OpenAIListener":
        return OpenAIListener(self, session)

    async def transcribe(self, pcm16: np.ndarray) -> str:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        files = {"file": ("utterance.wav", wav_bytes(pcm16), "audio/wav")}
        data = {"model": self.model, "response_format": "json", "language": "en"}
        try:
            r = await self.client.post(self.url, headers=headers, files=files, data=data)
        except httpx.TimeoutException:
            raise ProviderError(self.name, "timeout", f"no answer within {self.timeout_s:g} s") from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise ProviderError(self.name, "dropped", f"the response broke off: {type(exc).__name__}") from None
        except httpx.ConnectError as exc:
            raise ProviderError(self.name, "dropped", f"cannot connect: {exc}") from None
        if r.status_code != 200:
            raise ProviderError(self.name, kind_of_status(r.status_code), f"HTTP {r.status_code} {_error_text(r.content)}".strip(), retry_after=retry_after(r.headers))
        try:
            text = r.json()["text"]
            if not isinstance(text, str):
                raise TypeError("text is not a string")
        except (ValueError, KeyError, TypeError) as exc:
            raise ProviderError(self.name, "refused", f"an answer without text: {exc}") from None
        return text.strip()

    async def aclose(self) -> None:
        await self.client.aclose()


class OpenAIListener:
    provider = "openai"

    def __init__(self, api: OpenAITranscription, session: str):
        self.api = api
        self.session = session
        self.billed = 0.0

    def audio(self, pcm: bytes) -> None:
        pass  # one request per utterance: nothing streams

    async def partial(self, audio: np.ndarray, begin: int) -> str | None:
        if len(audio) == 0:
            return None
        self.billed += len(audio) / RATE
        try:
            return await self.api.transcribe(audio) or None
        except ProviderError:
            raise  # the worker counts it, and its breaker learns of it (a 429 here spares the final)

    async def final(self, audio: np.ndarray, begin: int, end: int) -> str:
        if len(audio) == 0:
            return ""
        self.billed += len(audio) / RATE
        return await self.api.transcribe(audio)

    def take_billed(self) -> float:
        billed, self.billed = self.billed, 0.0
        return billed

    async def close(self) -> None:
        pass


def _error_text(body: bytes) -> str:
    try:
        err = json.loads(body).get("error")
        if isinstance(err, dict):
            return str(err.get("message") or err.get("code") or "")[:200]
    except (ValueError, AttributeError):
        pass
    return body[:200].decode(errors="replace")
