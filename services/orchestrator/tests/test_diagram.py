from pathlib import Path

from parley_orchestrator import diagram

DOC = Path(__file__).resolve().parents[3] / "docs" / "state-diagram.md"


def test_committed_state_diagram_matches_the_transition_table():
    assert DOC.read_text() == diagram.render(), "regenerate: python -m parley_orchestrator.diagram > docs/state-diagram.md"


def test_every_phase_appears_in_the_diagram():
    text = diagram.render()
    for phase in diagram.reducer.PHASES:
        assert phase in text
