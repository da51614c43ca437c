"""Issue 13 point 3: the provider settings are checked at start, and a missing
key or a bad value is refused with a line naming the variable (and what it
needs). The messages are the services' own settings errors, read whole."""

from __future__ import annotations

import pytest

from parley.settings import SettingsError
from parley_asr.settings import Settings as AsrSettings
from parley_tts.settings import Settings as TtsSettings

REFUSED = [
    (AsrSettings, {"PARLEY_ASR": "deepgram"}, "ASR_API_KEY must be set: PARLEY_ASR=deepgram needs the provider's key"),
    (AsrSettings, {"PARLEY_ASR": "openai"}, "ASR_API_KEY must be set: PARLEY_ASR=openai needs the provider's key"),
    (AsrSettings, {"PARLEY_ASR": "azure"}, "PARLEY_ASR must be one of 'whisper', 'deepgram', 'openai', not 'azure'"),
    (AsrSettings, {"PARLEY_ASR": "deepgram", "ASR_API_KEY": "k", "ASR_BASE_URL": "https://api.deepgram.com"},
     "ASR_BASE_URL must be a wss:// (or ws://) URL for PARLEY_ASR=deepgram, not 'https://api.deepgram.com'"),
    (AsrSettings, {"PARLEY_ASR_FALLBACK": "vosk"}, "PARLEY_ASR_FALLBACK must be one of 'whisper', 'none', not 'vosk'"),
    (TtsSettings, {"PARLEY_TTS": "cartesia", "TTS_VOICE": "v"}, "TTS_API_KEY must be set: PARLEY_TTS=cartesia needs the provider's key"),
    (TtsSettings, {"PARLEY_TTS": "elevenlabs", "TTS_API_KEY": "k"}, "TTS_VOICE must be set: PARLEY_TTS=elevenlabs needs a voice id from the provider"),
    (TtsSettings, {"PARLEY_TTS": "polly"}, "PARLEY_TTS must be one of 'piper', 'elevenlabs', 'cartesia', 'openai', not 'polly'"),
    (TtsSettings, {"PARLEY_TTS": "openai", "TTS_API_KEY": "k", "TTS_BASE_URL": "wss://x"},
     "TTS_BASE_URL must be a https:// (or http://) URL for PARLEY_TTS=openai, not 'wss://x'"),
]  # fmt: skip


@pytest.mark.parametrize("cls, env, message", REFUSED, ids=[next(iter(m.split(" "))) + "-" + "-".join(e.values())[:30] for _, e, m in REFUSED])
def test_a_provider_setting_that_cannot_work_is_refused_naming_it(cls, env, message):
    with pytest.raises(SettingsError) as refused:
        cls.from_env(env)
    assert message in str(refused.value)


def test_a_whole_provider_configuration_is_accepted():
    asr = AsrSettings.from_env({"PARLEY_ASR": "deepgram", "ASR_API_KEY": "dg-key"})
    assert asr.provider == "deepgram" and asr.api_key == "dg-key"
    tts = TtsSettings.from_env({"PARLEY_TTS": "openai", "TTS_API_KEY": "sk-key"})
    assert tts.provider == "openai" and tts.voice == "alloy"  # OpenAI's voices have a default
