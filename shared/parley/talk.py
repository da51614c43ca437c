"""``parley talk``: a conversation from the terminal, with this machine's
microphone and speakers, over the gateway's ``/ws/pcm`` (the same way in as
the browser page).

    parley talk [--gateway http://127.0.0.1:8080] [--token T] [--param NAME=VALUE ...]

The session token comes from ``--token``, else from ``POST /api/sessions``
with ``PARLEY_API_KEY``, else from the gateway's local demo mode (``make
run``). The microphone is sent as 16 kHz PCM16 in 20 ms frames; the agent's
audio is played as it comes, and dropped at once when the agent is
interrupted (the ``interrupted`` notice), as the page does; when the agent
pauses for the caller (``pause``) what is queued is dropped too, and the
gateway is told how much (``paused``): it plays that again on resume. The terminal
shows what the agent heard (partials on one line, then the final), what it
says, and its state. Ctrl-C hangs up.

The sound device is one small interface (``Device``): ``SoundDevice``
(PortAudio through ``sounddevice``) for people, ``Injected`` (an array in, a
buffer out, at real-time pace) for tests. With no sound device, or no
PortAudio, it says so and exits 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from typing import Callable, Protocol, TextIO

import numpy as np

from . import session_params

RATE = 16000
FRAME = 320  # 20 ms
FRAME_BYTES = FRAME * 2
HANGUP_S = 2.0  # each of: telling the gateway, closing the socket, after Ctrl-C


class NoSoundDevice(Exception):
    """No way to hear or speak on this machine: the message says why."""


class Device(Protocol):
    def start(self, on_frame: Callable[[bytes], None]) -> None:
        """Begin capturing: ``on_frame`` gets 20 ms of PCM16 16 kHz mono, from any thread."""

    def play(self, pcm: bytes) -> None:
        """Queue agent audio (PCM16 16 kHz mono) for the speakers."""

    def clear(self) -> int:
        """Drop what is queued and not yet played (the agent was interrupted
        or paused); bytes dropped."""

    def stop(self) -> None: ...


class _Speaker:
    """The playback queue both devices share: bytes in, 20 ms frames out (silence when empty)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._lock = threading.Lock()

    def push(self, pcm: bytes) -> None:
        with self._lock:
            self._buf += pcm

    def clear(self) -> int:
        with self._lock:
            dropped = len(self._buf)
            self._buf.clear()
        return dropped

    def pull(self, n_bytes: int) -> bytes:
        with self._lock:
            out = bytes(self._buf[:n_bytes])
            del self._buf[:n_bytes]
        return out + bytes(n_bytes - len(out))

    @property
    def queued(self) -> int:
        return len(self._buf)


class SoundDevice:
    """The default input and output devices through PortAudio (``sounddevice``)."""

    def __init__(self) -> None:
        try:
            import sounddevice as sd
        except ImportError:
            raise NoSoundDevice("the sounddevice package is not installed (pip install 'parley[talk]')") from None
        except OSError as exc:  # PortAudio itself is missing
            raise NoSoundDevice(f"PortAudio is not available ({exc}); on Debian/Ubuntu: apt-get install libportaudio2") from None
        try:
            sd.check_input_settings(channels=1, samplerate=RATE, dtype="int16")
            sd.check_output_settings(channels=1, samplerate=RATE, dtype="int16")
        except Exception as exc:  # noqa: BLE001 - PortAudioError, ValueError: no device, or none that does 16 kHz mono
            raise NoSoundDevice(f"no usable microphone and speakers: {exc}") from None
        self.sd = sd
        self.speaker = _Speaker()
        self._streams: list = []

    def start(self, on_frame: Callable[[bytes], None]) -> None:
        def captured(indata, frames, time_info, status) -> None:
            on_frame(bytes(indata))

        def playing(outdata, frames, time_info, status) -> None:
            outdata[:] = self.speaker.pull(len(outdata))

        self._streams = [
            self.sd.RawInputStream(samplerate=RATE, channels=1, dtype="int16", blocksize=FRAME, callback=captured),
            self.sd.RawOutputStream(samplerate=RATE, channels=1, dtype="int16", blocksize=FRAME, callback=playing),
        ]
        for stream in self._streams:
            stream.start()

    def play(self, pcm: bytes) -> None:
        self.speaker.push(pcm)

    def clear(self) -> int:
        return self.speaker.clear()

    def stop(self) -> None:
        for stream in self._streams:
            try:
                stream.stop()
                stream.close()
            except Exception:  # noqa: BLE001 - closing a device that went away
                pass


