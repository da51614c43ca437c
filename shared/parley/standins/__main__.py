"""Run a vendor stand-in by hand, to try a cloud-provider deployment without
an account: ``python -m parley.standins deepgram|cartesia|openai [--key K]``.

It prints the settings that point a service at it, and serves until Ctrl-C.
Its hearing is a fixed sentence and its voice a tone per word (the tests
plug Whisper and Piper in); it is for wiring, not for listening.
"""

from __future__ import annotations

import argparse
import asyncio

from .cartesia import Cartesia
from .deepgram import Deepgram
from .elevenlabs import ElevenLabs
from .openai_audio import OpenAIAudio


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m parley.standins", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("vendor", choices=["deepgram", "cartesia", "elevenlabs", "openai"])
    parser.add_argument("--key", default="standin-key", help="the key it accepts (anything else: HTTP 401)")
    args = parser.parse_args()

    async def serve() -> None:
        if args.vendor == "deepgram":
            s = await Deepgram(key=args.key).start()
            print(f"PARLEY_ASR=deepgram ASR_BASE_URL={s.base} ASR_API_KEY={args.key}")
        elif args.vendor == "elevenlabs":
            s = await ElevenLabs(key=args.key).start()
            print(f"PARLEY_TTS=elevenlabs TTS_BASE_URL={s.base} TTS_API_KEY={args.key} TTS_VOICE=any")
        elif args.vendor == "cartesia":
            s = await Cartesia(key=args.key).start()
            print(f"PARLEY_TTS=cartesia TTS_BASE_URL={s.base} TTS_API_KEY={args.key} TTS_VOICE=any")
        else:
            s = await OpenAIAudio(key=args.key).start()
            print(f"PARLEY_ASR=openai ASR_BASE_URL={s.base} ASR_API_KEY={args.key}")
            print(f"PARLEY_TTS=openai TTS_BASE_URL={s.base} TTS_API_KEY={args.key}")
        await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
