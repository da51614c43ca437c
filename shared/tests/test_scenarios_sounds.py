"""The caller's audio: every non-speech sound renders, deterministically; the
variants do what they say; renders are cached. Uses the real sox, espeak-ng
and Piper (deploy/system-deps.sh installs the first two for `make test`)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from parley.scenarios import sounds
from parley.scenarios.sounds import RATE, Renderer, render
from parley.scenarios.spec import SOUNDS, Audio

SOX = Audio(voice="sox")


def level_db(x: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean((x.astype(np.float32) / 32768) ** 2)) + 1e-9)


@pytest.mark.parametrize("kind", SOUNDS)
def test_every_sound_renders_the_same_twice_and_is_short(kind):
    a = render("sound", kind, SOX)
    b = render("sound", kind, SOX)
    assert a.dtype == np.int16 and np.array_equal(a, b)
    longest = 4.0 if kind == "tv" else 2.5  # a television's sentence, behind the caller
    assert 0.15 < len(a) / RATE < longest, len(a) / RATE
    assert np.max(np.abs(a)) > 1000  # audible


def test_speech_is_trimmed_to_its_voiced_part():
    x = render("say", "Thursday at eleven.", Audio(voice="espeak:en-us"))
    edge = int(0.02 * RATE)
    assert np.max(np.abs(x[:edge])) > 300 or np.max(np.abs(x[edge : 2 * edge])) > 300
    assert np.max(np.abs(x[-2 * edge :])) > 300
    assert 0.6 < len(x) / RATE < 2.5


def test_piper_speaks():
    x = render("say", "Could you book me in?", Audio())
    assert 0.6 < len(x) / RATE < 3.0 and level_db(x) > -35


def test_a_piper_take_is_the_same_in_every_process_and_differs_by_text():
    """Piper's random variation is one fixed draw per text, so a scenario file
    gives the same caller on every checkout (a suite run is repeatable)."""
    here = sounds.piper("Do you open on Saturdays?")
    code = "import sys; from parley.scenarios import sounds; sys.stdout.buffer.write(sounds.piper(sys.argv[1]).tobytes())"
    out = subprocess.run([sys.executable, "-c", code, "Do you open on Saturdays?"], capture_output=True, check=True).stdout
    there = np.frombuffer(out, np.float32)
    assert len(here) == len(there) and np.array_equal(here, there)
    assert np.array_equal(sounds.piper("Do you open on Saturdays?"), here)  # again in this process, after other takes
    other = sounds.piper("Do you open on Sundays?")
    assert len(other) != len(here) or not np.array_equal(other, here)


def test_speed_noise_gain_and_the_telephone_band_change_the_audio_as_named():
    base = render("say", "I need a cleaning next week.", Audio(voice="espeak:en-gb"))
    fast = render("say", "I need a cleaning next week.", Audio(voice="espeak:en-gb", speed=1.5))
    assert 0.55 < len(fast) / len(base) < 0.8
    quiet = render("say", "I need a cleaning next week.", Audio(voice="espeak:en-gb", gain=-12))
    assert level_db(base) - level_db(quiet) == pytest.approx(12, abs=1.5)
    noisy = render("say", "I need a cleaning next week.", Audio(voice="espeak:en-gb", noise="white@10"))
    assert len(noisy) >= len(base) and level_db(noisy) > level_db(base)
    phone = render("say", "I need a cleaning next week.", Audio(voice="espeak:en-gb", phone=True))
    spectrum = np.abs(np.fft.rfft(phone.astype(np.float32)))
    freqs = np.fft.rfftfreq(len(phone), 1 / RATE)
    assert spectrum[freqs > 4200].sum() < 0.01 * spectrum[(freqs > 300) & (freqs < 3400)].sum()


def test_babble_is_many_voices_nobody_can_follow():
    bed = sounds.noise_bed("babble", RATE)
    assert len(bed) == RATE and abs(np.sqrt(np.mean(bed**2)) - 1) < 0.01


def test_the_renderer_caches_on_disk(tmp_path):
    r = Renderer(tmp_path)
    a = r("sound", "knock", SOX)
    b = Renderer(tmp_path)("sound", "knock", SOX)
    assert np.array_equal(a, b) and r.made == 1
    assert len(list(tmp_path.glob("*.s16"))) == 1
    r("sound", "knock", Audio(voice="sox", gain=-6))
    assert len(list(tmp_path.glob("*.s16"))) == 2


def test_a_missing_program_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(sounds.shutil, "which", lambda _: None)
    with pytest.raises(sounds.SoundError, match="sox is not installed"):
        render("sound", "cough", SOX)


@pytest.mark.parametrize(("text", "said"), [("Mm-hmm.", ["mm-hmm"]), ("Mhmm.", ["mhmm"]), ("Mhm.", ["mhm"]), ("Mm.", ["mm"]), ("Hmm...", ["hmm"]), ("Mm, mm.", ["mm", "mm"]), ("Uh-huh.", None), ("Mm-hmm, yeah.", None), ("Mum.", None), ("Hm?", ["hm"])])
def test_a_hum_written_as_a_word_is_known_as_one(text, said):
    assert sounds.hum_words(text) == said


@pytest.mark.parametrize("voice", ["piper", "espeak:en-us+f2"])
def test_a_hum_written_as_a_word_is_hummed_at_the_voices_pitch_not_spelled(voice):
    """Both engines read "Mhmm." as letters ("em-aitch-em-em", ~1 s of four syllables): a scenario that writes a
    hum gets a hum, a nasal murmur in two beats at the voice's own pitch, like the sox hum-mm-hmm."""
    spelled = sounds.trim(sounds.piper("M H M M") if voice == "piper" else sounds.espeak("M H M M", "en-us+f2"))
    hummed = sounds.render("say", "Mhmm.", Audio(voice=voice)).astype(np.float32) / 32768
    assert 0.45 < len(hummed) / sounds.RATE < 0.8 < len(spelled) / sounds.RATE
    spoken = sounds.trim(sounds.piper("Ma.") if voice == "piper" else sounds.espeak("Ma.", "en-us+f2"))
    assert abs(sounds.voice_f0(hummed) / sounds.voice_f0(spoken) - 1) < 0.25
    assert np.array_equal(sounds.render("say", "Mhmm.", Audio(voice=voice)), sounds.render("say", "Mhmm.", Audio(voice=voice)))
    r = sounds.Renderer()
    assert r.key("say", "Mhmm.", Audio(voice=voice)) != r.key("say", "Mhmm", Audio(voice=voice))  # texts differ: keys differ


def test_the_voice_pitch_is_found_without_octave_errors():
    t = np.arange(sounds.RATE) / sounds.RATE
    for f0 in (90.0, 150.0, 220.0):
        buzz = (np.sign(np.sin(2 * np.pi * f0 * t)) * 0.3 + 0.1 * np.sin(2 * np.pi * f0 / 2 * t)).astype(np.float32)
        assert abs(sounds.voice_f0(buzz) / f0 - 1) < 0.05, f0