class Injected:
    """A device for tests: ``mic`` (int16 16 kHz) is spoken at real-time pace
    after ``lead_s`` of silence, then silence; what the speakers played, in
    real time, is in ``played`` (with silence where nothing was queued)."""

    def __init__(self, mic: np.ndarray, lead_s: float = 0.0):
        self.mic = np.concatenate([np.zeros(int(lead_s * RATE), np.int16), mic.astype(np.int16)]).astype("<i2").tobytes()
        self.speaker = _Speaker()
        self.played = bytearray()
        self.heard_agent = bytearray()  # only what the agent said (no silence)
        self.spoken_at: float | None = None  # when the mic's audio was all out
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, on_frame: Callable[[bytes], None]) -> None:
        def run() -> None:
            t0 = time.monotonic()
            pos = i = 0
            while not self._stop.is_set():
                frame = self.mic[pos : pos + FRAME_BYTES]
                pos += FRAME_BYTES
                if pos >= len(self.mic) and self.spoken_at is None:
                    self.spoken_at = time.monotonic()
                on_frame(frame + bytes(FRAME_BYTES - len(frame)))
                queued = self.speaker.queued
                out = self.speaker.pull(FRAME_BYTES)
                self.played += out
                if queued:
                    self.heard_agent += out[: min(queued, FRAME_BYTES)]
                i += 1
                time.sleep(max(0.0, t0 + i * 0.02 - time.monotonic()))

        self._thread = threading.Thread(target=run, name="injected-audio", daemon=True)
        self._thread.start()

    def play(self, pcm: bytes) -> None:
        self.speaker.push(pcm)

    def clear(self) -> int:
        return self.speaker.clear()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)


class Screen:
    """What the terminal shows: the caller's words, the agent's words, its state."""

    def __init__(self, out: TextIO):
        self.out = out
        self.tty = out.isatty()
        self.partial = False
        self.lines: list[str] = []  # everything shown, for tests

    def show(self, notice: dict) -> None:
        kind = notice.get("type")
        if kind == "transcript":
            text = notice.get("text", "")
            if notice.get("final"):
                self._line(f"you:   {text}" if text else "you:   (nothing heard)")
            elif text and self.tty:
                self.out.write(f"\r\033[2Kyou:   {text} …")
                self.out.flush()
                self.partial = True
        elif kind == "agent_text":
            self._line(f"agent: {notice.get('text', '')}")
        elif kind == "state":
            self._line(f"       [{notice.get('state')}]", quiet=True)
        elif kind == "interrupted":
            self._line("       (you cut in: the agent stops)")
        elif kind == "tool_call":
            self._line(f"       (using {notice.get('name')})", quiet=True)
        elif kind == "end":
            self._line(f"the agent ended the call ({notice.get('reason', '')})")
        elif kind == "error":
            self._line(f"error: {notice.get('message') or notice.get('error') or notice}")

    def _line(self, text: str, quiet: bool = False) -> None:
        self.lines.append(text)
        if self.partial and self.tty:
            self.out.write("\r\033[2K")
            self.partial = False
        self.out.write(text + "\n")
        self.out.flush()


async def session_token(gateway: str, params: dict[str, str], api_key: str = "") -> str:
    """A one-time session token: with the API key, else from the local demo mode."""
    import httpx

    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        if api_key:
            r = await client.post(f"{gateway}/api/sessions", json={"params": params}, headers={"Authorization": f"Bearer {api_key}"})
        else:
            r = await client.post(f"{gateway}/api/demo/session", json={"params": params}, headers={"Origin": gateway})
        if r.status_code not in (200, 201):
            try:
                why = r.json().get("error") or r.text
            except ValueError:
                why = r.text
            raise RuntimeError(f"the gateway gave no session token (HTTP {r.status_code}): {why}")
        return r.json()["token"]


