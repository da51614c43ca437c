"""Run the media gateway: ``python -m parley_gateway``."""

from __future__ import annotations

from parley import service

from .app import create_app
from .settings import Settings


def main() -> None:
    service.run(Settings, create_app, ws_max_size=1 << 20)


if __name__ == "__main__":
    main()
