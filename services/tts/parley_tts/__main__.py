"""Run the TTS service: ``python -m parley_tts`` (or ``parley-tts``)."""

from __future__ import annotations

import uvicorn

from parley import logs

from .app import create_app
from .settings import Settings


def main() -> None:
    logs.setup("tts")
    settings = Settings.from_env()
    uvicorn.run(create_app(settings), host=settings.http_host, port=settings.http_port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
