"""Local stand-ins for the cloud providers, speaking each vendor's documented
wire format, for tests and for trying a deployment without accounts.

* ``deepgram.Deepgram``: live streaming speech-to-text, ``/v1/listen`` over a
  WebSocket (Results, SpeechStarted, UtteranceEnd, Metadata; KeepAlive,
  Finalize, CloseStream; 401 at the handshake, close codes).
* ``cartesia.Cartesia``: TTS over a WebSocket with contexts (chunk,
  timestamps, done, error; cancel).
* ``elevenlabs.ElevenLabs``: TTS over the multi-context WebSocket (audio
  with alignment, isFinal; flush, close_context).
* ``openai_audio.OpenAIAudio``: ``POST /v1/audio/speech`` (streamed PCM) and
  ``POST /v1/audio/transcriptions`` (multipart), with OpenAI's error body.

Each is written from the vendor's public documentation (the module says
which pages), never from its SDK, and each can misbehave on request:
``Fault`` entries are taken one per request (a handshake, a TTS context, an
HTTP request) — a refused key (401), a rate limit (429, with Retry-After), an
in-band error, a socket dropped after some bytes, a slow first byte — so a
test can make the provider fail mid-call and see the service fall back.
They run on the caller's event loop (``await s.start()``) or in a thread of
their own (``s.start_in_thread()``) for tests that run the services as
processes. What they "say" and "hear" is pluggable: a cheap tone by default,
real speech (Piper) and real recognition (Whisper) when a test wants the
words to survive the round trip.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass


@dataclass
class Fault:
    """One request's misbehaviour. ``status``: refuse it with this HTTP status
    (at the WebSocket handshake, or as the HTTP response); ``in_band``: answer
    with the vendor's error message carrying this status (TTS contexts);
    ``drop_after``: close the connection abruptly after this many bytes of
    audio; ``delay_first``: seconds before the first byte of audio."""

    status: int = 0
    in_band: int = 0
    retry_after: float | None = None
    drop_after: int | None = None
    delay_first: float = 0.0


class Faults:
    """Faults for the next requests, in order; then ``always`` (None: behave)."""

    def __init__(self) -> None:
        self.queue: list[Fault] = []
        self.always: Fault | None = None
        self.taken: list[Fault | None] = []

    def next(self, *, handshake: bool = False) -> Fault | None:
        """The fault of the next request. A handshake takes only a refusal
        (``status``); other faults wait for the request they are meant for."""
        fault = None
        if self.queue and (not handshake or self.queue[0].status):
            fault = self.queue.pop(0)
        elif self.always is not None and (not handshake or self.always.status):
            fault = self.always
        self.taken.append(fault)
        return fault


class Threaded:
    """Runs a stand-in's ``start``/``stop`` on a loop in a thread of its own."""

    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    def start_in_thread(self):
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.start())  # type: ignore[attr-defined]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name=type(self).__name__, daemon=True)
        self._thread.start()
        ready.wait(30)
        return self

    def stop_thread(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self.stop(), self._loop).result(10)  # type: ignore[attr-defined]
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)


def tone_speech(text: str, rate: int) -> bytes:
    """Cheap stand-in speech: 120 ms of tone per word (the pitch follows the
    word) and 40 ms of silence between words. Deterministic."""
    import numpy as np

    out = []
    for word in text.split():
        n = int(0.12 * rate)
        f = 180 + (sum(map(ord, word)) % 200)
        t = np.arange(n) / rate
        out.append((np.sin(2 * np.pi * f * t) * 8000).astype("<i2").tobytes())
        out.append(bytes(int(0.04 * rate) * 2))
    return b"".join(out)
