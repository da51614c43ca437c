"""The WebRTC transport's pure parts: offer validation, data-channel messages,
frame conversion, and the outbound track's pacing and framing."""

from __future__ import annotations

import asyncio
import json
import time

import av
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from parley_gateway import webrtc
from parley_gateway.webrtc import CallTrack, OfferError, channel_request, check_audio, frame_to_mono, parse_offer

AUDIO_OFFER = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na={dir}\r\na=rtpmap:111 opus/48000/2\r\n"


@pytest.mark.parametrize(
    "body, error",
    [
        ([], "JSON object"),
        ("v=0", "JSON object"),
        ({"sdp": "v=0\r\n"}, '"type" must be "offer"'),
        ({"sdp": "v=0\r\n", "type": "answer"}, '"type" must be "offer"'),
        ({"type": "offer"}, "non-empty string"),
        ({"sdp": "  ", "type": "offer"}, "non-empty string"),
        ({"sdp": 5, "type": "offer"}, "non-empty string"),
        ({"sdp": "hello", "type": "offer"}, "v=0"),
        ({"sdp": "v=0\r\n" + "a=x\r\n" * 20000, "type": "offer"}, "too large"),
        ({"sdp": "v=0\r\n", "type": "offer", "params": ["a"]}, "object of strings"),
        ({"sdp": "v=0\r\n", "type": "offer", "params": {"a": 1}}, "object of strings"),
    ],
)
def test_bad_offer_bodies_say_what_is_wrong(body, error):
    with pytest.raises(OfferError, match=error):
        parse_offer(body)


def test_a_good_offer_body_parses():
    assert parse_offer({"sdp": "v=0\r\n", "type": "offer"}) == ("v=0\r\n", {})
    assert parse_offer({"sdp": "v=0\r\n", "type": "offer", "params": None}) == ("v=0\r\n", {})
    assert parse_offer({"sdp": "v=0\r\n", "type": "offer", "params": {"persona": "x"}}) == ("v=0\r\n", {"persona": "x"})


@pytest.mark.parametrize("direction, ok", [("sendrecv", True), ("sendonly", True), ("recvonly", False), ("inactive", False)])
def test_the_offer_must_send_audio(direction, ok):
    sdp = AUDIO_OFFER.format(dir=direction)
    if ok:
        check_audio(sdp)
    else:
        with pytest.raises(OfferError, match="does not send"):
            check_audio(sdp)


def test_an_offer_without_audio_is_refused():
    with pytest.raises(OfferError, match="no audio"):
        check_audio("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n")


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"type": "hangup"}', ("hangup", "")),
        ('{"type": "dtmf", "digit": "5"}', ("dtmf", "5")),
        ('{"type": "dtmf", "digit": "#"}', ("dtmf", "#")),
        ('{"type": "dtmf", "digit": "55"}', ("error", "dtmf needs one 'digit' of 0-9, * or #")),
        ('{"type": "dtmf", "digit": "a"}', ("error", "dtmf needs one 'digit' of 0-9, * or #")),
        ('{"type": "dtmf"}', ("error", "dtmf needs one 'digit' of 0-9, * or #")),
        ('{"type": "dance"}', ("error", "unknown message type 'dance'")),
        ('{"type": "paused", "run": 3, "unplayed_ms": 84}', ("paused", (3, 84))),
        ('{"type": "paused", "run": 3, "unplayed_ms": 84.0}', ("paused", (3, 84))),
        ('{"type": "paused", "run": 3, "unplayed_ms": -1}', ("error", "paused needs an integer 'run' and 'unplayed_ms' (0-60000)")),
        ('{"type": "paused", "run": "3", "unplayed_ms": 84}', ("error", "paused needs an integer 'run' and 'unplayed_ms' (0-60000)")),
        ('{"type": "paused", "run": 3, "unplayed_ms": true}', ("error", "paused needs an integer 'run' and 'unplayed_ms' (0-60000)")),
        ('{"type": "hello", "answers_pause": true}', ("hello", True)),
        ('{"type": "hello"}', ("hello", False)),
        ("not json", ("error", "messages must be JSON objects with a 'type'")),
        ("[1]", ("error", "messages must be JSON objects with a 'type'")),
        ("{}", ("error", "messages must be JSON objects with a 'type'")),
    ],
)
def test_data_channel_messages(text, expected):
    assert channel_request(text) == expected


@given(st.text(max_size=300))
def test_any_text_gets_an_answer_never_an_exception(text):
    kind, _ = channel_request(text)
    assert kind in ("dtmf", "hangup", "paused", "hello", "error")


def test_oversized_channel_messages_are_refused():
    kind, why = channel_request(json.dumps({"type": "hangup", "pad": "x" * 5000}))
    assert kind == "error" and "too large" in why


