"""Run the TTS service: ``python -m parley_tts`` (or ``parley-tts``)."""

from __future__ import annotations

from parley import service

from .app import create_app
from .settings import Settings


def main() -> None:
    service.run(Settings, create_app)


if __name__ == "__main__":
    main()
