"""Headless Chromium as a test caller, driven over the Chrome DevTools Protocol.

``Chromium(wav, profile)`` starts Debian's ``chromium`` with a fake microphone
that plays ``wav`` once (16-bit mono 48 kHz with leading silence works best;
see ``write_wav``), auto-granted media permissions, autoplay allowed and every
call home disabled. ``await browser.page()`` opens a DevTools session on the
first tab; ``Page.goto`` loads a URL and ``Page.eval`` runs JavaScript and
returns its (JSON) value. Console messages and exceptions are kept in
``Page.console`` for failure reports.

No Playwright: the DevTools protocol over ``websockets`` is all a test needs,
and it uses the system browser as is.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
import wave
from pathlib import Path

import httpx
import numpy as np
import websockets

FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    # no traffic to the internet
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--metrics-recording-only",
)


def executable() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def write_wav(path: Path, pcm16: np.ndarray, rate: int = 48000) -> Path:
    """Mono int16 samples -> a WAV file Chromium's fake capture device plays."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(pcm16, dtype="<i2").tobytes())
    return path


class Page:
    """One DevTools session attached to a tab."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.waiting: dict[int, asyncio.Future] = {}
        self.console: list[str] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                if "id" in msg:
                    fut = self.waiting.pop(msg["id"], None)
                    if fut and not fut.done():
                        fut.set_result(msg)
                elif msg.get("method") == "Runtime.consoleAPICalled":
                    p = msg["params"]
                    self.console.append(f"{p['type']}: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
                elif msg.get("method") == "Runtime.exceptionThrown":
                    self.console.append("exception: " + json.dumps(msg["params"]["exceptionDetails"])[:500])
        except websockets.ConnectionClosed:
            pass
        finally:
            for fut in self.waiting.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("the DevTools connection closed"))

    async def send(self, method: str, timeout: float = 30, **params) -> dict:
        i = next(self.ids)
        fut = asyncio.get_running_loop().create_future()
        self.waiting[i] = fut
        await self.ws.send(json.dumps({"id": i, "method": method, "params": params}))
        reply = await asyncio.wait_for(fut, timeout)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    async def eval(self, expression: str, timeout: float = 30):
        """Evaluate JavaScript (promises awaited); its value, as JSON."""
        result = await self.send("Runtime.evaluate", timeout=timeout, expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript failed: {json.dumps(result['exceptionDetails'])[:800]}")
        return result["result"].get("value")

    async def goto(self, url: str, timeout: float = 30) -> None:
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        await self.send("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while await self.eval("document.readyState") != "complete":
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not load in {timeout}s")
            await asyncio.sleep(0.05)

    async def wait_for(self, expression: str, timeout: float = 30, poll: float = 0.1):
        """Poll until ``expression`` is truthy; its value. A page navigating
        meanwhile (a form's submit, a redirect) answers an evaluation with an
        error for the document it left: polled again, in the new one."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = await self.eval(expression)
            except RuntimeError as exc:
                if not any(m in str(exc) for m in NAVIGATING) or time.monotonic() > deadline:
                    raise
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for {expression}")
            await asyncio.sleep(poll)

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()


# What Chromium's DevTools answer an evaluation that a navigation overtook.
NAVIGATING = ("Inspected target navigated or closed", "Execution context was destroyed", "Cannot find context with specified id")


class Chromium:
    """A headless Chromium process with a fake microphone playing ``wav`` once."""

    def __init__(self, wav: Path, profile: Path, binary: str | None = None) -> None:
        self.wav = wav.resolve()
        self.profile = profile
        self.binary = binary or executable()
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self, timeout: float = 30) -> "Chromium":
        if not self.binary:
            raise RuntimeError("chromium is not installed (make test installs Debian's chromium package)")
        self.profile.mkdir(parents=True, exist_ok=True)
        port_file = self.profile / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)
        args = [
            self.binary,
            *FLAGS,
            f"--use-file-for-fake-audio-capture={self.wav}%noloop",
            f"--user-data-dir={self.profile}",
            "--remote-debugging-port=0",
            "--remote-debugging-address=127.0.0.1",
            "about:blank",
        ]
        log = open(self.profile.parent / f"{self.profile.name}.log", "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}: {self.log()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"chromium did not open its DevTools port in {timeout}s")
            time.sleep(0.05)
        self.port = int(port_file.read_text().split()[0])
        return self

    def log(self) -> str:
        path = self.profile.parent / f"{self.profile.name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def page(self) -> Page:
        async with httpx.AsyncClient() as http:
            targets = (await http.get(f"http://127.0.0.1:{self.port}/json/list")).json()
        tab = next(t for t in targets if t["type"] == "page")
        ws = await websockets.connect(tab["webSocketDebuggerUrl"], max_size=None, ping_interval=None)
        return Page(ws)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def __enter__(self) -> "Chromium":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