class Talk:
    """One conversation: the device's frames to the gateway, its audio and notices back."""

    def __init__(self, url: str, device: Device, screen: Screen):
        self.url = url
        self.device = device
        self.screen = screen
        self.session: str | None = None
        self.notices: list[dict] = []
        self.ended = asyncio.Event()

    async def run(self, until: asyncio.Event | None = None) -> None:
        import websockets

        loop = asyncio.get_running_loop()
        frames: asyncio.Queue[bytes] = asyncio.Queue(maxsize=100)

        def on_frame(pcm: bytes) -> None:  # the device's thread
            def put() -> None:
                if frames.full():  # the network stalled: the oldest audio goes, the conversation does not
                    frames.get_nowait()
                frames.put_nowait(pcm)

            loop.call_soon_threadsafe(put)

        async with websockets.connect(self.url, max_size=1 << 22) as ws:
            await ws.send(json.dumps({"type": "hello", "answers_pause": True}))
            self.device.start(on_frame)

            async def send() -> None:
                while True:
                    await ws.send(await frames.get())

            async def receive() -> None:
                async for msg in ws:
                    if isinstance(msg, bytes):
                        self.device.play(msg)
                        continue
                    notice = json.loads(msg)
                    self.notices.append(notice)
                    if notice.get("type") == "session":
                        self.session = notice.get("session")
                    if notice.get("type") == "interrupted":
                        self.device.clear()
                    elif notice.get("type") == "pause":
                        dropped = self.device.clear()
                        await ws.send(json.dumps({"type": "paused", "run": notice.get("run"), "unplayed_ms": dropped * 1000 // (RATE * 2)}))
                    self.screen.show(notice)
                    if notice.get("type") == "end":
                        break

            tasks = [asyncio.create_task(send()), asyncio.create_task(receive())]
            if until is not None:
                tasks.append(asyncio.create_task(until.wait()))
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in tasks:
                    t.cancel()
                self.device.stop()
                await self._hang_up(ws)
                self.ended.set()

    @staticmethod
    async def _hang_up(ws) -> None:
        """Tell the gateway, then close normally (1000), each bounded: Ctrl-C must
        end the program even when the gateway or the network no longer answers
        (left to the context manager, a cancelled run closes with 1011 and waits
        out websockets' own timeouts)."""
        try:
            await asyncio.wait_for(ws.send(json.dumps({"type": "hangup"})), HANGUP_S)
            await asyncio.wait_for(ws.close(1000, "hangup"), HANGUP_S)
        except Exception:  # noqa: BLE001 - the gateway may have gone: nothing more to tell it
            pass


def main(argv: list[str] | None = None, device: Device | None = None, out: TextIO | None = None) -> int:
    parser = argparse.ArgumentParser(prog="parley talk", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateway", default=os.environ.get("PARLEY_GATEWAY_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--token", default="", help="a session token (default: minted with PARLEY_API_KEY, or the local demo mode)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a session parameter (greeting...)")
    args = parser.parse_args(argv)
    out = out or sys.stdout
    try:
        params = session_params.from_command_line(args.param)
    except ValueError as exc:
        print(f"parley talk: {exc}", file=sys.stderr)
        return 2
    if device is None:
        try:
            device = SoundDevice()
        except NoSoundDevice as exc:
            print(f"parley talk: no sound device: {exc}", file=sys.stderr)
            return 2
    gateway = args.gateway.rstrip("/")
    screen = Screen(out)

    async def converse() -> None:
        token = args.token or await session_token(gateway, params, os.environ.get("PARLEY_API_KEY", ""))
        ws_url = gateway.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        print("connected: speak; Ctrl-C hangs up", file=out)
        await Talk(f"{ws_url}/ws/pcm?token={token}", device, screen).run()

    try:
        asyncio.run(converse())
    except KeyboardInterrupt:
        print("\nhung up", file=out)
    except (RuntimeError, OSError) as exc:
        print(f"parley talk: {exc}", file=sys.stderr)
        return 1
    return 0
