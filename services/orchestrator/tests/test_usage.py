"""parley usage: a session's Usage events summed and priced (pure)."""

from __future__ import annotations

import json

import pytest

from parley import contract
from parley_orchestrator import usage


def step(i: int, event) -> contract.Step:
    return contract.Step(index=i, event=event, state_from=contract.Phase.IDLE, state_to=contract.Phase.IDLE)


def u(service, provider, unit, amount):
    return contract.Usage(session="s", at=0.0, service=service, provider=provider, unit=unit, amount=amount)


STEPS = [
    step(0, u("asr", "deepgram", "audio_s", 3.5)),
    step(1, contract.SpeechStarted(session="s", at=0.0, utterance=0)),
    step(2, u("tts", "cartesia", "characters", 40)),
    step(3, u("asr", "deepgram", "audio_s", 1.5)),
    step(4, u("tts", "piper", "characters", 12)),
    step(5, u("llm", "gpt-4o-mini", "input_tokens", 1000)),
    step(6, u("llm", "gpt-4o-mini", "output_tokens", 50)),
]


def test_totals_sum_per_service_provider_and_unit():
    lines = usage.totals(STEPS)
    assert [(l.service, l.provider, l.unit, l.amount) for l in lines] == [
        ("asr", "deepgram", "audio_s", 5.0),
        ("llm", "gpt-4o-mini", "input_tokens", 1000),
        ("llm", "gpt-4o-mini", "output_tokens", 50),
        ("tts", "cartesia", "characters", 40),
        ("tts", "piper", "characters", 12),
    ]


def test_prices_from_inline_json_and_a_file_agree(tmp_path):
    inline = usage.parse_prices("deepgram.audio_s=0.01,cartesia.characters=0.001,gpt-4o-mini.input_tokens=0.000001")
    table = {"deepgram": {"audio_s": 0.01}, "cartesia": {"characters": 0.001}, "gpt-4o-mini": {"input_tokens": 0.000001}}
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(table))
    assert inline == usage.parse_prices(json.dumps(table)) == usage.parse_prices(str(path)) == table
    lines = usage.priced(usage.totals(STEPS), inline)
    costs = {(l.provider, l.unit): l.cost for l in lines}
    assert costs[("deepgram", "audio_s")] == pytest.approx(0.05)
    assert costs[("cartesia", "characters")] == pytest.approx(0.04)
    assert costs[("gpt-4o-mini", "output_tokens")] is None  # not in the table
    text = usage.render("s", lines)
    assert "estimated cost: 0.09100 (2 lines without a price)" in text


@pytest.mark.parametrize("bad", ["deepgram=1", "deepgram.audio_s=cheap", "deepgram.audio_s=-1", "/no/such/file", '{"deepgram": 3}', '{"deepgram": {"audio_s": "x"}}'])
def test_a_bad_price_table_says_what_is_wrong(bad):
    with pytest.raises(ValueError, match="prices"):
        usage.parse_prices(bad)


def test_no_usage_says_so():
    assert "no provider usage" in usage.render("s", usage.totals(STEPS[1:2]))
