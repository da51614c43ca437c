"""The environment every service reads the same way.

Each service has its own typed settings object; the part they share (where
NATS is, where to serve HTTP, which providers) is parsed here, once, with the
same validation everywhere.
"""

from __future__ import annotations

from typing import Mapping

from .natsauth import Credentials

PROVIDERS = ("real", "fixed")


def service_env(env: Mapping[str, str], *, default_port: int) -> dict[str, object]:
    """nats_url, nats_credentials, http_host, http_port and providers from the environment."""
    providers = env.get("PARLEY_PROVIDERS", "real")
    if providers not in PROVIDERS:
        raise ValueError(f"PARLEY_PROVIDERS must be one of {', '.join(PROVIDERS)}, not {providers!r}")
    port = env.get("PARLEY_HTTP_PORT", str(default_port))
    try:
        http_port = int(port)
    except ValueError:
        raise ValueError(f"PARLEY_HTTP_PORT must be a port number, not {port!r}") from None
    return {
        "nats_url": env.get("NATS_URL", "nats://127.0.0.1:4222"),
        # The service's own NATS identity (PARLEY_NATS_SEED_FILE; see parley.natsauth).
        "nats_credentials": Credentials.from_env(env),
        "http_host": env.get("PARLEY_HTTP_HOST", "127.0.0.1"),
        "http_port": http_port,
        "providers": providers,
    }