def _stereo_frame(left: np.ndarray, right: np.ndarray) -> av.AudioFrame:
    inter = np.stack([left, right], axis=1).reshape(1, -1).astype("<i2")
    frame = av.AudioFrame.from_ndarray(inter, format="s16", layout="stereo")
    frame.sample_rate = 48000
    return frame


def test_stereo_frames_are_downmixed_to_the_mean():
    left = np.arange(960, dtype=np.int16) * 10
    right = -np.arange(960, dtype=np.int16) * 4
    pcm, rate = frame_to_mono(_stereo_frame(left, right))
    assert rate == 48000
    np.testing.assert_array_equal(np.frombuffer(pcm, dtype="<i2"), (left.astype(np.int32) + right) >> 1)


def test_planar_float_frames_are_converted_too():
    t = np.arange(960) / 48000
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
    frame.sample_rate = 48000
    pcm, rate = frame_to_mono(frame)
    out = np.frombuffer(pcm, dtype="<i2")
    assert rate == 48000 and len(out) == 960
    assert abs(np.abs(out).max() - 0.5 * 32767) < 0.02 * 32767


def test_the_track_paces_20ms_frames_and_fills_gaps_with_silence():
    voice = np.full(960, 1000, dtype="<i2").tobytes()
    script = [None, voice, voice, None, voice[:100], None] + [None] * 20  # a short frame is padded, never sent short

    async def run():
        track = CallTrack(lambda: script.pop(0) if script else None)
        t0 = time.monotonic()
        frames = [await track.recv() for _ in range(25)]
        return track, frames, time.monotonic() - t0

    track, frames, elapsed = asyncio.run(run())
    assert [f.pts for f in frames] == [i * 960 for i in range(25)]
    assert all(f.sample_rate == 48000 and f.samples == 960 and f.format.name == "s16" and f.layout.name == "mono" for f in frames)
    levels = [int(np.abs(f.to_ndarray()).max()) for f in frames]
    assert levels[:6] == [0, 1000, 1000, 0, 1000, 0] and set(levels[6:]) == {0}
    assert track.voiced == 3 and track.frames == 25
    # 24 periods after the first frame, paced against the clock (not back to back).
    assert elapsed >= 24 * 0.020 - 0.005


def test_the_track_catches_up_after_a_stall_without_bursting_forever():
    async def run():
        track = CallTrack(lambda: None)
        await track.recv()
        time.sleep(0.5)  # the event loop was blocked for 25 frame periods
        t0 = time.monotonic()
        for _ in range(10):
            await track.recv()
        burst = time.monotonic() - t0
        return track, burst

    track, burst = asyncio.run(run())
    assert track.resyncs == 1  # beyond RESYNC_AFTER: the clock moves instead of 25 frames at once
    assert burst >= 9 * 0.020 - 0.005  # and then it paces again


def test_a_frame_taken_late_is_placed_where_it_was_due_to_play():
    """After a stall shorter than RESYNC_AFTER the track returns frames back
    to back; each one's ``due`` (where the recording places it) stays on the
    20 ms grid of its RTP timestamps, not at the late wall time it was taken."""
    dues: list[float] = []

    async def run():
        track = CallTrack(None)
        track.next_frame = lambda: dues.append(track.due)
        for _ in range(3):
            await track.recv()
        time.sleep(0.12)  # the loop was blocked for six frame periods
        for _ in range(6):
            await track.recv()
        return track

    track = asyncio.run(run())
    assert track.resyncs == 0 and len(dues) == 9
    steps = np.diff(dues)
    assert np.allclose(steps, 0.020, atol=1e-6), steps  # one grid, the stall nowhere in it


def test_a_stopped_track_ends():
    async def run():
        track = CallTrack(lambda: None)
        track.stop()
        with pytest.raises(webrtc.MediaStreamError):
            await track.recv()

    asyncio.run(run())


def test_the_inbound_jitter_buffer_is_shortened_on_this_aiortc():
    """aiortc (pinned in uv.lock) holds 4 inbound packets by default; the
    gateway replaces that buffer through a private attribute. If an upgrade
    renames it, this fails rather than the caller quietly waiting 80 ms."""
    import asyncio

    from aiortc import RTCPeerConnection

    from parley_gateway.webrtc import JITTER_ATTRIBUTE, shorten_jitter_buffer

    async def scenario():
        pc = RTCPeerConnection()
        pc.addTransceiver("audio")
        default = getattr(pc.getReceivers()[0], JITTER_ATTRIBUTE)._prefetch
        ok = shorten_jitter_buffer(pc, 2)
        now = getattr(pc.getReceivers()[0], JITTER_ATTRIBUTE)._prefetch
        await pc.close()
        return default, ok, now

    default, ok, now = asyncio.run(scenario())
    assert (default, ok, now) == (4, True, 2)
