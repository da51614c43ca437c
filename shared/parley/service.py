"""How a Parley service process starts (each service's ``__main__``).

Settings from the environment, parsed once (a refused one exits 2, naming its
variable: ``parley.settings.load``); the app from the service's factory; the
heap frozen once startup is done (``parley.heap``); then uvicorn serves it
with the process's own logging (no access log: the services log what they
decide). One place, so that a step every service needs is added once.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from .heap import freeze_after_startup
from .settings import load

S = TypeVar("S")


def run(settings_class: type[S], create_app: Callable[[S], Any], **server_options) -> None:
    """Serve ``create_app(settings)`` on the settings' host and port until
    stopped; ``server_options`` go to uvicorn (the gateway's ``ws_max_size``)."""
    import uvicorn  # the service brings its server (each service's dependency)

    settings = load(settings_class)
    app = create_app(settings)
    freeze_after_startup(app)  # full collections stay short under load
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_config=None, access_log=False, **server_options)
