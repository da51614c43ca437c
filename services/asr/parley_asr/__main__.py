"""Run the ASR service: ``python -m parley_asr`` (or ``parley-asr``)."""

from __future__ import annotations

import os

from parley import service

from .app import create_app
from .settings import Settings


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the models come from wheels, never from a hub
    service.run(Settings, create_app)


if __name__ == "__main__":
    main()
