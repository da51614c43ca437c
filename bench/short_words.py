"""Short talk-overs through the phone line, offline: what the ASR makes of each,
and the reducer's verdict on its final (docs/BENCHMARKS.md 6, barge6).

Deterministic: every talk-over step (one with ``expect``) of the given
scenario files is rendered as the scenario caller renders it, sent down the
line (``--line twilio``: soxr to 8 kHz, μ-law, then the gateway's own
resampler back to 16 kHz; ``pcm``: as is), heard by Silero from the settled
state after 1 s of quiet at ``--align`` sample offsets, cut by the ASR's own
endpointer (the phone start threshold on Twilio) into the clips the worker
would give Whisper (its pre-roll on both sides), and transcribed by
``WhisperTranscriber.transcribe_final``, which measures ``floor`` (Whisper's
own P of a floor word first) on short clips. Each final is judged as the
reducer's interruption rule judges a final over an answer: the noise rule
(few ordinary words in under ``noise_sound``), RULES 22 (a sound with
``floor >= floor_word`` barges in) and RULES 23 (a short sound written with a
floor word first that the model gave under ``floor_word`` is a noise). The
table counts alignments barged in, with the rules off and on::

    uv run python bench/short_words.py --line twilio scenarios/held-out/phone-barge-2.yaml

The live judgement also weighs the caller's level (RULES 17), the question
asked and the continuing caller (RULES 21); those are not modelled here.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "services" / "asr"), str(ROOT / "services" / "orchestrator")]

from parley.audio import Resampler, pcm16_to_ulaw, ulaw_to_pcm16  # noqa: E402
from parley.contract import FLOOR_WORDS  # noqa: E402
from parley.scenarios import sounds  # noqa: E402
from parley.scenarios.spec import load_path  # noqa: E402
from parley_asr import endpointer  # noqa: E402
from parley_asr.settings import Settings  # noqa: E402
from parley_asr.vad import SileroVad, StreamBank  # noqa: E402
from parley_asr.whisper import WhisperTranscriber  # noqa: E402
from parley_orchestrator import words  # noqa: E402
from parley_orchestrator.reducer import Policy  # noqa: E402

WINDOW = 512
FLOOR_FIRST = frozenset(words.tokens(" ".join(FLOOR_WORDS)))


def phone_line(x: np.ndarray) -> np.ndarray:
    """float 16 kHz -> what the ASR hears of it from a Twilio call."""
    import soxr

    narrow = soxr.resample(x, 16000, 8000)
    mu = pcm16_to_ulaw((np.clip(narrow, -1, 1) * 32767).astype("<i2").tobytes())
    rs = Resampler(8000, 16000)
    return np.concatenate([np.frombuffer(rs.process(ulaw_to_pcm16(mu[i : i + 160])), "<i2") for i in range(0, len(mu), 160)]).astype(np.float32) / 32768


def verdict(text: str, seconds: float, floor: float, rules: int, p: Policy) -> bool:
    """Does this final over an answer barge in? ``rules``: 0 before RULES 22, 22, 23."""
    heard, said = words.hearing(text), words.tokens(text)
    if heard == "words" and words.few_words(text, p.noise_words) and 0 < seconds < p.noise_sound:
        heard = "sound"
    elif rules >= 23 and heard == "words" and 0 <= floor < p.floor_word and said[0] in FLOOR_FIRST and 0 < seconds < p.noise_sound:
        heard = "sound"
    return heard == "words" or (rules >= 22 and heard == "sound" and 0 < p.floor_word <= floor)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--line", choices=("twilio", "pcm"), default="twilio")
    ap.add_argument("--align", default="0,128,256,384", help="sample offsets of the sound against the VAD's windows")
    ap.add_argument("--json", default="", help="write every final (text, floor, verdicts) here")
    args = ap.parse_args(argv)
    settings, policy = Settings(), Policy()
    cfg = settings.endpointing(phone=args.line == "twilio")
    preroll = int(settings.preroll_ms * 16)
    vad = SileroVad()
    bank = StreamBank(vad, 1)
    slot = bank.open()
    whisper = WhisperTranscriber(cpu_threads=settings.whisper_threads, floor_clip_ms=settings.floor_clip_ms)
    render = sounds.Renderer(ROOT / "var" / "scenario-audio")
    finals, tally = [], defaultdict(lambda: [0, 0, 0, 0])
    for f in args.files:
        for sc in load_path(f).scenarios:
            for step in (s for s in sc.steps if s.expect and s.kind in ("say", "sound")):
                x = render(step.kind, step.text, step.audio).astype(np.float32) / 32768
                x = phone_line(x) if args.line == "twilio" else x
                for shift in (int(a) for a in args.align.split(",")):
                    bank.reset(slot)
                    y = np.concatenate([np.zeros(WINDOW * 31 + shift, np.float32), x, np.zeros(WINDOW * 30, np.float32)])
                    probs = [float(bank.run(np.array([slot]), y[i * WINDOW : (i + 1) * WINDOW][None])[0]) for i in range(len(y) // WINDOW)]
                    barged = [False, False, False]
                    for d in endpointer.run(probs, cfg)[1]:
                        if not isinstance(d, endpointer.Stop):
                            continue
                        clip = y[max(0, d.begin * WINDOW - preroll) : d.end * WINDOW + preroll]
                        text = whisper.transcribe_final((np.clip(clip, -1, 1) * 32767).astype(np.int16))
                        seconds = (d.end - d.begin) * WINDOW / 16000
                        said = [verdict(text, seconds, text.floor, rules, policy) for rules in (0, 22, 23)]
                        barged = [a or b for a, b in zip(barged, said)]
                        finals.append({"scenario": sc.name, "expect": step.expect, "shift": shift, "seconds": seconds, "text": str(text), "floor": text.floor, "barge": said})
                    t = tally[step.expect]
                    t[0] += 1
                    for i, b in enumerate(barged):
                        t[i + 1] += b
                print(f"{sc.name}: {[(r['text'], r['floor']) for r in finals if r['scenario'] == sc.name][-3:]}", file=sys.stderr, flush=True)
    print(f"| {args.line} talk-overs x alignments | n | barged in: before RULES 22 | RULES 22 | RULES 23 |\n|---|---|---|---|---|")
    for expect, (n, *b) in sorted(tally.items()):
        print(f"| {expect} | {n} | {b[0]} | {b[1]} | {b[2]} |")
    if args.json:
        Path(args.json).write_text(json.dumps(finals, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
