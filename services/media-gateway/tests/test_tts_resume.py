"""A TTS worker given a chunk again (its first worker died mid-chunk) asks the
gateway where the call's audio of that chunk stopped (issue 10 point 4:
``subjects.tts_resume``), and sends only the pieces after it.

The gateway runs in-process on a real nats-server; the test plays two TTS
workers' audio (``Parley-Worker`` w1, then w2) and asks as w2 would."""

from __future__ import annotations

import asyncio

from parley import bus, contract, subjects

from test_webrtc_gateway import announce, gateway, tone, until
from test_ws_pcm import pcm_call

RATE = 16000
PIECE = RATE // 10 * 2  # 100 ms of PCM16


async def pieces(nc, session: str, run: int, chunk: int, pcm: bytes, worker: str, first: int, upto: int, last: bool = False) -> None:
    for i in range(first, upto):
        headers = bus.audio_headers(i, RATE, chunk=chunk, last=last and i == upto - 1, worker=worker)
        await nc.publish(subjects.tts_audio(session, run), pcm[i * PIECE : (i + 1) * PIECE], headers=headers)


async def ask(nc, session: str, run: int, chunk: int, worker: str) -> int:
    q = contract.TtsResume(session=session, run=run, chunk=chunk, worker=worker)
    reply = await nc.request(subjects.tts_resume(session), contract.encode(q), timeout=5)
    return contract.decode(reply.data, contract.TtsResumeAt).from_piece


def test_a_chunk_given_again_goes_on_from_the_piece_the_call_had_reached(nats_server):
    async def scenario():
        async with gateway(nats_server.url) as (base, state, nc, seen):
            async with pcm_call(base) as caller:
                s = caller.session
                pcm = tone(440, 1.5, RATE)  # 15 pieces
                await announce(nc, s, 1, [0, 1])
                await pieces(nc, s, 1, 0, pcm, "w1", 0, 8)  # w1 dies after piece 7
                await until(lambda: len(caller.frames) >= 5, what="the chunk playing")
                out = {"unheard": await ask(nc, s, 1, 1, "w2")}  # nothing of chunk 1 came: all of it
                out["resume"] = await ask(nc, s, 1, 0, "w2")
                out["again"] = await ask(nc, s, 1, 0, "w2")  # asked twice: the same answer
                await pieces(nc, s, 1, 0, pcm, "w1", 8, 9)  # a straggler of the first worker: dropped
                await pieces(nc, s, 1, 0, pcm, "w2", out["resume"], 15, last=True)
                await pieces(nc, s, 1, 1, pcm, "w2", 0, 2, last=True)
                await until(lambda: state["stats"].get("tts_chunk_redelivered") and caller.notices and
                            sum(len(f) for _, f in caller.frames) >= 17 * PIECE - 4 * 640, timeout=15, what="the rest played")  # fmt: skip
                await asyncio.sleep(0.5)
                out["heard"] = sum(len(f) for _, f in caller.frames)
                await until(lambda: state["stats"].get("tts_audio_other_worker"), what="the straggler counted")
                out["played"] = await ask(nc, s, 1, 0, "w3")  # heard whole: nothing of it
                out["stats"] = dict(state["stats"])
                return out

    out = asyncio.run(scenario())
    assert out["unheard"] == 0
    assert out["resume"] == 8 and out["again"] == 8
    assert out["played"] == contract.RESUME_NONE
    # Every piece heard once: 15 of chunk 0 (8 from w1, 7 from w2), 2 of chunk 1; nothing twice.
    assert abs(out["heard"] - 17 * PIECE) <= 2 * 640, out["heard"]
    assert out["stats"]["tts_chunk_redelivered"] == 1 and out["stats"].get("tts_audio_duplicate", 0) == 0
