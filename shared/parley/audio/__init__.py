"""Parley's audio codec layer: pure functions and small stateful objects, no I/O.

* ``g711``: μ-law <-> PCM16 (Twilio's wire format).
* ``resample``: streaming rate conversion between 8 000, 16 000, 22 050,
  24 000 and 48 000 Hz, and the stereo->mono downmix for WebRTC frames.
* ``framing``: ``Framer`` cuts a byte stream into whole frames.
* ``playout``: ``Playout``, the gateway's outbound buffer: runs and chunks in
  order, pause/resume, flush within one frame, marks when chunks start/finish.

All PCM is 16-bit signed little-endian ("s16le"), mono unless named stereo.
Import from here (``from parley.audio import Resampler``); the submodules are
an implementation detail.
"""

from .framing import Framer
from .g711 import pcm16_to_ulaw, ulaw_samples, ulaw_to_pcm16
from .playout import Mark, Playout
from .resample import RATES, Resampler, stereo_to_mono

__all__ = [
    "RATES",
    "Framer",
    "Mark",
    "Playout",
    "Resampler",
    "pcm16_to_ulaw",
    "stereo_to_mono",
    "ulaw_samples",
    "ulaw_to_pcm16",
]
