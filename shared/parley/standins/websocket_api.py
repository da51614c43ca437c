"""What the WebSocket stand-ins (Deepgram, Cartesia, ElevenLabs) share: a
server on a free local port whose ``_handshake`` may refuse the upgrade with
an HTTP answer, as the vendors do (a bad key, a bad query, a fault asked for
by the test), and whose ``_connection`` serves each socket it accepts."""

from __future__ import annotations

import json
from typing import Callable

from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.http11 import Response

from . import Faults, Threaded

REASONS = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error"}


def json_response(status: int, body: dict, headers: dict | None = None) -> Response:
    """An HTTP answer to the upgrade request, with a JSON body."""
    data = json.dumps(body).encode()
    h = Headers({"Content-Type": "application/json", "Content-Length": str(len(data)), **(headers or {})})
    return Response(status, REASONS.get(status, "Error"), h, data)


class WebSocketApi(Threaded):
    """A subclass sets ``host``, ``faults`` and ``refused`` (the statuses it
    refused upgrades with) and defines ``_handshake(connection, request)``
    (None: accept) and ``async _connection(ws)``."""

    host = "127.0.0.1"
    port = 0
    max_size: int | None = 2**20  # the largest message taken (websockets' default)
    faults: Faults
    refused: list[int]
    _server = None

    @property
    def base(self) -> str:
        return f"ws://{self.host}:{self.port}"

    async def start(self):
        self._server = await serve(self._connection, self.host, 0, process_request=self._handshake, max_size=self.max_size)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _handshake(self, connection, request) -> Response | None:
        raise NotImplementedError

    async def _connection(self, ws) -> None:
        raise NotImplementedError

    def _refuse(self, status: int, body: dict, headers: dict | None = None) -> Response:
        self.refused.append(status)
        return json_response(status, body, headers)

    def _fault_refusal(self, body: Callable[[int], dict]) -> Response | None:
        """The refusal the test asked of the next handshake (``faults``), with
        Retry-After when it gave one and the vendor's ``body(status)``; or None."""
        fault = self.faults.next(handshake=True)
        if fault is None or not fault.status:
            return None
        headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
        return self._refuse(fault.status, body(fault.status), headers)
