"""Cloud voices against local stand-ins of their vendors' documented wire
formats (parley.standins), on a real nats-server: Cartesia's WebSocket with
contexts and OpenAI's streamed /audio/speech.

What must hold for each provider: the audio streams as it comes, at the
provider's rate; a refused key, a rate limit, a socket dropped mid-chunk and
a first byte that does not come are each loud (logged, counted,
ProviderFailed on the session) and lose nothing (the fallback voice says
what the provider did not, within the same chunk, and the chunk ends with
TTSChunkDone); a cancelled run is stopped at the provider; the characters
sent are reported as Usage. The fallback here is the canned voice (no model,
fast); the service loads Piper in its place.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from tts_harness import Seen, cancel, settled, synthesize, until
from tts_harness import check_events as _check_events

from parley import bus, contract
from parley.standins import Fault
from parley.standins.cartesia import Cartesia as CartesiaStandIn
from parley.standins.openai_audio import OpenAIAudio
from parley_tts.adapters.canned import Canned
from parley_tts.adapters.cartesia import Cartesia, spoken_chars
from parley_tts.adapters.elevenlabs import ElevenLabs
from parley_tts.adapters.openai_speech import OpenAISpeech
from parley.standins.elevenlabs import ElevenLabs as ElevenLabsStandIn
from parley_tts.settings import Settings
from parley_tts.worker import Worker

TEXT = "Your appointment is on Friday at ten in the morning."
KEY = "test-cartesia-key-0123456789"
OKEY = "sk-test-openai-audio-key-0123"


def run(coro):
    return asyncio.run(coro)


class Rig:
    """A stand-in, a cloud voice on it, a worker with the canned fallback, a client."""

    def __init__(self, nats_url: str, provider: str, *, key: str | None = None, fallback: bool = True, first_audio_s: float = 3.0):
        self.nats_url, self.provider, self.key, self.fallback, self.first_audio_s = nats_url, provider, key, fallback, first_audio_s

    async def __aenter__(self) -> "Rig":
        if self.provider == "cartesia":
            self.standin = await CartesiaStandIn(key=KEY).start()
            self.voice = Cartesia(base=self.standin.base, api_key=self.key or KEY, model="sonic-2", voice="voice-1",
                                  first_audio_s=self.first_audio_s)  # fmt: skip
            await self.voice.start()
        elif self.provider == "elevenlabs":
            self.standin = await ElevenLabsStandIn(key=KEY).start()
            self.voice = ElevenLabs(base=self.standin.base, api_key=self.key or KEY, model="eleven_flash_v2_5", voice="voice-1",
                                    first_audio_s=self.first_audio_s)  # fmt: skip
            await self.voice.start()
        else:
            self.standin = await OpenAIAudio(key=OKEY).start()
            self.voice = OpenAISpeech(base=self.standin.base, api_key=self.key or OKEY, model="gpt-4o-mini-tts", voice="alloy",
                                      first_audio_s=self.first_audio_s)  # fmt: skip
        self.wnc = await bus.connect(self.nats_url)
        self.nc = await bus.connect(self.nats_url)
        fb = Canned.load(first_audio_ms=0, lead_ms=60_000) if self.fallback else None
        self.worker = Worker(self.wnc, Settings(nats_url=self.nats_url), self.voice, fb)
        await self.worker.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.worker.stop()
        await self.voice.aclose()
        await self.standin.stop()
        await self.wnc.close()
        await self.nc.close()


def check_events(events: list, chunks: list[int]) -> None:
    """Per chunk: one TTSChunkStarted, then one TTSChunkDone (provider notices aside)."""
    _check_events([e for e in events if isinstance(e, (contract.TTSChunkStarted, contract.TTSChunkDone, contract.TTSError))], chunks)


def chunk_ok(seen: Seen, session: str, run: int, chunk: int) -> list:
    """The chunk's audio: seq 0, 1, 2... with the last (only) flagged; returns it."""
    audio = seen.audio(session, run, chunk)
    assert [a.seq for a in audio] == list(range(len(audio)))
    assert [a.last for a in audio] == [False] * (len(audio) - 1) + [True]
    assert all(len(a.data) % 2 == 0 for a in audio)
    return audio


def failures(seen: Seen, session: str) -> list[contract.ProviderFailed]:
    return seen.events(session, contract.ProviderFailed)


