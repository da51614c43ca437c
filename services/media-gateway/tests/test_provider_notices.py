"""The page is told what each provider was used for, and when one failed (and who took over)."""

from parley import contract as c
from parley_gateway.call import notices_for


def step(event) -> c.Step:
    return c.Step(index=3, event=event, state_from=c.Phase.SPEAKING, state_to=c.Phase.SPEAKING, note="noted")


def test_usage_and_provider_failures_become_notices():
    usage = notices_for(step(c.Usage(session="s", at=1.0, service="tts", provider="cartesia", unit="characters", amount=42)))
    assert [n for n in usage if n["type"] == "usage"] == [{"type": "usage", "service": "tts", "provider": "cartesia", "unit": "characters", "amount": 42}]
    failed = notices_for(step(c.ProviderFailed(session="s", at=1.0, service="asr", provider="deepgram", error="auth: HTTP 401", fallback="whisper", utterance=2)))
    assert [n for n in failed if n["type"] == "provider_failed"] == [
        {"type": "provider_failed", "service": "asr", "provider": "deepgram", "error": "auth: HTTP 401", "fallback": "whisper"}
    ]
