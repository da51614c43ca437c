"""Every setting of every service: a bad value is refused, by name, at start.

The services are found the way ``parley config`` finds them (the
``parley.settings`` entry points), so a new service or a new setting is
covered without touching this file. For each setting the test tries values
that no sane declaration accepts for its type (letters for a number, a
misspelt boolean, numbers far outside any range, a path that does not exist,
punctuation for a name or a URL); each refusal must name the variable and the
value. A setting that accepts all of them must be free text, listed below.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from parley import config
from parley.settings import SettingsError

ROOT = Path(__file__).resolve().parent.parent
SERVICES = config.installed()

CANDIDATES = ("abc", "flase", "-1e12", "1e12", "1.5", "0", "!! not/allowed ??", "/nonexistent/parley/file", "x" * 300)

# Settings where any text is a legitimate value.
FREE_TEXT = {
    "PARLEY_DATA_DIR",  # created at start if missing
    "PARLEY_HTTP_HOST",  # any address or name the server may bind
    "PARLEY_FIXED_TRANSCRIPT",
    "TWILIO_AUTH_TOKEN",
    "PARLEY_API_KEY",
    "PARLEY_INSPECT_TOKEN",
    "LLM_MODEL",
    "LLM_API_KEY",
    "TTS_API_KEY",  # a vendor's key: any text
    "ASR_API_KEY",  # a vendor's key: any text
}


# A valid whole for checks across settings (an LLM needs both its URL and model).
BASE = {"orchestrator": {"LLM_BASE_URL": "http://127.0.0.1:9/v1", "LLM_MODEL": "m"}}


def _cases():
    for service, cls in SERVICES.items():
        for name in cls.model_fields:
            yield pytest.param(service, cls, name, id=f"{service}:{name}")


def test_every_service_is_found():
    assert set(SERVICES) >= {"media-gateway", "asr", "orchestrator", "tts"}


@pytest.mark.parametrize("service, cls, name", list(_cases()))
def test_a_bad_value_is_refused_naming_its_variable_and_value(service, cls, name):
    var = config._extra(cls.model_fields[name])["env"]
    if var.endswith("<FIELD>"):  # a family: one member stands for all
        var = var.replace("<FIELD>", "REPROMPT_AFTER")
    refused = 0
    for bad in CANDIDATES:
        try:
            cls.from_env({**BASE.get(service, {}), var: bad})
        except SettingsError as exc:
            refused += 1
            text = str(exc)
            assert exc.problems and all(p.variable for p in exc.problems), text
            named = [p for p in exc.problems if p.variable == var]
            assert named, f"{var}={bad!r} refused without naming {var}: {text}"
            secret = config._extra(cls.model_fields[name])["secret"]
            assert (bad not in text) if secret else (repr(bad) in text), text
            assert named[0].allowed, text
    if var in FREE_TEXT:
        return
    assert refused, f"{service}: {var} accepts every one of {CANDIDATES}: declare its type/range, or list it in FREE_TEXT with why"


@pytest.mark.parametrize(
    "service, env, message",
    [
        ("asr", {"PARLEY_ASR_THRESHOLD": "abc"}, "PARLEY_ASR_THRESHOLD must be a number from 0.05 to 0.95, not 'abc'"),
        ("asr", {"PARLEY_ASR_THRESHOLD": "5"}, "PARLEY_ASR_THRESHOLD must be a number from 0.05 to 0.95, not '5'"),
        ("asr", {"PARLEY_ASR_VAD_BATCH": "flase"}, "PARLEY_ASR_VAD_BATCH must be 1 or 0"),
        ("asr", {"PARLEY_ASR_WHISPER_THREADS": "0"}, "PARLEY_ASR_WHISPER_THREADS must be a whole number from 1 to 16, not '0'"),
        ("orchestrator", {"LLM_TIMEOUT": "x"}, "LLM_TIMEOUT must be a number above 0, up to 600, not 'x'"),
        ("media-gateway", {"PARLEY_HTTP_PORT": "99999"}, "PARLEY_HTTP_PORT must be a whole number from 1 to 65535, not '99999'"),
        ("tts", {"PARLEY_TTS_THREADS": "0"}, "PARLEY_TTS_THREADS must be a whole number from 1 to 64, not '0'"),
        ("tts", {"PARLEY_PROVIDERS": "fake"}, "PARLEY_PROVIDERS must be one of 'real', 'fixed', not 'fake'"),
    ],
)
def test_the_issues_examples(service, env, message):
    with pytest.raises(SettingsError) as refused:
        SERVICES[service].from_env(env)
    assert message in str(refused.value)


@pytest.mark.parametrize(
    "module, env, variable",
    [
        ("parley_asr", {"PARLEY_ASR_THRESHOLD": "abc"}, "PARLEY_ASR_THRESHOLD"),
        ("parley_orchestrator", {"LLM_TIMEOUT": "x"}, "LLM_TIMEOUT"),
        ("parley_gateway", {"PARLEY_HTTP_PORT": "99999"}, "PARLEY_HTTP_PORT"),
        ("parley_tts", {"PARLEY_TTS_THREADS": "0"}, "PARLEY_TTS_THREADS"),
    ],
)
def test_a_service_refuses_to_start_with_one_line_naming_the_variable(module, env, variable):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PARLEY_", "LLM_", "TWILIO_", "NATS_"))}
    proc = subprocess.run([sys.executable, "-m", module], env={**clean, **env}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert variable in lines[0] and repr(env[variable]) in lines[0] and '"level": "error"' in lines[0]


def test_the_settings_docs_are_the_code():
    for path in (ROOT / "docs" / "SETTINGS.md", ROOT / "services" / "asr" / "README.md"):
        text = path.read_text()
        assert "<!-- parley config" in text
        assert config.regenerate(text) == text, f"regenerate: uv run parley config --write {path.relative_to(ROOT)}"
    documented = (ROOT / "docs" / "SETTINGS.md").read_text()
    for service in SERVICES:
        assert f"<!-- parley config {service} -->" in documented, f"docs/SETTINGS.md has no table for {service}"


def test_parley_config_masks_secrets_and_exits_2_on_a_refused_setting(capsys, monkeypatch):
    for k in [k for k in os.environ if k.startswith(("PARLEY_", "LLM_", "TWILIO_"))]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("PARLEY_API_KEY", "key-that-must-not-show")
    monkeypatch.setenv("LLM_API_KEY", "sk-must-not-show-either")
    monkeypatch.setenv("LLM_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("LLM_MODEL", "m")
    assert config.main([]) == 0
    out = capsys.readouterr().out
    assert "must-not-show" not in out and "PARLEY_API_KEY" in out and "LLM_API_KEY" in out and "********" in out
    assert config.main(["--json"]) == 0
    assert "must-not-show" not in capsys.readouterr().out
    monkeypatch.setenv("PARLEY_ASR_THRESHOLD", "5")
    assert config.main(["asr"]) == 2
    assert "asr: PARLEY_ASR_THRESHOLD must be a number from 0.05 to 0.95, not '5'" in capsys.readouterr().out


def test_repr_masks_secrets():
    gateway = SERVICES["media-gateway"].from_env({"PARLEY_API_KEY": "key-that-must-not-show", "TWILIO_AUTH_TOKEN": "tok-must-not-show"})
    assert "must-not-show" not in repr(gateway) and "must-not-show" not in str(gateway)
    assert set(gateway.secrets()) == {"key-that-must-not-show", "tok-must-not-show"}
