"""A real browser holds a conversation with the agent over WebRTC.

Headless Chromium (Debian's ``chromium``) opens the gateway's page with a fake
microphone: a WAV of a booking request synthesized by Piper. The page talks
WebRTC (its default transport) to the whole stack, with the real models, and
records, time-aligned, its microphone and the agent audio it received
(``?record=1``). The test reads the page through the DevTools protocol: the
transcript it shows, and the recording, which Whisper transcribes.

The request starts after 6 s of silence, so that the greeting (about 3.5 s,
starting as soon as the call is up) has played out and the conversation is
one clean turn. Talking over the greeting does not work in this set-up:
with echoCancellation on, Chromium's echo canceller zeroes the fake
microphone while the agent's audio plays, so the start of the request is lost
(seen here: "Next, we at 10 am."; with echoCancellation off it comes through).
"""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest

from browser import Chromium, write_wav
from speech import hear, normalise, say, silence
from stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

RATE = 48000  # the fake microphone file
REQUEST = "I would like to book an appointment next Tuesday at 10 a.m."
FRIDAY = "2026-11-27T09:30:00"  # the clinic's pinned day: "next Tuesday" is the 1st of December
LEAD_S, TAIL_S = 6.0, 4.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # The page gets its own session token, as under `make run` (local demo mode).
    with Stack(tmp_path_factory.mktemp("stack"), now=FRIDAY, env={"PARLEY_DEMO": "local"}) as s:
        yield s


