"""The scenario file format: what parses, what it means, and the errors a
hand-written file gets (each naming where the problem is)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parley.scenarios import spec
from parley.scenarios.spec import ScenarioError, load, pause_kind

ROOT = Path(__file__).resolve().parents[2]


def one(text: str) -> spec.Scenario:
    suite = load(text)
    assert len(suite.scenarios) == 1
    return suite.scenarios[0]


def test_a_small_file_parses_into_steps_turns_and_expectations():
    s = one(
        """
now: 2026-12-01T09:30
defaults: {params: {greeting: ""}, transports: [pcm]}
scenarios:
  - name: pause-before-the-day
    tags: [pause]
    steps:
      - say: Could you book me in for
      - pause: 1.2
      - say: um, Thursday at eleven?
      - wait: {agent: mid}
      - sound: cough
        expect: keeps_talking
      - wait: quiet
        heard: {any: [thursday]}
    expect:
      answered: true
      answered_mid_turn: false
      tools: [{name: book_appointment, arguments: {time: "11:00"}}]
"""
    )
    assert s.name == "pause-before-the-day" and s.transports == ("pcm",) and s.params == {"greeting": ""}
    assert s.now == "2026-12-01T09:30:00"
    assert [st.kind for st in s.steps] == ["say", "pause", "say", "wait", "sound", "wait"]
    assert s.steps[3].until == "point" and s.steps[3].point == "mid"
    assert s.steps[4].expect == "keeps_talking" and s.steps[4].audio.engine == "sox"
    assert s.steps[5].heard.any == ("thursday",)
    turns = s.turns()
    assert [t.steps for t in turns] == [(0, 1, 2), (4,)]
    assert turns[0].mid_pauses == (1,) and turns[1].mid_pauses == ()
    assert s.expect.answered is True and s.expect.answered_mid_turn is False
    assert s.expect.tools == (spec.ToolExpect("book_appointment", {"time": "11:00"}),)


def test_yaml_words_a_caller_says_stay_words():
    # YAML 1.1 would read these as booleans and 11:00 as the number 660.
    s = one(
        """
scenarios:
  - name: words
    steps:
      - say: yes
      - wait: quiet
      - say: no
      - wait: quiet
      - say: off
    expect: {tools: [{name: book_appointment, arguments: {time: 11:00, date: 2026-12-03}}]}
"""
    )
    assert [st.text for st in s.steps if st.kind == "say"] == ["yes", "no", "off"]
    assert s.expect.tools[0].arguments == {"time": "11:00", "date": "2026-12-03"}


def test_a_trailing_pause_or_one_between_noises_is_not_a_mid_turn_pause():
    s = one("scenarios: [{name: a, steps: [{pause: 0.5}, {say: hello}, {pause: 2}, {wait: 1}, {say: bye}, {wait: 1}, {sound: cough}, {pause: 1}, {sound: cough}]}]")
    assert [t.mid_pauses for t in s.turns()] == [(), (), ()]


@pytest.mark.parametrize(
    ("before", "kind"),
    [
        ("Could you put me in for Tuesday,", "mid-sentence"),
        ("I was hoping to, er", "mid-sentence"),
        ("My number is five five five", "mid-sentence"),
        ("So I was wondering...", "mid-sentence"),
        ("Do you offer whitening?", "after-sentence"),
        ("My crown came loose at lunch.", "after-sentence"),
        ('He said "call back."', "after-sentence"),
        ("Hello!", "after-sentence"),
    ],
)
def test_a_pause_is_mid_sentence_unless_the_words_before_it_end_a_sentence(before, kind):
    s = one(f"scenarios: [{{name: a, steps: [{{say: {json.dumps(before)}}}, {{pause: 1}}, {{say: more.}}]}}]")
    (turn,) = s.turns()
    assert turn.mid_pauses == (1,) and turn.pause_kinds == (kind,)
    assert pause_kind(before) == kind


def test_variants_multiply_a_scenario_and_defaults_reach_every_step():
    suite = load(
        """
defaults: {voice: "espeak:en-gb", audio: {noise: pink@20}}
scenarios:
  - name: hours
    steps:
      - say: What are your hours?
      - say: And on Saturday?
        voice: piper
        speed: 1.2
    variants: [{}, {speed: 1.3}, {phone: true, name: phone}]
