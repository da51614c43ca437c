"""Choosing the brain from the settings."""

from __future__ import annotations

import pytest

from parley.settings import SettingsError
from parley_orchestrator.adapters.llm import brain_for
from parley_orchestrator.adapters.openai_chat import OpenAIChat
from parley_orchestrator.adapters.receptionist import Receptionist
from parley_orchestrator.settings import Settings


def test_no_llm_configured_gives_the_receptionist():
    brain = brain_for(Settings.from_env({}))
    assert isinstance(brain, Receptionist)
    assert brain.name == "Built-in demo receptionist (rule-based, no LLM)"
    assert brain.greeting.startswith("Hello, this is Bright Smile Dental")


def test_llm_settings_give_the_openai_adapter_without_leaking_the_key():
    env = {"LLM_BASE_URL": "http://localhost:11434/v1", "LLM_MODEL": "qwen2.5:3b", "LLM_API_KEY": "sk-secret", "LLM_TIMEOUT": "12"}
    brain = brain_for(Settings.from_env(env))
    assert isinstance(brain, OpenAIChat)
    assert brain.name == "OpenAI-compatible (qwen2.5:3b at http://localhost:11434/v1)"
    assert brain.url == "http://localhost:11434/v1/chat/completions"
    assert "sk-secret" not in repr(brain) and "sk-secret" not in brain.name
    assert brain.timeout.read == 12


def test_key_is_optional_for_local_servers():
    brain = brain_for(Settings.from_env({"LLM_BASE_URL": "http://127.0.0.1:8080/v1", "LLM_MODEL": "local"}))
    assert isinstance(brain, OpenAIChat)


@pytest.mark.parametrize(
    ("env", "missing"),
    [({"LLM_API_KEY": "sk-x"}, ["LLM_BASE_URL"]), ({"LLM_BASE_URL": "http://x/v1"}, ["LLM_MODEL"]), ({"LLM_MODEL": "m"}, ["LLM_BASE_URL"])],
)
def test_half_a_configuration_is_an_error_not_a_silent_fallback(env, missing):
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(env)
    assert sorted(p.variable for p in refused.value.problems) == missing


def test_the_page_is_told_what_to_say_to_the_brain_that_answers():
    from parley_orchestrator.adapters.fixed import FixedLatencyBrain
    from parley_orchestrator.app import session_defaults, things_to_say
    from parley_orchestrator.clinic import CALLER_EXAMPLES

    def about(env: dict[str, str], brain=None) -> dict:
        settings = Settings.from_env(env)
        brain = brain or brain_for(settings)
        return things_to_say(brain, session_defaults(settings, brain))

    llm = {"LLM_BASE_URL": "http://127.0.0.1:8080/v1", "LLM_MODEL": "local"}
    assert about({}) == {"examples": list(CALLER_EXAMPLES), "examples_for": "the clinic's receptionist"}
    assert about(llm)["examples"] == list(CALLER_EXAMPLES)  # an LLM given the clinic's prompt is the clinic
    own = about(llm | {"PARLEY_POLICY_SYSTEM_PROMPT": "You take pizza orders for Luigi's."})
    assert own["examples"] == [] and "ask it" in own["examples_for"]  # Parley cannot know what that agent does
    fixed = about({}, FixedLatencyBrain())
    assert fixed["examples"] and "benchmark" in fixed["examples_for"]
