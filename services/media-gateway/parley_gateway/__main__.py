"""Run the media gateway: ``python -m parley_gateway``."""

from __future__ import annotations

import uvicorn

from parley.settings import load

from .app import create_app
from .settings import Settings


def main() -> None:
    settings = load(Settings)  # a refused setting exits here, naming its variable
    uvicorn.run(create_app(settings), host=settings.http_host, port=settings.http_port, log_config=None, access_log=False, ws_max_size=1 << 20)


if __name__ == "__main__":
    main()