def envelope(pcm: np.ndarray, rate: int, frame_ms: int = 20) -> np.ndarray:
    n = rate * frame_ms // 1000
    frames = pcm[: len(pcm) // n * n].astype(np.float64).reshape(-1, n)
    return np.sqrt((frames**2).mean(axis=1))


def voiced_spans(pcm: np.ndarray, rate: int, threshold: float = 300, gap_s: float = 0.5) -> list[tuple[float, float]]:
    """(start, end) seconds of sound, pauses shorter than ``gap_s`` bridged."""
    loud = np.flatnonzero(envelope(pcm, rate) > threshold)
    spans: list[list[int]] = []
    for i in loud:
        if spans and i - spans[-1][1] <= gap_s / 0.02:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return [(a * 0.02, (b + 1) * 0.02) for a, b in spans]


def test_chromium_books_an_appointment_over_webrtc(stack, tmp_path, capsys):
    mic = np.concatenate([silence(LEAD_S, RATE), say(REQUEST, RATE), silence(TAIL_S, RATE)])
    wav = write_wav(tmp_path / "request.wav", mic, RATE)

    async def conversation():
        with Chromium(wav, tmp_path / "chromium") as browser:
            page = await browser.page()
            try:
                await page.goto(f"{stack.gateway}/?record=1")
                assert await page.eval("window.parley.transport") == "webrtc"
                await page.eval("document.getElementById('start').click()")
                await page.wait_for("window.parley.connected || window.parley.errors.length", timeout=20)
                assert await page.eval("window.parley.errors") == []
                # The booking confirmation is said, and has played out.
                await page.wait_for("Object.values(window.parley.agent).some(t => /booked/i.test(t))", timeout=60)
                await page.wait_for("window.parley.state === 'Listening'", timeout=30)
                await asyncio.sleep(0.8)  # the jitter buffer's tail
                seen = await page.eval(
                    "({session: window.parley.session, transcripts: window.parley.transcripts, agent: window.parley.agent,"
                    " chat: document.getElementById('chat').innerText, timeline: document.getElementById('timeline').children.length,"
                    " errors: window.parley.errors, recording: window.parleyRecording()})"
                )
                seen["steps"] = await page.eval("window.parley.notices.filter(n => n.type === 'step')")
                seen["latency_rows"] = await page.eval("[...document.querySelectorAll('#latency tbody tr')].map(r => r.innerText)")
                seen["latency"] = await page.eval("window.parley.notices.filter(n => n.type === 'latency')")
                seen["judgements"] = await page.eval("window.parley.judgements")
                seen["turns_panel"] = await page.eval("document.getElementById('turns').innerText")
                await page.eval("document.getElementById('stop').click()")
                # The page hung up over the data channel: the gateway closes the call.
                for _ in range(100):
                    if "webrtc call closed" in stack.log("media-gateway"):
                        break
                    await asyncio.sleep(0.1)
                return seen
            except BaseException:
                print("page console:", *page.console[-30:], sep="\n  ")
                print("gateway log:", stack.log("media-gateway")[-3000:])
                raise
            finally:
                await page.close()

    seen = asyncio.run(conversation())
    rec = seen.pop("recording")
    assert rec is not None, "the page recorded nothing (no remote track?)"
    rate = rec["rate"]
    mic_rec = np.frombuffer(base64.b64decode(rec["mic"]), dtype="<i2")
    agent_rec = np.frombuffer(base64.b64decode(rec["agent"]), dtype="<i2")

    # What the page shows.
    assert seen["session"].startswith("webrtc-"), seen["session"]
    assert seen["errors"] == []
    said = normalise(" ".join(seen["transcripts"]))
    assert "book" in said and "tuesday" in said, seen["transcripts"]
    assert "You:" in seen["chat"] and "Agent:" in seen["chat"] and "booked" in seen["chat"], seen["chat"]
    assert seen["timeline"] > 5
    # The inspector shows the answered turn's latency split by stage.
    answered = [n for n in seen["latency"] if n["voice_to_voice_ms"] is not None]
    assert answered, seen["latency"]
    assert all(answered[0][k] is not None for k in ("asr_ms", "llm_ttft_ms", "tts_ms", "playout_ms")), answered[0]
    assert len(seen["latency_rows"]) == len(seen["latency"])
    # ...and why the agent decided the caller was done: the judgement, its signals and thresholds.
    answer = [j for j in seen["judgements"] if j["kind"] == "turn_end" and j["verdict"] == "answer"]
    assert answer and "tuesday" in normalise(answer[-1]["text"]), seen["judgements"]
    assert answer[-1]["silence"] >= answer[-1]["wait"] > 0, answer[-1]
    assert "end of turn: ANSWER" in seen["turns_panel"] and "s needed" in seen["turns_panel"], seen["turns_panel"]

    # What the page heard: the agent's voice, transcribed from the received audio.
    heard = normalise(hear(agent_rec, rate))
    assert "booked" in heard or "book" in heard, heard
    assert "tuesday" in heard and "10" in heard.split(), heard
    assert "bright smile" in heard or "help" in heard, heard  # the greeting came through too

    # Timing from the page's own clock: end of the request -> first agent sound after it.
    mic_spans = voiced_spans(mic_rec, rate)
    agent_spans = voiced_spans(agent_rec, rate)
    assert mic_spans, "the fake microphone's speech did not reach the page's recorder"
    spoke_until = mic_spans[-1][1]
    answers = [start for start, _ in agent_spans if start > spoke_until]
    assert answers, f"no agent audio after the request: mic {mic_spans}, agent {agent_spans}"
    v2v = answers[0] - spoke_until
    greeting_end = agent_spans[0][1]
    # The server's side of the same turn, from the reducer steps the page was sent:
    # end of speech as the endpointer saw it -> the answer's first frame pulled by the track.
    answer_run = max(int(run) for run, text in seen["agent"].items() if "booked" in text)
    first_frame = min(st["at"] for st in seen["steps"] if st["event"] == "PlaybackProgress" and st["run"] == answer_run)
    stopped = max(st["at"] for st in seen["steps"] if st["event"] == "SpeechStopped" and st["at"] < first_frame)
    # Page and services share the machine's clock: split the page's number into
    # endpointing (speech end -> SpeechStopped), the services (-> the gateway
    # pulls the first frame) and the WebRTC path back (-> the page hears it).
    epoch = rec["epoch0"]
    endpointing = stopped - (epoch + spoke_until)
    services = first_frame - stopped
    transport = (epoch + answers[0]) - first_frame
    with capsys.disabled():
        print(
            f"\n[e2e WebRTC/Chromium] voice-to-voice {v2v * 1000:.0f} ms (page clock: end of mic speech -> first received agent sound)"
            f" = endpointing {endpointing * 1000:.0f} + services {services * 1000:.0f} + gateway->page {transport * 1000:.0f} ms;"
            f" greeting {agent_spans[0][0]:.2f}-{greeting_end:.2f}s, request {mic_spans[-1][0]:.2f}-{spoke_until:.2f}s"
            f" after the recorder started; agent said: {heard!r}"
        )
    log = stack.log("media-gateway")
    assert "webrtc call answered" in log and "webrtc call closed" in log and "client hung up" in log
