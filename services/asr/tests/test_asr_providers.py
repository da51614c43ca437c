"""Cloud ASR providers against local stand-ins of their vendors' documented
wire formats (parley.standins), with the real worker (Silero VAD, the
endpointer) on a real nats-server and Piper speech.

What must hold: the events are the ones the Whisper path makes, in the same
order (SpeechStarted, partials, SpeechStopped, TranscriptFinal per
utterance), with the provider's words; a refused key, a rate limit, a stream
dropped mid-utterance and a provider too slow to answer are each loud
(logged, counted, ProviderFailed on the session) and lose nothing (the
fallback hears the utterance from the audio the worker holds); the audio
billed is reported as Usage. The fallback here is a stub that answers at
once (the service loads Whisper in its place).
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest
from asr_harness import Events, claim, end, silence, stream

from parley import bus, contract
from parley.standins import Fault
from parley.standins.deepgram import Deepgram as DeepgramStandIn, scripted
from parley.standins.openai_audio import OpenAIAudio
from parley_asr.providers import deepgram as deepgram_module
from parley_asr.providers.deepgram import Deepgram
from parley_asr.providers.openai_transcribe import OpenAITranscription
from parley_asr.settings import Settings
from parley_asr.vad import SileroVad
from parley_asr.worker import Worker

DKEY = "test-deepgram-key-0123456789"
OKEY = "sk-test-openai-audio-key-0123"
FIRST, SECOND = "I'd like to book an appointment.", "Tomorrow at three please."
FALLBACK_WORDS = "what the fallback heard"


class StubWhisper:
    def __init__(self) -> None:
        self.calls = 0

    def transcribe(self, pcm16: np.ndarray) -> str:
        self.calls += 1
        return FALLBACK_WORDS


@pytest.fixture(scope="module")
def silero():
    return SileroVad()


def two_utterances(speak) -> np.ndarray:
    return np.concatenate([speak("I would like to book an appointment.", lead_s=0.6, trail_s=1.6), speak("Tomorrow at three please.", lead_s=0.2, trail_s=1.6)])


class Rig:
    def __init__(self, nats_url, silero, provider: str, *, key: str | None = None, fallback: bool = True, timeout_s: float = 2.0):
        self.nats_url, self.silero, self.provider, self.key, self.fallback, self.timeout_s = nats_url, silero, provider, key, fallback, timeout_s

    async def __aenter__(self) -> "Rig":
        if self.provider == "deepgram":
            self.standin = await DeepgramStandIn(key=DKEY, hear=scripted(FIRST, SECOND)).start()
            cloud = Deepgram(base=self.standin.base, api_key=self.key or DKEY, model="nova-3", timeout_s=self.timeout_s)
        else:
            answers = iter([FIRST, SECOND] + [SECOND] * 100)
            self.standin = await OpenAIAudio(key=OKEY, hear=lambda pcm, rate: next(answers)).start()
            cloud = OpenAITranscription(base=self.standin.base, api_key=self.key or OKEY, model="gpt-4o-mini-transcribe", timeout_s=self.timeout_s)
        self.stub = StubWhisper() if self.fallback else None
        settings = Settings(nats_url=self.nats_url, providers="real", eot=False, silence_ms=300, partial_every_ms=320)
        self.worker = Worker(await bus.connect(self.nats_url), settings, self.silero, self.stub, None, None, cloud=cloud)
        await self.worker.start()
        self.nc = await bus.connect(self.nats_url)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.worker.stop()
        await self.worker.nc.close()
        await self.nc.close()
        await self.standin.stop()


def heard_streams(standin) -> list[dict]:
    """The stand-in's streams that carried audio: on a loaded machine the worker's first
    connection may time out before it carried any (the audio is held meanwhile, and the
    next connection gets it all), which is not what these tests are about."""
    return [s for s in standin.streams if s["raw"]]


def per_utterance_order(events: list) -> None:
    """Each utterance: SpeechStarted, partials, SpeechStopped, then its final; utterances in order."""
    floor = [e for e in events if isinstance(e, (contract.SpeechStarted, contract.TranscriptPartial, contract.SpeechStopped, contract.TranscriptFinal))]
    by_utt: dict[int, list[str]] = {}
    for e in floor:
        by_utt.setdefault(e.utterance, []).append(type(e).__name__)
    for u, kinds in by_utt.items():
        assert kinds[0] == "SpeechStarted" and kinds[-2:] == ["SpeechStopped", "TranscriptFinal"], (u, kinds)
        assert set(kinds[1:-2]) <= {"TranscriptPartial"}, (u, kinds)
    finals = [e.utterance for e in floor if isinstance(e, contract.TranscriptFinal)]
    assert finals == sorted(finals)


def usage(events: list) -> dict[str, float]:
    out: dict[str, float] = {}
    for u in events:
        if isinstance(u, contract.Usage):
            assert u.service == "asr" and u.unit == "audio_s"
            out[u.provider] = out.get(u.provider, 0) + u.amount
    return out


# ------------------------------------------------------------------ Deepgram


def test_deepgram_words_behind_the_same_events(nats_url, silero, speak):
    async def main():
        async with Rig(nats_url, silero, "deepgram") as r:
            ev = await Events.watch(r.nc, "dg-1")
            await claim(r.nc, "dg-1")
            await stream(r.nc, "dg-1", two_utterances(speak), speed=2.0, chunk=320)
            await ev.finals("dg-1", 2, timeout=20)
            await end(r.nc, "dg-1")
            # the last Usage comes when the stream closes: everything streamed, billed
            await ev.wait_for(lambda e: usage(e.of("dg-1")).get("deepgram", 0) >= r.standin.streams[-1]["audio_s"] - 0.05, timeout=10)
            return ev.of("dg-1"), heard_streams(r.standin), r.stub.calls

    events, streams, stub_calls = asyncio.run(main())
    per_utterance_order(events)
    finals = [e for e in events if isinstance(e, contract.TranscriptFinal)]
    assert [f.text for f in finals] == [FIRST, SECOND]
    assert any(isinstance(e, contract.TranscriptPartial) for e in events)  # interim results became partials
    assert not [e for e in events if isinstance(e, contract.ProviderFailed)] and stub_calls == 0
    [s] = streams
    q = s["query"]
    assert q["encoding"] == "linear16" and q["sample_rate"] == "16000" and q["interim_results"] == "true"
    assert q["model"] == "nova-3" and "endpointing" in q and "utterance_end_ms" in q and q["vad_events"] == "true"
    assert "Finalize" in s["controls"] and s["controls"][-1] == "CloseStream" and s["close"] == (1000, "")
    assert usage(events)["deepgram"] == pytest.approx(s["audio_s"], abs=0.05)  # every second streamed is billed


def test_deepgram_bad_key_is_loud_and_whisper_hears_the_utterance(nats_url, silero, speak, caplog):
    async def main():
        # The refusal is what is checked, not the connect timeout: a loaded CI box once
        # took more than the default 2 s to answer the handshake, and the failure read "timeout".
        async with Rig(nats_url, silero, "deepgram", key="wrong-key-abcdefgh", timeout_s=15.0) as r:
            ev = await Events.watch(r.nc, "dg-2")
            await claim(r.nc, "dg-2")
            await stream(r.nc, "dg-2", speak(FIRST, lead_s=0.6, trail_s=1.2), speed=0, chunk=320)
            await ev.finals("dg-2", 1, timeout=20)
            return ev.of("dg-2"), r.worker.stats, r.standin.refused

    with caplog.at_level(logging.INFO):
        events, stats, refused = asyncio.run(main())
    per_utterance_order(events)
    [final] = [e for e in events if isinstance(e, contract.TranscriptFinal)]
    assert final.text == FALLBACK_WORDS
    [f] = [e for e in events if isinstance(e, contract.ProviderFailed)]
    assert f.service == "asr" and f.provider == "deepgram" and f.fallback == "whisper" and f.utterance == 0
    assert f.error.startswith("auth") and "401" in f.error
    assert refused and set(refused) == {401}
    assert stats["provider_failures"] == 1 and stats["fallback_finals"] == 1
    assert "wrong-key-abcdefgh" not in caplog.text


def test_deepgram_stream_dropped_mid_utterance_whisper_hears_it_and_the_stream_comes_back(nats_url, silero, speak):
    async def main():
        async with Rig(nats_url, silero, "deepgram") as r:
            r.standin.faults.queue.append(Fault(drop_after=int(1.2 * 16000 * 2)))  # inside the first utterance
            ev = await Events.watch(r.nc, "dg-3")
            await claim(r.nc, "dg-3")
            await stream(r.nc, "dg-3", two_utterances(speak), speed=2.0, chunk=320)
            await ev.finals("dg-3", 2, timeout=20)
            return ev.of("dg-3"), heard_streams(r.standin)

    events, streams = asyncio.run(main())
    per_utterance_order(events)
    finals = [e.text for e in events if isinstance(e, contract.TranscriptFinal)]
    assert finals[0] == FALLBACK_WORDS  # the provider missed its start: Whisper heard it
    assert finals[1] in (FIRST, SECOND)  # the reopened stream heard the next one (its own first words)
    [f] = [e for e in events if isinstance(e, contract.ProviderFailed)]
    assert f.utterance == 0 and f.error.startswith("dropped")
    assert len(streams) == 2 and streams[0]["close"] == "dropped"


def test_deepgram_too_slow_times_out_to_whisper(nats_url, silero, speak):
    async def main():
        async with Rig(nats_url, silero, "deepgram", timeout_s=0.5) as r:
            r.standin.faults.queue.append(Fault(delay_first=3.0))
            ev = await Events.watch(r.nc, "dg-4")
            await claim(r.nc, "dg-4")
            await stream(r.nc, "dg-4", speak(FIRST, lead_s=0.6, trail_s=1.2), speed=0, chunk=320)
            await ev.finals("dg-4", 1, timeout=20)
            return ev.of("dg-4")

    events = asyncio.run(main())
    [final] = [e for e in events if isinstance(e, contract.TranscriptFinal)]
    assert final.text == FALLBACK_WORDS
    [f] = [e for e in events if isinstance(e, contract.ProviderFailed)]
    assert f.error.startswith("timeout")


def test_deepgram_without_fallback_the_final_is_empty_and_says_why(nats_url, silero, speak):
    async def main():
        async with Rig(nats_url, silero, "deepgram", key="wrong-key-abcdefgh", fallback=False) as r:
            ev = await Events.watch(r.nc, "dg-5")
            await claim(r.nc, "dg-5")
            await stream(r.nc, "dg-5", speak(FIRST, lead_s=0.6, trail_s=1.2), speed=0, chunk=320)
            await ev.finals("dg-5", 1, timeout=20)
            return ev.of("dg-5")

    events = asyncio.run(main())
    [final] = [e for e in events if isinstance(e, contract.TranscriptFinal)]
    assert final.text == ""
    [f] = [e for e in events if isinstance(e, contract.ProviderFailed)]
    assert f.fallback == ""


def test_deepgram_keepalive_while_no_audio_flows(nats_url, silero, speak, monkeypatch):
    monkeypatch.setattr(deepgram_module, "KEEPALIVE_S", 0.2)

    async def main():
        async with Rig(nats_url, silero, "deepgram") as r:
            await claim(r.nc, "dg-6")
            await stream(r.nc, "dg-6", silence(0.2), speed=0, chunk=320)
            await asyncio.sleep(1.0)
            return list(r.standin.streams[0]["controls"]), r.standin.streams[0]["close"], len(r.standin.streams)

    controls, close, n = asyncio.run(main())
    assert controls.count("KeepAlive") >= 2 and close is None and n == 1  # kept open, never reopened


def test_deepgram_standin_refuses_raw_audio_it_cannot_decode_at_the_handshake():
    """Deepgram: raw audio needs both encoding and sample_rate; the stand-in decodes linear16 and mulaw."""
    import websockets
    from websockets.exceptions import InvalidStatus

    async def main():
        standin = await DeepgramStandIn(key=DKEY).start()
        statuses = {}
        try:
            for query in ("encoding=mulaw", "sample_rate=8000", "encoding=mulaw&sample_rate=0", "encoding=opus&sample_rate=48000", "encoding=mulaw&sample_rate=8000"):
                try:
                    async with websockets.connect(f"{standin.base}/v1/listen?{query}", additional_headers={"Authorization": f"Token {DKEY}"}) as ws:
                        await ws.send(bytes(range(256)))  # any byte is a μ-law sample
                        await ws.send('{"type": "CloseStream"}')
                        await ws.wait_closed()
                        statuses[query] = ws.close_code
                except InvalidStatus as exc:
                    statuses[query] = (exc.response.status_code, exc.response.headers.get("dg-error", ""))
        finally:
            await standin.stop()
        return statuses, standin.streams

    statuses, streams = asyncio.run(main())
    for query in ("encoding=mulaw", "sample_rate=8000", "encoding=mulaw&sample_rate=0", "encoding=opus&sample_rate=48000"):
        assert statuses[query][0] == 400 and statuses[query][1].startswith("Bad Request"), (query, statuses[query])
    assert statuses["encoding=mulaw&sample_rate=8000"] == 1000
    [s] = streams
    assert bytes(s["raw"]) == bytes(range(256)) and s["audio_s"] == pytest.approx(256 / 8000)


def test_only_a_provider_that_takes_mulaw_as_it_is_asks_for_it(nats_url, silero):
    from parley import subjects

    async def claimed(provider: str) -> str:
        async with Rig(nats_url, silero, provider) as r:
            offer = contract.AsrClaim(session=f"nat-{provider}", native="mulaw/8000")
            reply = await r.nc.request(subjects.ASR_CLAIM, contract.encode(offer), timeout=3)
            other = contract.AsrClaim(session=f"nat2-{provider}", native="opus/48000")  # nobody takes this one
            reply2 = await r.nc.request(subjects.ASR_CLAIM, contract.encode(other), timeout=3)
            return contract.decode(reply.data, contract.AsrClaimed).native, contract.decode(reply2.data, contract.AsrClaimed).native

    assert asyncio.run(claimed("deepgram")) == ("mulaw/8000", "")
    assert asyncio.run(claimed("openai")) == ("", "")  # it hears a WAV of the utterance: 16 kHz PCM


async def stream_phone(nc, session: str, pcm16k: np.ndarray, *, speed: float = 2.0, lose: range = range(0)) -> bytes:
    """A phone call as the gateway sends it: per 20 ms, the carrier's μ-law on audio_native,
    then the same audio decoded and upsampled to 16 kHz on audio_in. The μ-law of the frames
    in ``lose`` is lost on the way (its sequence numbers go unseen). Returns the μ-law sent."""
    import time

    from parley import subjects
    from parley.audio import Resampler, pcm16_to_ulaw, ulaw_to_pcm16

    down = Resampler(16000, 8000)
    ulaw = pcm16_to_ulaw(down.process(pcm16k.astype("<i2").tobytes()) + down.flush())
    up = Resampler(8000, 16000)
    t0 = time.monotonic()
    for seq, i in enumerate(range(0, len(ulaw), 160)):
        frame = ulaw[i : i + 160]
        if seq not in lose:
            await nc.publish(subjects.audio_native(session), frame, headers=bus.audio_headers(seq, 8000, encoding="mulaw"))
        await nc.publish(subjects.audio_in(session), up.process(ulaw_to_pcm16(frame)), headers=bus.audio_headers(seq, 16000))
        delay = t0 + (i + 160) / 8000 / speed - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    await nc.flush()
    return ulaw


def test_deepgram_mulaw_stream_dropped_mid_utterance_whisper_hears_it_and_the_stream_comes_back_as_mulaw(nats_url, silero, speak):
    from parley import subjects

    async def main():
        async with Rig(nats_url, silero, "deepgram") as r:
            r.standin.faults.queue.append(Fault(drop_after=int(1.2 * 8000)))  # μ-law: a byte a sample; inside the first utterance
            ev = await Events.watch(r.nc, "dgm-1")
            reply = await r.nc.request(subjects.ASR_CLAIM, contract.encode(contract.AsrClaim(session="dgm-1", native="mulaw/8000")), timeout=3)
            assert contract.decode(reply.data, contract.AsrClaimed).native == "mulaw/8000"
            ulaw = await stream_phone(r.nc, "dgm-1", two_utterances(speak))
            await ev.finals("dgm-1", 2, timeout=20)
            await end(r.nc, "dgm-1")
            # (a first connection may time out on a loaded machine: then there is one stream more, with no audio)
            await ev.wait_for(lambda e: r.standin.streams[-1]["close"] == (1000, "") and r.standin.streams[-1]["raw"], timeout=10)
            await ev.wait_for(lambda e: usage(e.of("dgm-1")).get("deepgram", 0) >= sum(s["audio_s"] for s in r.standin.streams) - 0.05, timeout=10)
            return ev.of("dgm-1"), heard_streams(r.standin), ulaw

    events, streams, ulaw = asyncio.run(main())
    per_utterance_order(events)
    finals = [e.text for e in events if isinstance(e, contract.TranscriptFinal)]
    assert finals[0] == FALLBACK_WORDS and finals[1] in (FIRST, SECOND)  # the reopened stream heard the next one
    assert [(s["query"]["encoding"], s["query"]["sample_rate"]) for s in streams] == [("mulaw", "8000")] * 2
    assert streams[0]["close"] == "dropped"
    # Each stream got a stretch of the call's bytes unchanged; the second starts where the held audio began.
    first, second = bytes(streams[0]["raw"]), bytes(streams[1]["raw"])
    assert ulaw.startswith(first) and second in ulaw and ulaw.index(second) >= len(first) - 160
    # Billed: what was sent, in seconds (a μ-law byte is 1/8000 s), not half or twice that (what was
    # in flight when the first stream dropped is billed but never arrived).
    assert usage(events)["deepgram"] == pytest.approx((len(first) + len(second)) / 8000, abs=0.2)


def test_deepgram_mulaw_a_lost_piece_is_silence_at_the_provider_so_its_times_stay_the_sessions(nats_url, silero, speak):
    from parley import subjects
    from parley.audio import ulaw_to_pcm16
    from parley.standins.deepgram import FRAME_S, VOICED_RMS

    lost = range(5, 25)  # 0.4 s of the carrier's audio, before the first words

    async def main():
        async with Rig(nats_url, silero, "deepgram") as r:
            ev = await Events.watch(r.nc, "dgm-2")
            await r.nc.request(subjects.ASR_CLAIM, contract.encode(contract.AsrClaim(session="dgm-2", native="mulaw/8000")), timeout=3)
            ulaw = await stream_phone(r.nc, "dgm-2", two_utterances(speak), lose=lost)
            await ev.finals("dgm-2", 2, timeout=20)
            return ev.of("dgm-2"), heard_streams(r.standin), ulaw, r.worker.stats

    events, streams, ulaw, stats = asyncio.run(main())
    assert [e.text for e in events if isinstance(e, contract.TranscriptFinal)] == [FIRST, SECOND]
    assert stats["native_seq_gaps"] == 1
    [s] = streams
    raw = bytes(s["raw"])
    at, n = lost.start * 160, len(lost) * 160
    # Silence where the lost piece was (up to the session's clock: the 16 kHz PCM, which the
    # upsampler holds a few samples back), then the call again, shifted by less than a frame.
    assert raw[:at] == ulaw[:at] and raw[at : at + n - 160] == b"\xff" * (n - 160)
    later = at + n + 800
    shift = [d for d in range(-160, 161) if raw[later : later + 1600] == ulaw[later - d : later - d + 1600]]
    assert shift, "the call does not go on within a frame of where it was"
    # So the provider hears each utterance where it is in the call: its clock is the session's.
    pcm = np.frombuffer(ulaw_to_pcm16(ulaw), "<i2").astype(np.float32)
    frame = int(FRAME_S * 8000)
    voiced = [i for i in range(0, len(pcm) - frame, frame) if np.sqrt(np.mean(pcm[i : i + frame] ** 2)) > VOICED_RMS]
    assert abs(s["speech_started"][0] - voiced[0] / 8000) <= 0.045, (s["speech_started"], voiced[0] / 8000)


def test_deepgram_words_of_one_result_go_to_the_utterance_each_was_said_in():
    """The caller went on after a short pause ("Sorry, stop. Can I book Friday?"): the
    Finalize at the first stop flushed audio already past it, so one finalized result holds
    the first words of the next utterance too. Each word goes where its own times put it."""
    from parley_asr.providers.deepgram import DeepgramListener

    def results(start: float, duration: float, words: list[tuple[str, float, float]]) -> dict:
        return {"type": "Results", "start": start, "duration": duration, "is_final": True, "from_finalize": True,
                "channel": {"alternatives": [{"transcript": " ".join(w for w, _, _ in words),
                                              "words": [{"word": w.lower().strip(",."), "punctuated_word": w, "start": a, "end": b} for w, a, b in words]}]}}  # fmt: skip

    def at(seconds: float) -> int:
        return int(seconds * 16000)

    async def main():
        listener = DeepgramListener(Deepgram(base="ws://127.0.0.1:9", api_key=DKEY, model="nova-3"), "words-1")  # never connects
        listener.connected = True
        listener._on_message(results(0.4, 1.5, [("Sorry,", 0.5, 0.8), ("stop.", 0.85, 1.2), ("Can", 1.6, 1.75), ("I", 1.75, 1.85)]))
        first = await listener.final(np.zeros(0, np.int16), at(0.45), at(1.45))  # the VAD: 0.45-1.45 s, then 0.2 s of pause
        listener._on_message(results(1.9, 1.2, [("book", 1.95, 2.2), ("Friday?", 2.25, 2.7)]))
        second = await listener.final(np.zeros(0, np.int16), at(1.55), at(3.0))
        return first, second, listener.finals

    first, second, left = asyncio.run(main())
    assert first == "Sorry, stop." and second == "Can I book Friday?" and left == []


def test_deepgram_a_late_answer_to_an_earlier_finalize_does_not_end_the_wait_for_this_utterances_words():
    from parley_asr.providers.deepgram import DeepgramListener

    def results(start: float, end: float, words: list[tuple[str, float, float]], *, from_finalize: bool, speech_final: bool = False) -> dict:
        return {"type": "Results", "start": start, "duration": end - start, "is_final": True, "from_finalize": from_finalize, "speech_final": speech_final,
                "channel": {"alternatives": [{"transcript": " ".join(w for w, _, _ in words),
                                              "words": [{"word": w, "punctuated_word": w, "start": a, "end": b} for w, a, b in words]}]}}  # fmt: skip

    def at(seconds: float) -> int:
        return int(seconds * 16000)

    async def main():
        listener = DeepgramListener(Deepgram(base="ws://127.0.0.1:9", api_key=DKEY, model="nova-3"), "late-1")
        listener.connected = True
        # Utterance 0 (0.5-1.5 s) is answered by Deepgram's own endpointing before its Finalize's answer.
        listener._on_message(results(0.4, 1.6, [("Hello", 0.5, 0.9), ("there.", 0.9, 1.3)], from_finalize=False, speech_final=True))
        first = await listener.final(np.zeros(0, np.int16), at(0.45), at(1.5))
        second = asyncio.create_task(listener.final(np.zeros(0, np.int16), at(1.9), at(3.0)))
        await asyncio.sleep(0.05)
        listener._on_message(results(1.6, 1.7, [], from_finalize=True))  # the late answer to utterance 0's Finalize: nothing new
        await asyncio.sleep(0.05)
        waited = not second.done()
        listener._on_message(results(1.7, 3.1, [("Book", 2.0, 2.3), ("Friday.", 2.3, 2.8)], from_finalize=True))
        return first, await second, waited

    first, second, waited = asyncio.run(main())
    assert first == "Hello there." and waited and second == "Book Friday."


# ------------------------------------------------------------------ OpenAI


def test_openai_transcription_words_behind_the_same_events(nats_url, silero, speak):
    async def main():
        async with Rig(nats_url, silero, "openai") as r:
            r.standin.hear = lambda pcm, rate, _it=iter([FIRST, SECOND] + [SECOND] * 100): FIRST
            ev = await Events.watch(r.nc, "oa-1")
            await claim(r.nc, "oa-1")
            await stream(r.nc, "oa-1", speak(FIRST, lead_s=0.6, trail_s=1.2), speed=2.0, chunk=320)
            await ev.finals("oa-1", 1, timeout=20)
            await ev.wait_for(lambda e: usage(e.of("oa-1")), timeout=5)
            return ev.of("oa-1"), r.standin.requests, r.standin.audio_seconds

    events, requests, audio_seconds = asyncio.run(main())
    per_utterance_order(events)
    [final] = [e for e in events if isinstance(e, contract.TranscriptFinal)]
    assert final.text == FIRST
    assert any(isinstance(e, contract.TranscriptPartial) for e in events)
    assert all(r["model"] == "gpt-4o-mini-transcribe" and r["response_format"] == "json" for r in requests)
    assert usage(events)["openai"] == pytest.approx(audio_seconds, abs=0.05)  # partials and the final: every second sent


def test_openai_rate_limit_falls_back_and_the_next_utterance_skips_it_while_it_waits(nats_url, silero, speak):
    async def main():
        async with Rig(nats_url, silero, "openai") as r:
            r.standin.faults.always = Fault(status=429, retry_after=30)
            ev = await Events.watch(r.nc, "oa-2")
            await claim(r.nc, "oa-2")
            await stream(r.nc, "oa-2", two_utterances(speak), speed=2.0, chunk=320)
            await ev.finals("oa-2", 2, timeout=20)
            return ev.of("oa-2"), r.worker.stats, len(r.standin.faults.taken)

    events, stats, asked = asyncio.run(main())
    per_utterance_order(events)
    assert [e.text for e in events if isinstance(e, contract.TranscriptFinal)] == [FALLBACK_WORDS, FALLBACK_WORDS]
    fails = [e for e in events if isinstance(e, contract.ProviderFailed)]
    # A partial's 429 already opens the breaker, so the final may go straight to Whisper
    # ("skipped while it recovers"); either way the session hears why, once per refusal.
    assert fails and all("429" in f.error for f in fails), fails
    # Once refused, the provider waits out its Retry-After: the next utterance does not ask it
    # (a request already in flight when the first 429 came back may still have been refused).
    assert stats["provider_skipped"] >= 1 or len(fails) == 2
    assert stats["fallback_finals"] == 2
    del asked


# ------------------------------------------------------------------ per session


async def claim_with(nc, session: str, provider: str) -> None:
    from parley import subjects

    await nc.request(subjects.ASR_CLAIM, contract.encode(contract.AsrClaim(session=session, provider=provider)), timeout=3)


def test_a_session_may_keep_its_audio_here_or_ask_for_an_unconfigured_provider(nats_url, silero, speak):
    async def main():
        async with Rig(nats_url, silero, "deepgram") as r:
            ev = await Events.watch(r.nc, "ps-1", "ps-2")
            await claim_with(r.nc, "ps-1", "whisper")  # asr=whisper: Whisper hears it, no stream is opened
            await claim_with(r.nc, "ps-2", "openai")  # not configured here: Deepgram hears it, the session is told
            pcm = speak(FIRST, lead_s=0.6, trail_s=1.2)
            await asyncio.gather(stream(r.nc, "ps-1", pcm, speed=0, chunk=320), stream(r.nc, "ps-2", pcm, speed=0, chunk=320))
            await ev.finals("ps-1", 1, timeout=20)
            await ev.finals("ps-2", 1, timeout=20)
            return ev, len(r.standin.streams)

    ev, streams = asyncio.run(main())
    assert [e.text for e in ev.of("ps-1", contract.TranscriptFinal)] == [FALLBACK_WORDS] and not ev.of("ps-1", contract.ProviderFailed)
    assert [e.text for e in ev.of("ps-2", contract.TranscriptFinal)] == [FIRST]
    [f] = ev.of("ps-2", contract.ProviderFailed)
    assert f.provider == "openai" and f.fallback == "deepgram" and "not configured" in f.error
    assert streams == 1  # only ps-2 streamed to Deepgram
