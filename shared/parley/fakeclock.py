"""One faked clock for a whole process tree under libfaketime.

``faketime -f '@DATE' CMD`` (Debian's ``faketime``) starts every process's
clock at DATE when *that process* starts. A service spawned 3 s after its
parent therefore runs 3 s behind it, and every time compared across processes
(latency, a recording's cut, a stored timer deadline taken over by another
replica) is off by the spawn delay, which no real deployment's NTP-synced
machines would show. ``child_env`` gives a child the parent's faked *current*
time instead. Outside faketime it changes nothing.
"""

from __future__ import annotations

import datetime as dt
from typing import Mapping


def child_env(env: Mapping[str, str]) -> dict[str, str]:
    """Variables to add to a child's environment so it shares our faked clock."""
    if not env.get("FAKETIME", "").startswith("@"):
        return {}
    return {"FAKETIME": "@" + dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")}