"""
    )
    names = [s.name for s in suite.scenarios]
    assert names == ["hours.plain", "hours.speed1.3", "hours.phone"]
    plain, fast, phone = suite.scenarios
    assert plain.steps[0].audio == spec.Audio(voice="espeak:en-gb", noise="pink@20")
    assert fast.steps[0].audio.speed == 1.3 and phone.steps[0].audio.phone
    # A step's own settings win over the variant's and the defaults'.
    assert fast.steps[1].audio.voice == "piper" and fast.steps[1].audio.speed == 1.2


def test_select_by_name_prefix_and_tag():
    suite = load("scenarios: [{name: a-1, tags: [x], steps: [{say: hi}]}, {name: a-2, steps: [{say: hi}]}, {name: b, tags: [x], steps: [{say: hi}]}]")
    assert [s.name for s in suite.select(("a-*",))] == ["a-1", "a-2"]
    assert [s.name for s in suite.select((), ("x",))] == ["a-1", "b"]
    assert [s.name for s in suite.select(("a-*",), ("x",))] == ["a-1"]


@pytest.mark.parametrize(
    "text, where, what",
    [
        ("scenarios: [{name: a, steps: [{say: hi, speed: 5}]}]", "scenarios[0].steps[0].speed", "out of range"),
        ("scenarios: [{name: a, steps: [{sound: sneeze}]}]", "scenarios[0].steps[0].sound", "unknown sound 'sneeze'"),
        ("scenarios: [{name: a, steps: [{say: hi, voice: festival}]}]", "scenarios[0].steps[0].voice", "unknown engine 'festival'"),
        ("scenarios: [{name: a, steps: [{say: hi}, {wait: {agent: middle}}]}]", "scenarios[0].steps[1].wait.agent", "early, mid, late"),
        ("scenarios: [{name: a, steps: [{say: hi, expect: stop}]}]", "scenarios[0].steps[0].expect", "stops, keeps_talking"),
        ("scenarios: [{name: a, steps: [{say: hi}, {say: hi, expect: stops}], expect: {answerd: true}}]", "scenarios[0].expect", "unknown key(s) 'answerd'"),
        ("scenarios: [{name: a, steps: [{say: hi, noise: pink}]}]", "scenarios[0].steps[0].noise", "KIND@SNR"),
        ("scenarios: [{name: a, steps: [{say: hi, pause: 1}]}]", "scenarios[0].steps[0]", "exactly one of"),
        ("scenarios: [{name: a, steps: [{pause: 1}]}]", "scenarios[0].steps", "never makes a sound"),
        ("scenarios: [{name: a, steps: [{say: hi}]}, {name: a, steps: [{say: hi}]}]", "scenarios[1]", "duplicate scenario name"),
        ("scenarios: [{name: 'a b', steps: [{say: hi}]}]", "scenarios[0].name", "letters, digits"),
        ("scenarios: [{name: a, steps: [{dtmf: 12x}]}]", "scenarios[0].steps[0].dtmf", "digits"),
        ("scenarios: [{name: a, steps: [{say: hi}], expect: {tools: {name: x}}}]", "scenarios[0].expect.tools", "a list"),
        ("now: next tuesday\nscenarios: [{name: a, steps: [{say: hi}]}]", "now", "ISO date-time"),
        ("scenarios: [{name: a, steps: [{say: hi}], transports: [sip]}]", "scenarios[0].transports", "pcm, twilio"),
        ("scenarios: [{name: a, steps: [{say: hi, expect: stops}]}]", "scenarios[0].steps[0]", "first step cannot talk over"),
        ("scenarios: {name: a}", "", "non-empty list"),
        ("scenarios: [", "", "not valid YAML"),
    ],
)
def test_errors_say_where_and_what(text, where, what):
    with pytest.raises(ScenarioError) as err:
        load(text)
    msg = str(err.value)
    assert what in msg, msg
    if where:
        assert msg.startswith(where + ":"), msg


def test_the_shipped_suite_is_valid_and_big_enough():
    files = sorted((ROOT / "scenarios").glob("*.yaml"))
    assert files, "scenarios/*.yaml"
    names = []
    kinds = set()
    for f in files:
        suite = spec.load_path(f)
        for s in suite.scenarios:
            names.append(s.name)
            assert s.now, f"{s.name}: every shipped scenario pins the date"
            kinds.update(s.tags)
    assert len(names) == len(set(names))
    assert len(names) >= 40, len(names)
    for tag in ("pause", "dictation", "backchannel", "noise", "interruption", "yes-no", "greeting", "monologue"):
        assert tag in kinds, tag
