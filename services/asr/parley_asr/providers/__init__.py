"""Cloud speech-to-text providers: who hears the words of an utterance.

The floor is never the provider's: the worker's own Silero VAD and
endpointer say when the caller starts and stops (SpeechStarted,
SpeechStopped with its end-of-turn score), whatever provider hears the
words, so the reducer cannot tell providers apart and barge-in reacts as
fast with every one of them. A provider gives the words: partials while the
caller speaks, and the final of each utterance the endpointer cut.

One ``Listener`` per session:

* ``audio(pcm)``: every inbound frame, in order (16 kHz PCM16; sample 0 is
  the session's first). A streaming provider (Deepgram) sends it on; a
  request-per-utterance provider (OpenAI) ignores it.
* ``native_audio(data)`` (only providers with ``natives``, only on a
  listener opened with ``native=``): the caller's audio as the carrier sent
  it (μ-law 8 kHz from Twilio), in order, in place of ``audio``; sample 0
  is still the session's first, and times stay in 16 kHz samples.
* ``partial(audio, begin)``: the words of the utterance so far, or None.
* ``final(audio, begin, end)``: the utterance's words (samples
  ``[begin, end)`` of the session; ``audio`` is that stretch with its
  pre-roll). Raises ``ProviderError`` when the provider cannot say: the
  worker then hands the same audio to Whisper (the fallback).
* ``take_billed()``: seconds of audio the provider billed since last asked
  (the session's ``Usage``).
* ``close()``: the session ended.

Why hand-written clients rather than ``deepgram-sdk`` or ``openai``: both
SDKs reconnect and retry on their own, which hides exactly the failures a
fallback must see at once, and neither lets a test point them at a stand-in
as simply as a base URL. The protocols are small and documented.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Listener(Protocol):
    provider: str

    def audio(self, pcm: bytes) -> None: ...

    async def partial(self, audio: np.ndarray, begin: int) -> str | None: ...

    async def final(self, audio: np.ndarray, begin: int, end: int) -> str: ...

    def take_billed(self) -> float: ...

    async def close(self) -> None: ...