def usage(seen: Seen, session: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for u in seen.events(session, contract.Usage):
        assert u.service == "tts" and u.unit == "characters"
        out[u.provider] = out.get(u.provider, 0) + u.amount
    return out


# ------------------------------------------------------------------ Cartesia


def test_cartesia_streams_a_chunk_per_context_at_its_rate_and_reports_usage(nats_url):
    async def main():
        async with Rig(nats_url, "cartesia") as r:
            seen = await Seen.watch(r.nc, "ca-1")
            await synthesize(r.nc, "ca-1", 1, 0, TEXT)
            await synthesize(r.nc, "ca-1", 1, 1, "See you then.")
            await seen.chunks_done("ca-1", 1, 2)
            await seen.wait_for(lambda s: s.events("ca-1", contract.Usage))
            return seen, r.standin.requests, r.standin.connections

    seen, requests, connections = run(main())
    for chunk in (0, 1):
        audio = chunk_ok(seen, "ca-1", 1, chunk)
        assert {a.rate for a in audio} == {24000}
        assert sum(len(a.data) for a in audio) > 24000 * 2 * 0.3  # speech, not an empty chunk
    check_events(seen.events("ca-1"), [0, 1])
    assert not failures(seen, "ca-1")
    assert usage(seen, "ca-1") == {"cartesia": len(TEXT) + len("See you then.")}
    assert connections == 1  # one socket, a context per chunk
    first = requests[0]
    assert first["transcript"] == TEXT and first["continue"] is False and first["model_id"] == "sonic-2"
    assert first["voice"] == {"mode": "id", "id": "voice-1"}
    assert first["output_format"] == {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 24000}
    assert requests[0]["context_id"] != requests[1]["context_id"]


def test_cartesia_bad_key_is_loud_and_the_fallback_speaks(nats_url, caplog):
    async def main():
        async with Rig(nats_url, "cartesia", key="wrong-key-abcdefgh") as r:
            seen = await Seen.watch(r.nc, "ca-2", "ca-2b")
            await synthesize(r.nc, "ca-2", 1, 0, TEXT)
            await synthesize(r.nc, "ca-2", 1, 1, "See you then.")
            await seen.chunks_done("ca-2", 1, 2)
            await synthesize(r.nc, "ca-2b", 1, 0, "Hello there.")  # another session, while the breaker is open
            await seen.chunks_done("ca-2b", 1, 1)
            await seen.wait_for(lambda s: {"cartesia", "canned"} <= set(usage(s, "ca-2")) and s.events("ca-2b", contract.Usage))
            return seen, r.worker.stats, r.standin.refused

    with caplog.at_level(logging.INFO):
        seen, stats, refused = run(main())
    assert refused == [401, 401]  # at start, and for the first chunk; then not asked again on every chunk
    for session, chunks in (("ca-2", [0, 1]), ("ca-2b", [0])):
        check_events(seen.events(session), chunks)  # every chunk done, none failed
        for c in chunks:
            assert {a.rate for a in chunk_ok(seen, session, 1, c)} == {22050}  # the fallback's audio
        [f] = failures(seen, session)  # told once per session
        assert f.service == "tts" and f.provider == "cartesia" and f.fallback == "canned"
    assert "auth" in failures(seen, "ca-2")[0].error and "401" in failures(seen, "ca-2")[0].error
    assert "skipped" in failures(seen, "ca-2b")[0].error
    assert stats["provider_failures"] == 1 and stats["provider_skipped"] == 2 and stats["chunks_failed"] == 0
    assert usage(seen, "ca-2") == {"cartesia": len(TEXT), "canned": len(TEXT) + len("See you then.")}
    assert any("tts provider failed" in r.getMessage() for r in caplog.records)
    assert "wrong-key-abcdefgh" not in caplog.text and KEY not in caplog.text


def test_cartesia_socket_dropped_mid_chunk_the_fallback_says_only_the_rest(nats_url):
    async def main():
        async with Rig(nats_url, "cartesia") as r:
            r.standin.faults.queue.append(Fault(drop_after=24000 * 2 * 1))  # about a second of the chunk's audio
            seen = await Seen.watch(r.nc, "ca-3")
            await synthesize(r.nc, "ca-3", 1, 0, TEXT)
            await seen.chunks_done("ca-3", 1, 1)
            await seen.wait_for(lambda s: "canned" in usage(s, "ca-3"))
            await synthesize(r.nc, "ca-3", 1, 1, "See you then.")  # the socket is back for the next chunk
            await seen.chunks_done("ca-3", 1, 2)
            return seen, r.standin.connections

    seen, connections = run(main())
    audio = chunk_ok(seen, "ca-3", 1, 0)
    rates = [a.rate for a in audio if a.data]
    assert rates[0] == 24000 and rates[-1] == 22050  # the provider, then the fallback, in one chunk
    assert rates == sorted(rates, reverse=True)  # one switch, never back
    check_events(seen.events("ca-3"), [0, 1])
    [f] = failures(seen, "ca-3")
    assert f.fallback == "canned" and f.run == 1 and f.chunk == 0 and "dropped" in f.error
    said_by_fallback = usage(seen, "ca-3")["canned"]
    assert 0 < said_by_fallback < len(TEXT)  # only what the provider had not delivered
    assert {a.rate for a in chunk_ok(seen, "ca-3", 1, 1)} == {24000}  # reconnected: the provider speaks again
    assert connections == 2


def test_cartesia_slow_first_byte_times_out_is_cancelled_at_the_provider_and_falls_back(nats_url):
    async def main():
        async with Rig(nats_url, "cartesia", first_audio_s=0.3) as r:
            r.standin.faults.queue.append(Fault(delay_first=3.0))
            seen = await Seen.watch(r.nc, "ca-4")
            await synthesize(r.nc, "ca-4", 1, 0, TEXT)
            await seen.chunks_done("ca-4", 1, 1)
            await until(lambda: r.standin.cancelled)
            return seen, r.standin

    seen, standin = run(main())
    check_events(seen.events("ca-4"), [0])
    [f] = failures(seen, "ca-4")
    assert "timeout" in f.error and f.fallback == "canned"
    assert {a.rate for a in chunk_ok(seen, "ca-4", 1, 0)} == {22050}
    assert standin.cancelled == [standin.requests[0]["context_id"]]


def test_cartesia_in_band_rate_limit_falls_back(nats_url):
    async def main():
        async with Rig(nats_url, "cartesia") as r:
            r.standin.faults.queue.append(Fault(in_band=429))
            seen = await Seen.watch(r.nc, "ca-5")
            await synthesize(r.nc, "ca-5", 1, 0, TEXT)
            await seen.chunks_done("ca-5", 1, 1)
            return seen

    seen = run(main())
    check_events(seen.events("ca-5"), [0])
    [f] = failures(seen, "ca-5")
    assert f.error.startswith("rate_limit") and "429" in f.error


def test_cartesia_without_fallback_a_failure_is_a_tts_error(nats_url):
    async def main():
        async with Rig(nats_url, "cartesia", key="wrong-key-abcdefgh", fallback=False) as r:
            seen = await Seen.watch(r.nc, "ca-6")
            await synthesize(r.nc, "ca-6", 1, 0, TEXT)
            await seen.chunks_done("ca-6", 1, 1)
            return seen

    seen = run(main())
    [err] = seen.events("ca-6", contract.TTSError)
    assert "401" in err.message
    [f] = failures(seen, "ca-6")
    assert f.fallback == ""
    assert chunk_ok(seen, "ca-6", 1, 0)[-1].last  # the chunk still ends for the gateway


def test_cartesia_cancelled_run_is_cancelled_at_the_provider_and_nothing_more_leaves(nats_url):
    async def main():
        async with Rig(nats_url, "cartesia") as r:
            seen = await Seen.watch(r.nc, "ca-7")
            long = " ".join([TEXT] * 4)
            await synthesize(r.nc, "ca-7", 2, 0, long)
            await seen.wait_for(lambda s: len(s.audio("ca-7", 2)) >= 2)
            await cancel(r.nc, "ca-7", 2)
            await until(lambda: r.standin.cancelled)
            await asyncio.sleep(0.3)
            await settled(r.worker, r.nc)
            n = len(seen.audio("ca-7", 2))
            await asyncio.sleep(0.5)
            return seen, r.standin, n

    seen, standin, n = run(main())
    assert standin.cancelled == [standin.requests[0]["context_id"]]
    assert standin.finished == []  # the provider stopped generating it
    assert len(seen.audio("ca-7", 2)) == n
    assert not seen.events("ca-7", contract.TTSChunkDone) and not seen.events("ca-7", contract.TTSError)
    assert usage(seen, "ca-7") == {"cartesia": len(" ".join([TEXT] * 4))}  # billed even when cancelled


def test_spoken_chars_follows_the_words_in_order():
    text = "Your appointment is on Friday, at ten."
    assert spoken_chars(text, []) == 0
    assert text[: spoken_chars(text, ["Your", "appointment"])] == "Your appointment"
    assert text[spoken_chars(text, ["Your", "appointment", "is", "on", "Friday"]) :] == ", at ten."
    assert spoken_chars(text, ["Your", "zebra", "is"]) == len("Your")  # stops at a word it cannot place


# ------------------------------------------------------------------ OpenAI


def test_openai_speech_streams_pcm_at_24k(nats_url):
    async def main():
        async with Rig(nats_url, "openai") as r:
            seen = await Seen.watch(r.nc, "oa-1")
            await synthesize(r.nc, "oa-1", 1, 0, TEXT)
            await seen.chunks_done("oa-1", 1, 1)
            await seen.wait_for(lambda s: s.events("oa-1", contract.Usage))
            return seen, r.standin.requests

    seen, requests = run(main())
    assert {a.rate for a in chunk_ok(seen, "oa-1", 1, 0)} == {24000}
    check_events(seen.events("oa-1"), [0])
    assert requests == [{"model": "gpt-4o-mini-tts", "input": TEXT, "voice": "alloy", "response_format": "pcm"}]
    assert usage(seen, "oa-1") == {"openai": len(TEXT)}


def test_openai_speech_cancelled_run_closes_its_stream_at_the_provider(nats_url):
    """A run cancelled mid-chunk: the worker closes the HTTP response, and the stand-in sees
    its client go away before the body's end (the server stops making that audio)."""

    async def main():
        async with Rig(nats_url, "openai") as r:
            seen = await Seen.watch(r.nc, "oa-3")
            await synthesize(r.nc, "oa-3", 2, 0, " ".join([TEXT] * 4))
            await seen.wait_for(lambda s: len(s.audio("oa-3", 2)) >= 2)
            await cancel(r.nc, "oa-3", 2)
            await until(lambda: r.standin.speeches and r.standin.speeches[0]["end"] is not None)
            await settled(r.worker, r.nc)
            n = len(seen.audio("oa-3", 2))
            await asyncio.sleep(0.5)
            return seen, r.standin.speeches, n

    seen, speeches, n = run(main())
    [s] = speeches
    assert s["end"] == "client closed" and 0 < s["sent"] < s["total"], s  # stopped at the provider, mid-body
    assert len(seen.audio("oa-3", 2)) == n  # and nothing more of the run left the worker
    assert all(a.rate == 24000 for a in seen.audio("oa-3", 2))
    assert not seen.events("oa-3", contract.TTSChunkDone) and not seen.events("oa-3", contract.TTSError)
    assert not failures(seen, "oa-3")  # a cancel is not a provider failure: no fallback speaks


@pytest.mark.parametrize(
    "fault, kind",
    [
        (Fault(status=401), "auth"),
        (Fault(status=429, retry_after=7), "rate_limit"),
        (Fault(status=500), "refused"),
        (Fault(delay_first=3.0), "timeout"),
        (Fault(drop_after=24000), "dropped"),
    ],
    ids=["bad-key", "rate-limit", "server-error", "slow-first-byte", "dropped-mid-body"],
)
def test_openai_speech_failures_fall_back_loudly(nats_url, fault, kind):
    async def main():
        async with Rig(nats_url, "openai", first_audio_s=0.4) as r:
            r.standin.faults.queue.append(fault)
            seen = await Seen.watch(r.nc, "oa-2")
            await synthesize(r.nc, "oa-2", 1, 0, TEXT)
            await seen.chunks_done("oa-2", 1, 1)
            return seen, r.worker.breakers["openai"]

    seen, breaker = run(main())
    check_events(seen.events("oa-2"), [0])
    [f] = failures(seen, "oa-2")
    assert f.error.startswith(kind) and f.fallback == "canned"
    rates = [a.rate for a in chunk_ok(seen, "oa-2", 1, 0) if a.data]
    assert rates[-1] == 22050
    if kind == "dropped":
        assert rates[0] == 24000 and "said again from its start" in f.error  # no word timing: the whole chunk again
    if kind == "rate_limit":
        assert breaker.open_until > 0 and breaker.failures == 1  # waits for Retry-After


# ------------------------------------------------------------------ ElevenLabs


def test_elevenlabs_multi_context_streams_at_its_rate_and_opens_a_second_socket_past_five_contexts(nats_url):
    async def main():
        async with Rig(nats_url, "elevenlabs") as r:
            sessions = [f"el-1-{i}" for i in range(6)]
            seen = await Seen.watch(r.nc, *sessions)
            for s in sessions:  # six chunks at once: five contexts per socket at most
                await synthesize(r.nc, s, 1, 0, TEXT)
            for s in sessions:
                await seen.chunks_done(s, 1, 1)
            return seen, r.standin.connections, r.standin.closed_contexts, r.standin.finished

    seen, connections, closed, finished = run(main())
    for i in range(6):
        assert {a.rate for a in chunk_ok(seen, f"el-1-{i}", 1, 0)} == {24000}
        check_events(seen.events(f"el-1-{i}"), [0])
        assert not failures(seen, f"el-1-{i}")
    assert len(connections) == 2
    assert connections[0]["voice"] == "voice-1" and connections[0]["output_format"] == "pcm_24000"
    assert connections[0]["model_id"] == "eleven_flash_v2_5" and connections[0]["sync_alignment"] == "true"
    assert sorted(closed) == sorted(finished)  # every context closed once its audio was complete


def test_elevenlabs_socket_dropped_mid_chunk_the_fallback_says_only_the_rest(nats_url):
    async def main():
        async with Rig(nats_url, "elevenlabs") as r:
            r.standin.faults.queue.append(Fault(drop_after=24000 * 2 * 1))
            seen = await Seen.watch(r.nc, "el-2")
            await synthesize(r.nc, "el-2", 1, 0, TEXT)
            await seen.chunks_done("el-2", 1, 1)
            await seen.wait_for(lambda s: "canned" in usage(s, "el-2"))
            return seen

    seen = run(main())
    rates = [a.rate for a in chunk_ok(seen, "el-2", 1, 0) if a.data]
    assert rates[0] == 24000 and rates[-1] == 22050 and rates == sorted(rates, reverse=True)
    [f] = failures(seen, "el-2")
    assert f.provider == "elevenlabs" and f.fallback == "canned" and "dropped" in f.error
    assert 0 < usage(seen, "el-2")["canned"] < len(TEXT)  # from the alignment: only what was not delivered


def test_elevenlabs_cancelled_run_closes_its_context_at_the_provider(nats_url):
    async def main():
        async with Rig(nats_url, "elevenlabs") as r:
            seen = await Seen.watch(r.nc, "el-3")
            await synthesize(r.nc, "el-3", 4, 0, " ".join([TEXT] * 4))
            await seen.wait_for(lambda s: len(s.audio("el-3", 4)) >= 2)
            await cancel(r.nc, "el-3", 4)
            await until(lambda: r.standin.closed_contexts)
            await asyncio.sleep(0.5)
            return seen, r.standin

    seen, standin = run(main())
    assert standin.finished == [] and len(standin.closed_contexts) == 1
    assert not seen.events("el-3", contract.TTSChunkDone)


def test_elevenlabs_bad_key_falls_back(nats_url):
    async def main():
        async with Rig(nats_url, "elevenlabs", key="wrong-key-abcdefgh") as r:
            seen = await Seen.watch(r.nc, "el-4")
            await synthesize(r.nc, "el-4", 1, 0, TEXT)
            await seen.chunks_done("el-4", 1, 1)
            return seen

    seen = run(main())
    check_events(seen.events("el-4"), [0])
    [f] = failures(seen, "el-4")
    assert f.error.startswith("auth") and "401" in f.error


# ------------------------------------------------------------------ per session


async def synthesize_with(nc, session: str, run: int, chunk: int, text: str, provider: str) -> None:
    from parley import subjects

    await nc.publish(subjects.TTS_REQUEST, contract.encode(contract.Synthesize(session=session, run=run, chunk=chunk, text=text, provider=provider)))
    await nc.flush()


def test_a_session_may_choose_among_the_configured_voices_only(nats_url):
    async def main():
        async with Rig(nats_url, "cartesia") as r:
            seen = await Seen.watch(r.nc, "ps-1", "ps-2")
            await synthesize_with(r.nc, "ps-1", 1, 0, TEXT, "canned")  # the embedded voice: the cloud is never asked
            await synthesize_with(r.nc, "ps-2", 1, 0, TEXT, "openai")  # not configured here: the worker's own, and the session is told
            await seen.chunks_done("ps-1", 1, 1)
            await seen.chunks_done("ps-2", 1, 1)
            return seen, [q["context_id"] for q in r.standin.requests]

    seen, contexts = run(main())
    assert {a.rate for a in chunk_ok(seen, "ps-1", 1, 0)} == {22050} and not failures(seen, "ps-1")
    assert not [c for c in contexts if c.startswith("ps-1-")]
    assert {a.rate for a in chunk_ok(seen, "ps-2", 1, 0)} == {24000}
    [f] = failures(seen, "ps-2")
    assert f.provider == "openai" and f.fallback == "cartesia" and "not configured" in f.error
