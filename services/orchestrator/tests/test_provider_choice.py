"""A session's tts parameter rides on every Synthesize (the TTS worker picks the voice)."""

from parley import contract as c
from parley import session_params
from parley_orchestrator import reducer


def synthesized(params: dict[str, str]) -> list[c.Synthesize]:
    state = reducer.initial_state()
    state, commands, _ = reducer.reduce(state, c.SessionStarted(session="s", at=1.0, params={"greeting": "Hello, how can I help?", **params}))
    return [cmd for cmd in commands if isinstance(cmd, c.Synthesize)]


def test_the_sessions_voice_is_on_every_synthesize_and_none_means_the_workers():
    assert [s.provider for s in synthesized({"tts": "piper"})] == ["piper"]
    assert [s.provider for s in synthesized({})] == [""]


def test_the_catalogue_takes_known_providers_only():
    p_asr, p_tts = session_params.CATALOGUE["asr"], session_params.CATALOGUE["tts"]
    assert p_asr.parse("whisper") == "whisper" and p_tts.parse("elevenlabs") == "elevenlabs"
    for param, bad in ((p_asr, "google"), (p_tts, "piper; rm -rf")):
        try:
            param.parse(bad)
        except ValueError as exc:
            assert "must match" in str(exc)
        else:
            raise AssertionError(f"{bad!r} accepted")
