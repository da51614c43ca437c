"""Make ``canned.wav``, the fixed-latency mode's recording, once, with Piper.

    python -m parley_tts.canned_clip [out.wav]

The committed file was made this way; re-running it gives a similar (Piper
adds a little noise), not identical, clip.
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import audio
from .adapters.piper_voice import load_voice

TEXT = "Thanks for calling. I can help you with that right away."


def make(text: str = TEXT) -> tuple[bytes, int]:
    voice = load_voice()
    pcm = b"".join(s.audio_int16_array.tobytes() for s in voice.synthesize(text))
    return pcm, voice.config.sample_rate


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("canned.wav")
    pcm, rate = make()
    out.write_bytes(audio.write_wav(pcm, rate))
    print(f"wrote {out}: {audio.ms_of(len(pcm), rate)} ms at {rate} Hz, {out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
