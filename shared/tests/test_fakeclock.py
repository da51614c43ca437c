"""Children share the parent's faked clock (see parley.fakeclock)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from parley.fakeclock import child_env


def test_nothing_changes_outside_faketime():
    assert child_env({}) == {}
    assert child_env({"FAKETIME": "+2d"}) == {}


def test_a_child_started_later_reads_the_same_faked_clock():
    if shutil.which("faketime") is None:
        pytest.skip("Debian's faketime is installed by deploy/system-deps.sh during make test")
    probe = (
        "import os, subprocess, sys, time\n"
        "from parley.fakeclock import child_env\n"
        "time.sleep(1.5)\n"
        "child = [sys.executable, '-c', 'import time; print(time.time())']\n"
        "plain = float(subprocess.check_output(child))\n"
        "shared = float(subprocess.check_output(child, env={**os.environ, **child_env(os.environ)}))\n"
        "print(time.time() - plain, time.time() - shared)\n"
    )
    out = subprocess.check_output(["faketime", "-f", "@2026-11-28 09:30:00", sys.executable, "-c", probe], env=os.environ)
    behind_plain, behind_shared = map(float, out.split())
    assert behind_plain > 1.0  # the trap: a plain child restarts the faked clock
    assert behind_shared < 0.5  # a child given child_env does not
