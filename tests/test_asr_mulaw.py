"""A phone call's μ-law goes to Deepgram as the carrier sent it.

The real gateway (Twilio Media Streams, under uvicorn) and the real ASR
worker (Silero VAD, the endpointer, the Deepgram adapter) on a real
nats-server, with the Deepgram stand-in in place of the vendor and a Twilio
caller (``parley.callers.twilio``) saying two Piper sentences in real time.
No orchestrator, no TTS: this is the inbound path only.

What must hold: the stream opens with ``encoding=mulaw&sample_rate=8000``
(Deepgram's documented parameters for raw μ-law); the bytes the stand-in
receives are exactly the bytes the caller sent, from the first frame; the
provider places each utterance where the caller said it (its times are
seconds of 8 kHz audio); the worker's finals carry each utterance's own words
(the provider's times map onto the utterances its VAD cut from the 16 kHz
PCM); the seconds billed are the seconds streamed. A Whisper-only worker is
never sent the μ-law copy (services/media-gateway/tests/test_twilio_media.py).
"""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
import uvicorn

from parley import bus, contract, subjects
from parley.callers.ear import first_voiced
from parley.callers.twilio import FRAME, TwilioCaller
from parley.natsd import free_port
from parley.standins.deepgram import Deepgram as DeepgramStandIn, scripted
from parley_asr.providers.deepgram import Deepgram
from parley_asr.settings import Settings as AsrSettings
from parley_asr.vad import SileroVad
from parley_asr.worker import Worker
from parley_gateway.app import create_app
from parley_gateway.settings import Settings as GatewaySettings
from speech import say, silence

KEY = "test-deepgram-key-0123456789"
FIRST, SECOND = "I'd like to book an appointment.", "Tomorrow at three please."
MU = 8000  # μ-law bytes (samples) per second


class StubWhisper:
    """The fallback; it must not be needed."""

    calls = 0

    def transcribe(self, pcm16: np.ndarray) -> str:
        StubWhisper.calls += 1
        return "the fallback heard this"


