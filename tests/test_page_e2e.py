"""The page as a voice playground, in headless Chromium at desktop and phone widths.

A stack in fixed mode (no models: this test is about the page) with the local
demo mode, so the page gets its own session token. Checked: things to say are
listed; the microphone's level meter moves with the (fake) microphone and
the "agent speaking" light comes on while the agent's audio plays; a full
conversation's panels (many latency rows, turns, timeline, providers) fit the
width without a horizontal scroll, the latency table included, at
1280 px and at 390 px (where the panels stack); a refused microphone and a
dropped connection each give a plain message saying what to do. Screenshots
of both widths are written to the test's directory (and printed with -s).
"""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest

from browser import Chromium, write_wav
from stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

RATE = 48000


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with Stack(tmp_path_factory.mktemp("stack"), env={"PARLEY_PROVIDERS": "fixed", "PARLEY_DEMO": "local"}) as s:
        yield s


FILL = """
(() => {
  const at = Date.now() / 1000;
  onNotice({type: 'session', session: 'pcm-0123456789abcdef'});
  for (let r = 1; r <= 8; r++) {
    onNotice({type: 'transcript', final: true, text: 'I would like to book an appointment for next Tuesday at ten in the morning please', utterance: r});
    onNotice({type: 'agent_text', run: r, chunk: 0, text: 'Certainly. I have booked you in for Tuesday the first of December at ten a.m. with the hygienist.'});
    onNotice({type: 'latency', run: r, endpoint_ms: 1234.5, asr_ms: 812.25, decide_ms: 12.5, llm_ttft_ms: 1843.75, chunk_ms: 233.5, tts_ms: 1021.5, playout_ms: 145.25, voice_to_voice_ms: 5301.25});
    onNotice({type: 'step', index: r, at: at + r, event: 'TranscriptFinal', run: r, from: 'Transcribing', to: 'Generating', commands: ['StartLLM', 'StartTimer', 'CancelTimer'], dropped: '', note: 'a rather long note about what the reducer decided and why it decided it'});
    onNotice({type: 'judgement', kind: 'turn_end', verdict: 'answer', reason: 'complete by the signals', text: 'book me in', eot: 0.8, complete: 0.9, score: 0.86, threshold: 0.5, silence: 0.25, wait: 0.2, index: r, at: at + r, event: 'TranscriptFinal'});
    onNotice({type: 'judgement', kind: 'interruption', verdict: 'resume', reason: '3 word(s) in 0.45 s of sound, under 0.6 s (a noise mis-heard?): not an interruption', text: 'in a moment', heard: 'sound', score: 0.45, threshold: 0.6, index: r, at: at + r, event: 'TranscriptFinal'});
  }
  onNotice({type: 'usage', service: 'asr', provider: 'deepgram', unit: 'audio_s', amount: 12.5});
  onNotice({type: 'usage', service: 'tts', provider: 'cartesia', unit: 'characters', amount: 420});
  onNotice({type: 'provider_failed', service: 'tts', provider: 'cartesia', error: 'dropped: socket dropped (no close frame)', fallback: 'piper'});
  return true;
})()
"""

FITS = """
(() => {
  const doc = document.documentElement, table = document.getElementById('latency');
  const wrap = table.parentElement, panels = [...document.querySelectorAll('.panel')].map(p => p.getBoundingClientRect());
  return {page_overflow: doc.scrollWidth - window.innerWidth,
          table_right: table.getBoundingClientRect().right, wrap_right: wrap.getBoundingClientRect().right,
          wrap_scrolls: wrap.scrollWidth > wrap.clientWidth && getComputedStyle(wrap).overflowX === 'auto',
          stacked: panels.length === 2 && Math.abs(panels[0].left - panels[1].left) < 2,
          examples: document.querySelectorAll('#example-list li').length,
          width: window.innerWidth};
})()
"""


async def at_width(page, width: int, height: int, mobile: bool, path) -> dict:
    await page.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=mobile)
    await asyncio.sleep(0.3)
    fits = await page.eval(FITS)
    await page.eval("window.scrollTo(0, 0)")
    shot = await page.send("Page.captureScreenshot", format="png")
    path.write_bytes(base64.b64decode(shot["data"]))
    return fits


