"""Who this process is: ids built from the environment, safe as NATS tokens.

A worker's id ends up in subjects (``parley.asr.alive.<id>``) and in messages,
so it must be one subject token ([A-Za-z0-9_-], see ``subjects.session_token``)
whatever the machine is called: a Mac is ``Johns-MacBook-Pro.local``, a
container may be named anything, a host name may be upper case or not ASCII.
``instance_id`` folds the host name into a token; ``worker_token`` checks an
id someone set by hand (the settings' error then names the variable).
"""

from __future__ import annotations

import os
import re
import socket
import unicodedata
import uuid

from . import subjects

HOST_CHARS = 32  # of the host name kept in an id: ids stay well under the 64 a token may have


def token(text: str, limit: int = HOST_CHARS, fallback: str = "host") -> str:
    """``text`` as a subject token: accents dropped, lower case, anything but
    [a-z0-9_-] (dots included) turned into '-', at most ``limit`` characters."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    folded = re.sub(r"[^a-z0-9_-]+", "-", ascii_text.lower())
    folded = re.sub(r"-{2,}", "-", folded).strip("-")[:limit].strip("-")
    return folded or fallback


def instance_id(kind: str, host: str | None = None, pid: int | None = None) -> str:
    """``<kind>-<host>-<pid>-<random>``, e.g. ``asr-johns-macbook-pro-local-4711-9f3a2c``."""
    host = socket.gethostname() if host is None else host
    pid = os.getpid() if pid is None else pid
    return subjects.session_token(f"{token(kind, 16, 'svc')}-{token(host)}-{pid}-{uuid.uuid4().hex[:6]}")


def worker_token(value: str) -> str:
    """A worker id someone set by hand (PARLEY_ASR_WORKER_ID...), checked: a
    settings validator, so the error names the variable."""
    from .settings import Invalid

    try:
        return subjects.session_token(value)
    except ValueError:
        raise Invalid("1 to 64 letters, digits, '-' or '_' (it is used as a NATS subject token)") from None
