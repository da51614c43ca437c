"""parley talk without a conversation: what it shows, and a machine with no sound device."""

from __future__ import annotations

import io
import sys
import types

from parley import talk


def test_no_sound_device_is_said_clearly_and_exits_2(monkeypatch, capsys):
    fake = types.ModuleType("sounddevice")

    def no_device(**kwargs):
        raise ValueError("Error querying device -1")

    fake.check_input_settings = no_device
    fake.check_output_settings = no_device
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    assert talk.main(["--gateway", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "parley talk: no sound device: no usable microphone and speakers: Error querying device -1" in err


def test_without_portaudio_it_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import fails
    assert talk.main(["--gateway", "http://127.0.0.1:9"]) == 2
    assert "sounddevice package is not installed" in capsys.readouterr().err


def test_the_screen_shows_words_states_and_cuts():
    out = io.StringIO()
    screen = talk.Screen(out)
    for notice in [
        {"type": "state", "state": "Listening"},
        {"type": "transcript", "final": False, "text": "I'd like"},  # not a tty: partials are not drawn
        {"type": "transcript", "final": True, "text": "I'd like to book."},
        {"type": "agent_text", "run": 1, "chunk": 0, "text": "Sure."},
        {"type": "interrupted", "run": 1},
        {"type": "end", "reason": "goodbye"},
    ]:
        screen.show(notice)
    assert screen.lines == ["       [Listening]", "you:   I'd like to book.", "agent: Sure.", "       (you cut in: the agent stops)", "the agent ended the call (goodbye)"]
    assert out.getvalue().splitlines() == screen.lines


def test_the_speaker_plays_in_order_pads_with_silence_and_clears():
    s = talk._Speaker()
    s.push(b"\x01\x00" * 3)
    assert s.pull(4) == b"\x01\x00\x01\x00" and s.pull(4) == b"\x01\x00\x00\x00"
    s.push(b"\x02\x00" * 10)
    s.clear()
    assert s.pull(4) == b"\x00" * 4
