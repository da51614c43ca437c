"""Cutting a byte stream into fixed-size frames.

Audio arrives in whatever sizes the network delivers (Twilio promises no
size; a decoder hands out its own block size) while consumers want fixed
frames: 20 ms for playout, 32 ms windows for the VAD. ``Framer`` keeps the
remainder between calls, so no byte is lost or reordered.
"""

from __future__ import annotations


class Framer:
    """Accumulate bytes; hand out whole frames of ``frame_bytes``, keep the rest."""

    __slots__ = ("frame_bytes", "_buf")

    def __init__(self, frame_bytes: int) -> None:
        if frame_bytes <= 0:
            raise ValueError("frame_bytes must be positive")
        self.frame_bytes = frame_bytes
        self._buf = bytearray()

    def push(self, data: bytes) -> list[bytes]:
        """Append ``data``; return every whole frame now available, oldest first."""
        self._buf += data
        n = len(self._buf) // self.frame_bytes * self.frame_bytes
        if not n:
            return []
        buf = bytes(self._buf[:n])
        del self._buf[:n]
        size = self.frame_bytes
        return [buf[i : i + size] for i in range(0, n, size)]

    @property
    def pending(self) -> int:
        """Bytes held back, always fewer than one frame."""
        return len(self._buf)

    def remainder(self) -> bytes:
        """Take the partial frame (for example at end of stream) and empty the framer."""
        rest = bytes(self._buf)
        self._buf.clear()
        return rest
