"""The inspector is told, per step, why the agent judged the caller done or interrupting."""

from parley import contract as c
from parley_gateway.call import notices_for


def test_a_steps_judgements_become_notices_with_their_signals():
    j = c.Judgement(kind="turn_end", verdict="answer", reason="complete by the signals", text="Book me in.", eot=0.8, complete=0.9, score=0.867, threshold=0.5, silence=0.25, wait=0.2)
    step = c.Step(
        index=7,
        event=c.TranscriptFinal(session="s", at=5.0, utterance=1, text="Book me in.", complete=0.9),
        state_from=c.Phase.TRANSCRIBING,
        state_to=c.Phase.GENERATING,
        judgements=(j,),
    )
    notes = [n for n in notices_for(step) if n["type"] == "judgement"]
    assert notes == [
        {
            "kind": "turn_end", "verdict": "answer", "reason": "complete by the signals", "text": "Book me in.",
            "eot": 0.8, "complete": 0.9, "score": 0.867, "threshold": 0.5, "silence": 0.25, "wait": 0.2,
            "type": "judgement", "index": 7, "at": 5.0, "event": "TranscriptFinal",
        }
    ]  # fmt: skip
