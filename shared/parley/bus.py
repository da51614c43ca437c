"""Thin helpers over nats-py: connecting, and publishing contract messages and audio.

Audio never travels as JSON or base64: a message body is raw PCM16 LE mono, and
the sequence number, sample rate (and for TTS the chunk and end-of-chunk flag)
ride in NATS headers, named in ``parley.subjects``.
"""

from __future__ import annotations

import logging
import os

import nats
from nats.aio.client import Client

from . import contract, subjects

log = logging.getLogger("parley.bus")


async def connect(url: str | None = None, name: str = "parley", **options) -> Client:
    """Connect with reconnects on and errors logged rather than raised."""

    async def error_cb(exc: Exception) -> None:
        log.warning("nats error: %s", exc)

    async def disconnected_cb() -> None:
        log.warning("nats disconnected")

    async def reconnected_cb() -> None:
        log.info("nats reconnected")

    return await nats.connect(
        url or os.environ.get("NATS_URL", "nats://127.0.0.1:4222"),
        name=name,
        error_cb=error_cb,
        disconnected_cb=disconnected_cb,
        reconnected_cb=reconnected_cb,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        **options,
    )


async def publish_event(nc: Client, event: contract.Event, headers: dict[str, str] | None = None) -> None:
    await nc.publish(subjects.events(event.session), contract.encode(event), headers=headers)


def audio_headers(seq: int, rate: int, chunk: int | None = None, last: bool = False) -> dict[str, str]:
    h = {subjects.H_SEQ: str(seq), subjects.H_RATE: str(rate)}
    if chunk is not None:
        h[subjects.H_CHUNK] = str(chunk)
        h[subjects.H_LAST] = "1" if last else "0"
    return h


class AudioMeta:
    """Parsed audio headers; raises ValueError on missing or malformed ones."""

    __slots__ = ("seq", "rate", "chunk", "last")

    def __init__(self, headers: dict[str, str] | None):
        h = headers or {}
        try:
            self.seq = int(h[subjects.H_SEQ])
            self.rate = int(h[subjects.H_RATE])
            self.chunk = int(h[subjects.H_CHUNK]) if subjects.H_CHUNK in h else None
        except (KeyError, ValueError) as exc:
            raise ValueError(f"bad audio headers {h!r}") from exc
        self.last = h.get(subjects.H_LAST) == "1"
