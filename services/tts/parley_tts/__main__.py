"""Run the TTS service: ``python -m parley_tts`` (or ``parley-tts``)."""

from __future__ import annotations

import uvicorn

from parley.heap import freeze_after_startup
from parley.settings import load

from .app import create_app
from .settings import Settings


def main() -> None:
    settings = load(Settings)  # a refused setting exits here, naming its variable
    app = create_app(settings)
    freeze_after_startup(app)  # full collections stay short under load (parley.heap)
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