class RecordingCaller(TwilioCaller):
    """Twilio's side, keeping every μ-law byte it sent and where each utterance began in them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sent = bytearray()
        self.said_at: list[int] = []  # byte offset of each utterance's first frame

    def _mic_frame(self, now: float) -> bytes:
        if self._speech is None and not self._say.empty():
            self.said_at.append(len(self.sent))  # this frame is the utterance's first
        frame = super()._mic_frame(now)
        self.sent += frame
        return frame


@pytest.fixture(scope="module")
def gateway(nats_server):
    settings = GatewaySettings(nats_url=nats_server.url, http_port=free_port(), public_host="gw.example.com", twilio_insecure=True)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=settings.http_port, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "gateway did not start"
        time.sleep(0.02)
    yield f"ws://127.0.0.1:{settings.http_port}/twilio/media"
    server.should_exit = True
    thread.join(10)


def test_a_twilio_call_reaches_deepgram_as_the_mulaw_it_was(nats_server, gateway):
    speech = [np.concatenate([say(FIRST, 8000), silence(1.4, 8000)]), np.concatenate([say(SECOND, 8000), silence(1.4, 8000)])]

    async def main():
        standin = await DeepgramStandIn(key=KEY, hear=scripted(FIRST, SECOND)).start()
        settings = AsrSettings(nats_url=nats_server.url, providers="real", eot=False, silence_ms=300, partial_every_ms=320)
        worker = Worker(await bus.connect(nats_server.url), settings, SileroVad(), StubWhisper(), None, None,
                        cloud=Deepgram(base=standin.base, api_key=KEY, model="nova-3"))  # fmt: skip
        await worker.start()
        nc = await bus.connect(nats_server.url)
        events: list[contract.Event] = []
        native_msgs: list[dict] = []

        async def on_event(msg):
            events.append(contract.decode_event(msg.data))

        async def on_native(msg):
            native_msgs.append(dict(msg.headers or {}))

        await nc.subscribe(subjects.EVENTS_ALL, cb=on_event)
        await nc.subscribe(f"{subjects.PREFIX}.audio.native.*", cb=on_native)
        await nc.flush()
        caller = RecordingCaller(gateway, {"test_call": ""})
        caller.custom_parameters["test_call"] = caller.call_sid
        try:
            async with caller:
                await asyncio.sleep(0.5)
                for pcm in speech:
                    await caller.say(pcm)
                session = next(e.session for e in events if isinstance(e, contract.SessionStarted) and e.params.get("test_call") == caller.call_sid)
                deadline = time.monotonic() + 20
                while len([e for e in events if isinstance(e, contract.TranscriptFinal) and e.session == session]) < 2:
                    assert time.monotonic() < deadline, f"no two finals: {events}"
                    await asyncio.sleep(0.05)
                sent = len(caller.sent)
                while len(standin.streams[-1]["raw"]) < sent:  # what was sent so far is on its way
                    assert time.monotonic() < deadline + 5, (len(standin.streams[-1]["raw"]), sent)
                    await asyncio.sleep(0.02)
            deadline = time.monotonic() + 10  # hung up: the stream is closed, the last Usage reported
            while standin.streams[-1]["close"] is None or sum(e.amount for e in events if isinstance(e, contract.Usage) and e.session == session) < standin.streams[-1]["audio_s"] - 0.05:
                assert time.monotonic() < deadline, (standin.streams[-1]["close"], [e for e in events if isinstance(e, contract.Usage)])
                await asyncio.sleep(0.05)
            return [e for e in events if e.session == session], standin.streams, bytes(caller.sent), caller.said_at, native_msgs
        finally:
            await nc.close()
            await worker.stop()
            await worker.nc.close()
            await standin.stop()

    events, streams, sent, said_at, native_msgs = asyncio.run(main())
    # One stream heard the call, never reopened (on a loaded machine a first connection may time out
    # before it carried anything: the audio is held meanwhile and the next one gets all of it).
    heard = [s for s in streams if s["raw"]]
    assert len(heard) == 1, [(s["close"], len(s["raw"]), s["controls"][:3]) for s in streams]
    [stream] = heard
    q = stream["query"]
    assert q["encoding"] == "mulaw" and q["sample_rate"] == "8000" and q["channels"] == "1"

    # The carrier's bytes, unchanged and complete from the call's first frame.
    raw = bytes(stream["raw"])
    assert len(raw) >= len(sent) - 10 * FRAME and sent.startswith(raw), (len(raw), len(sent))
    assert native_msgs and all(h[subjects.H_ENCODING] == "mulaw" and h[subjects.H_RATE] == "8000" for h in native_msgs)
    assert [int(h[subjects.H_SEQ]) for h in native_msgs] == list(range(len(native_msgs)))

    # The provider heard each utterance where the caller said it (seconds of 8 kHz audio).
    voiced = [(at + first_voiced(pcm, MU) * MU) / MU for at, pcm in zip(said_at, speech)]
    ends = [(at + _last_voiced(pcm)) / MU for at, pcm in zip(said_at, speech)]
    assert len(stream["speech_started"]) == 2 and np.allclose(stream["speech_started"], voiced, atol=0.06), (stream["speech_started"], voiced)
    finals = [r for r in stream["results"] if r["is_final"] and r["text"]]
    assert [r["text"] for r in finals] == [FIRST, SECOND]
    # Each final begins where the provider's own VAD heard that utterance begin (its 20 ms energy
    # frames find the first word up to a few frames after the 5 ms windows above: 0.035 s once,
    # under load, on "I'd"), and reaches past the utterance's last sound.
    for r, begin, end in zip(finals, stream["speech_started"], ends):
        assert r["start"] <= begin + 0.001 and end - 0.03 <= r["start"] + r["duration"] <= end + 1.2, (r, begin, end)

    # The worker: each utterance's own words, behind the usual events; no fallback.
    assert [e.text for e in events if isinstance(e, contract.TranscriptFinal)] == [FIRST, SECOND]
    kinds = [type(e).__name__ for e in events if isinstance(e, (contract.SpeechStarted, contract.SpeechStopped, contract.TranscriptFinal))]
    assert kinds == ["SpeechStarted", "SpeechStopped", "TranscriptFinal"] * 2
    assert not [e for e in events if isinstance(e, contract.ProviderFailed)] and StubWhisper.calls == 0
    # Billed: the seconds streamed (a μ-law byte is 1/8000 s).
    billed = sum(e.amount for e in events if isinstance(e, contract.Usage) and e.provider == "deepgram")
    assert billed == pytest.approx(len(raw) / MU, abs=0.05) and stream["audio_s"] == pytest.approx(len(raw) / MU, abs=0.001)


def _last_voiced(pcm: np.ndarray) -> int:
    """Samples into ``pcm`` where its sound ends (the end of the last 5 ms window above 1 % of full scale)."""
    n = MU // 200
    k = len(pcm) // n
    rms = np.sqrt((pcm[: k * n].astype(np.float64).reshape(k, n) ** 2).mean(axis=1)) / 32768
    loud = np.flatnonzero(rms > 0.01)
    return int((loud[-1] + 1) * n)
