"""How the streaming TTS adapters (Cartesia, ElevenLabs) open their
WebSocket: one place that turns every way the handshake can fail into the
``ProviderError`` the worker falls back on (refused with an HTTP status, no
answer in time, the network)."""

from __future__ import annotations

import asyncio

import websockets
from websockets.exceptions import InvalidHandshake, InvalidStatus

from parley.providers import ProviderError, handshake_refused

# Where Cartesia and ElevenLabs put the reason of a refused handshake (a JSON body).
REASON_KEYS = ("message", "error", "detail")
MAX_MESSAGE = 16 * 2**20  # a provider's largest audio message


async def open_socket(provider: str, url: str, headers: dict[str, str], timeout_s: float):
    """The provider's socket, open; raises ProviderError (auth, rate_limit,
    refused, timeout, dropped)."""
    try:
        return await asyncio.wait_for(websockets.connect(url, additional_headers=headers, max_size=MAX_MESSAGE, open_timeout=None), timeout_s)
    except InvalidStatus as exc:
        raise handshake_refused(provider, exc.response.status_code, exc.response.headers, exc.response.body, REASON_KEYS) from None
    except asyncio.TimeoutError:
        raise ProviderError(provider, "timeout", f"no connection within {timeout_s:g} s") from None
    except (OSError, InvalidHandshake) as exc:
        raise ProviderError(provider, "dropped", f"cannot connect: {exc}") from None
