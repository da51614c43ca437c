"""Run the ASR service: ``python -m parley_asr`` (or ``parley-asr``)."""

from __future__ import annotations

import os

import uvicorn

from parley.heap import freeze_after_startup
from parley.settings import load

from .app import create_app
from .settings import Settings


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the models come from wheels, never from a hub
    settings = load(Settings)  # a refused setting exits here, naming its variable
    app = create_app(settings)
    freeze_after_startup(app)  # full collections stay short under load (parley.heap)
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
