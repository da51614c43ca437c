"""PCM pieces, the canned loop and its pacing, and the committed canned clip."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from parley_tts import audio
from parley_tts.adapters.canned import Canned, clip_bytes
from parley_tts.lanes import Job

pcm_bytes = st.integers(0, 5000).map(lambda n: bytes(range(256)) * (n // 128) + b"\x01\x02" * (n % 128))


@given(pcm_bytes, st.integers(1, 700))
def test_split_keeps_every_byte_in_whole_samples_of_bounded_size(pcm, max_samples):
    pieces = audio.split(pcm, max_samples)
    assert b"".join(pieces) == pcm
    assert all(0 < len(p) <= 2 * max_samples and len(p) % 2 == 0 for p in pieces)
    assert all(len(p) == 2 * max_samples for p in pieces[:-1])


def _pcm(samples: list[int]) -> bytes:
    return b"".join(x.to_bytes(2, "little", signed=True) for x in samples)


@given(st.lists(st.integers(-100, 100), max_size=2000), st.lists(st.integers(-32768, 32767), max_size=300), st.integers(8000, 48000))
def test_quiet_lead_cuts_only_quiet_and_keeps_the_onset(quiet, rest, rate):
    """What ``quiet_lead`` cuts is quiet (no sample beyond the floor), and it
    stops keep_ms (10 ms) short of the first loud sample; all quiet: nothing."""
    pcm = _pcm(quiet + rest)
    cut = audio.quiet_lead(pcm, rate, floor=100, keep_ms=10.0)
    assert cut % 2 == 0 and 0 <= cut <= len(pcm)
    first_loud = next((i for i, x in enumerate(quiet + rest) if abs(x) > 100), None)
    if first_loud is None:
        assert cut == 0
    else:
        assert cut // 2 == max(0, first_loud - audio.samples_for_ms(10.0, rate))


def test_quiet_lead_of_piper_like_audio():
    rate = 22050
    lead = [3, -2, 5] * 300  # 41 ms of near-silence
    pcm = _pcm(lead + [4000, -4000] * 100)
    cut = audio.quiet_lead(pcm, rate)
    assert cut == 2 * (900 - 220)  # all but the last 10 ms of the quiet
    assert audio.quiet_lead(_pcm(lead), rate) == 0


@given(st.integers(1, 300), st.integers(0, 1000), st.integers(0, 2000))
def test_looped_repeats_the_clip_from_any_start(n, start, count):
    clip = b"".join(i.to_bytes(2, "little") for i in range(n))
    out = audio.looped(clip, start, count)
    assert len(out) == 2 * count
    samples = [int.from_bytes(out[i : i + 2], "little") for i in range(0, len(out), 2)]
    assert samples == [(start + i) % n for i in range(count)]


def test_canned_length_is_65_ms_a_character_and_at_least_300_ms():
    assert audio.canned_samples("x" * 10, 22050, 65, 300) == audio.samples_for_ms(650, 22050)
    assert audio.canned_samples("Hi.", 22050, 65, 300) == audio.samples_for_ms(300, 22050)
    assert audio.canned_samples("  padded  ", 1000, 65, 0) == 65 * 6


def test_pieces_are_due_lead_ahead_then_at_real_time():
    due = [audio.piece_due(i, 200, 300) for i in range(6)]
    assert due == [0.0, 0.0, 0.1, 0.3, 0.5, 0.7]


def test_the_committed_clip_is_short_16_bit_mono_speech():
    data = clip_bytes()
    assert len(data) < 200_000
    pcm, rate = audio.read_wav(data)
    assert rate == 22050 and 1000 < audio.ms_of(len(pcm), rate) < 4500
    samples = [int.from_bytes(pcm[i : i + 2], "little", signed=True) for i in range(0, len(pcm), 2)]
    assert max(abs(s) for s in samples) > 8000  # speech, not silence


def test_canned_voice_waits_only_for_a_runs_first_chunk():
    async def main():
        voice = Canned(b"\x10\x00" * 1000, 10000, first_audio_ms=150, ms_per_char=10, min_ms=0, lead_ms=10_000, piece_ms=20)
        loop = asyncio.get_running_loop()
        out = {}
        for chunk in (0, 1):
            t = loop.time()
            pieces = [p async for p in voice.stream(Job("s", 1, chunk, "x" * 10, received=t))]
            out[chunk] = (pieces, loop.time() - t)
        return out

    out = asyncio.run(main())
    for chunk, (pieces, _) in out.items():
        assert b"".join(pieces) == b"\x10\x00" * 1000  # 100 ms at 10 kHz
        assert [len(p) for p in pieces] == [400] * 5  # 20 ms pieces
    assert out[0][1] >= 0.150
    assert out[1][1] < out[0][1]
