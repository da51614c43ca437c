"""Voices: one small interface in front of each way of making speech.

``Voice.stream(job)`` is an async iterator of PCM16 LE mono pieces at
``sample_rate``, each at most ``piece_ms`` long, the first as soon as it
exists. Closing the iterator (``aclose``, or cancelling the task that awaits
it) stops the synthesis between pieces. A failure raises ``SynthesisError``.

* ``piper_voice.Piper``: the joe-medium Piper voice, in worker threads.
* ``canned.Canned``: fixed-latency mode: a recorded clip looped to length,
  paced like a streaming TTS, no model and almost no CPU.
"""

from __future__ import annotations

from typing import AsyncIterator, Protocol

from ..lanes import Job


class SynthesisError(Exception):
    pass


class Voice(Protocol):
    name: str
    sample_rate: int

    def stream(self, job: Job) -> AsyncIterator[bytes]: ...

    def close(self) -> None: ...
