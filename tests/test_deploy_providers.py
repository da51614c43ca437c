"""docker compose with cloud providers: their settings reach asr and tts, and
only the providers' override file lets those two out of the internal network."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def config(*files: str, env: dict | None = None) -> dict:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose is not installed (deploy/system-deps.sh installs it)")
    args = [exe] + [a for f in files for a in ("-f", f)] + ["config"]
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_provider_settings_reach_the_services_and_the_override_opens_the_way_out():
    env = {"PARLEY_ASR": "deepgram", "ASR_API_KEY": "k1", "PARLEY_TTS": "cartesia", "TTS_API_KEY": "k2", "TTS_VOICE": "v"}
    plain = config("docker-compose.yml", env=env)
    assert plain["services"]["asr"]["environment"]["PARLEY_ASR"] == "deepgram"
    assert plain["services"]["tts"]["environment"]["TTS_VOICE"] == "v"
    assert set(plain["services"]["asr"]["networks"]) == {"bus"} and set(plain["services"]["tts"]["networks"]) == {"bus"}
    cloud = config("docker-compose.yml", "docker-compose.providers.yml", env=env)
    assert set(cloud["services"]["asr"]["networks"]) == {"bus", "edge"} and set(cloud["services"]["tts"]["networks"]) == {"bus", "edge"}
    assert set(cloud["services"]["orchestrator"]["networks"]) == set(plain["services"]["orchestrator"]["networks"])