def test_the_playground_page_fits_shows_levels_and_says_what_went_wrong(stack, tmp_path, capsys):
    t = np.arange(int(RATE * 8)) / RATE
    tone = np.concatenate([np.zeros(RATE, np.int16), (np.sin(2 * np.pi * 300 * t) * 9000).astype(np.int16)])
    wav = write_wav(tmp_path / "tone.wav", tone, RATE)

    async def visit():
        with Chromium(wav, tmp_path / "chromium") as browser:
            page = await browser.page()
            try:
                await page.goto(f"{stack.gateway}/?transport=ws")
                await page.wait_for("document.querySelectorAll('#example-list li').length >= 3")
                examples_for = await page.eval("document.getElementById('examples-for').textContent")
                # A call: the microphone's meter moves; the greeting lights "agent speaking".
                await page.eval("document.getElementById('start').click()")
                await page.wait_for("window.parley.connected", timeout=20)
                level = await page.wait_for("parseFloat(document.getElementById('mic-level').style.width) > 0 && document.getElementById('mic-level').style.width", timeout=15)
                speaking = await page.wait_for("window.parley.agentSpeaking", timeout=30)
                await page.eval("document.getElementById('stop').click()")
                await asyncio.sleep(0.3)
                hung_up_notice = await page.eval("window.parley.notice || ''")
                hung_up_state = await page.eval("window.parley.state + ' ' + document.getElementById('state').textContent")
                # A full conversation's worth of panels, at two widths.
                await page.eval(FILL)
                desktop = await at_width(page, 1280, 900, False, tmp_path / "page-desktop.png")
                phone = await at_width(page, 390, 844, True, tmp_path / "page-phone.png")
                # A refused microphone.
                await page.eval("navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('denied', 'NotAllowedError'))")
                await page.eval("document.getElementById('start').click()")
                refused = await page.wait_for("window.parley.notice", timeout=10)
                return level, speaking, hung_up_notice, hung_up_state, examples_for, desktop, phone, refused
            except BaseException:
                print("page console:", *page.console[-30:], sep="\n  ")
                raise

    level, speaking, hung_up_notice, hung_up_state, examples_for, desktop, phone, refused = asyncio.run(visit())
    with capsys.disabled():
        print(f"\n[page] screenshots: {tmp_path / 'page-desktop.png'} {tmp_path / 'page-phone.png'}; mic level {level}")
    assert speaking is True
    assert hung_up_notice == ""  # hanging up yourself is not a dropped connection
    assert hung_up_state == "Ended Ended"  # not the last state of a call that is over
    assert "benchmark brain" in examples_for, examples_for  # the examples are the answering brain's (fixed mode here)
    for fits in (desktop, phone):
        assert fits["page_overflow"] <= 0, fits  # nothing wider than the window
        assert fits["examples"] >= 3
        assert fits["table_right"] <= fits["wrap_right"] + 1 and not fits["wrap_scrolls"], fits  # the latency table fits its panel
    assert phone["stacked"] and not desktop["stacked"]
    assert "microphone was refused" in refused and "Start talking" in refused


def test_a_dropped_connection_is_said_plainly(stack, tmp_path):
    wav = write_wav(tmp_path / "quiet.wav", np.zeros(RATE * 5, np.int16), RATE)

    async def visit():
        with Chromium(wav, tmp_path / "chromium") as browser:
            page = await browser.page()
            await page.goto(f"{stack.gateway}/?transport=ws")
            await page.eval("document.getElementById('start').click()")
            await page.wait_for("window.parley.connected", timeout=20)
            # The network goes: the socket closes abnormally under the page.
            await page.eval("ws.onclose(new CloseEvent('close', {code: 1006}))")
            return await page.wait_for("window.parley.notice", timeout=10)

    text = asyncio.run(visit())
    assert "connection to the gateway dropped (code 1006)" in text and "Start talking" in text
