"""The wire contract: stable names, versions, codecs."""

from __future__ import annotations

import typing
from pathlib import Path

import msgspec

from parley import contract

# The wire names. Stored logs and state use them: a name may be added here,
# never changed or removed (rename the class if you like; keep its tag).
EVENTS = {
    "SessionStarted", "SessionEnded", "SpeechStarted", "SpeechStopped", "TranscriptPartial",
    "TranscriptFinal", "LLMToken", "LLMToolCall", "LLMDone", "LLMError", "TTSChunkStarted",
    "TTSChunkDone", "TTSError", "PlaybackProgress", "ToolResult", "TimerFired", "Dtmf",
    "Takeover", "CallStatus", "ToneHeard", "DigitsSent", "ProviderFailed", "Usage", "SpeechOnset",
    "SpeechOnsetEnded",
}  # fmt: skip
COMMANDS = {
    "StartLLM", "CancelLLM", "Synthesize", "CancelTTS", "PausePlayback", "ResumePlayback",
    "FlushPlayback", "CallTool", "StartTimer", "CancelTimer", "EndSession", "SendDigits",
}  # fmt: skip
OTHERS = {"Judgement": contract.Judgement, "Step": contract.Step, "SessionControl": contract.SessionControl, "AsrClaim": contract.AsrClaim, "AsrClaimed": contract.AsrClaimed, "AsrProgress": contract.AsrProgress}
PHASES = {"Idle", "Listening", "Transcribing", "Generating", "AwaitingTool", "Speaking", "Paused", "Interrupted", "Cancelled", "Ended"}


def tags(union) -> set[str]:
    return {cls.__struct_config__.tag for cls in typing.get_args(union)}


def test_the_wire_names_are_the_pinned_ones():
    assert EVENTS <= tags(contract.AnyEvent), "an event's tag changed or was removed: old logs would not decode"
    assert COMMANDS <= tags(contract.AnyCommand), "a command's tag changed or was removed"
    for name, cls in OTHERS.items():
        assert cls.__struct_config__.tag == name
    assert PHASES <= {p.value for p in contract.Phase}


def test_no_tag_defaults_to_the_class_name():
    source = Path(contract.__file__).read_text()
    assert "tag=True" not in source, "declare tags explicitly: tag=\"Name\""


def test_any_struct_round_trips_through_one_encoder():
    ev = contract.SpeechStopped(session="s", at=1.0, utterance=2, eot=0.8)
    assert contract.decode_event(contract.encode(ev)) == ev
    ctl = contract.SessionControl(session="s", reason="hangup")
    assert contract.decode(contract.encode(ctl), contract.SessionControl) == ctl
    claim = contract.AsrClaim(session="s")
    assert contract.decode(contract.encode(claim), contract.AsrClaim) == claim


def test_messages_from_before_a_field_or_tag_existed_still_decode():
    # An older sender: no tag on the claim, no end-of-turn signals.
    old_claim = msgspec.msgpack.encode({"session": "s", "sample_rate": 8000})
    assert contract.decode(old_claim, contract.AsrClaim).sample_rate == 8000
    old_stop = msgspec.msgpack.encode({"type": "SpeechStopped", "session": "s", "at": 1.0, "utterance": 0})
    ev = contract.decode_event(old_stop)
    assert ev.eot == -1.0
    old_final = msgspec.msgpack.encode({"type": "TranscriptFinal", "session": "s", "at": 1.0, "utterance": 0, "text": "hi"})
    assert contract.decode_event(old_final).complete == -1.0
    # A newer sender's unknown field is ignored by this release.
    newer = msgspec.msgpack.encode({"type": "SpeechStarted", "session": "s", "at": 1.0, "utterance": 0, "future": 1})
    assert contract.decode_event(newer) == contract.SpeechStarted(session="s", at=1.0, utterance=0)


def test_native_audio_offers_interoperate_with_older_gateways_and_workers():
    # An older gateway's claim offers nothing native; an older worker's answer wants nothing native.
    old_claim = msgspec.msgpack.encode({"type": "AsrClaim", "session": "s", "sample_rate": 16000, "utterance": 0, "provider": ""})
    assert contract.decode(old_claim, contract.AsrClaim).native == ""
    old_claimed = msgspec.msgpack.encode({"type": "AsrClaimed", "session": "s", "worker": "w"})
    assert contract.decode(old_claimed, contract.AsrClaimed).native == ""

    # An older worker reads a newer gateway's claim: the offer is ignored, the claim is served.
    class OldClaim(msgspec.Struct, frozen=True, kw_only=True, tag="AsrClaim"):
        session: str
        sample_rate: int = 16000
        utterance: int = 0
        provider: str = ""

    newer = contract.encode(contract.AsrClaim(session="s", native="mulaw/8000"))
    assert msgspec.msgpack.decode(newer, type=OldClaim) == OldClaim(session="s")
    claimed = contract.AsrClaimed(session="s", worker="w", native="mulaw/8000")
    assert contract.decode(contract.encode(claimed), contract.AsrClaimed) == claimed


def test_steps_are_typed():
    step = contract.Step(index=0, event=contract.Dtmf(session="s", at=0.0, digit="1"), state_from=contract.Phase.IDLE, state_to=contract.Phase.LISTENING)
    data = contract.to_json(step)
    back = contract.step_from_json(data)
    assert back.state_to is contract.Phase.LISTENING and back.schema == 1
    bad = data.replace(b'"Listening"', b'"Lisening"')
    try:
        contract.step_from_json(bad)
    except msgspec.ValidationError as exc:
        assert "state_to" in str(exc)
    else:
        raise AssertionError("an unknown phase decoded")
    bad = contract.to_json(msgspec.structs.replace(step, dropped="rejected")).replace(b'"rejected"', b'"lost"')
    try:
        contract.step_from_json(bad)
    except msgspec.ValidationError as exc:
        assert "dropped" in str(exc)
    else:
        raise AssertionError("an unknown drop reason decoded")


def test_the_decoder_of_a_type_is_built_once():
    contract.decode(contract.encode(contract.AsrClaim(session="s")), contract.AsrClaim)
    before = contract._decoder.cache_info().hits
    contract.decode(contract.encode(contract.AsrClaim(session="s")), contract.AsrClaim)
    assert contract._decoder.cache_info().hits == before + 1
