"""The receptionist does the job, end to end over Twilio Media Streams.

Real processes and models: a caller dials in (signed webhook with ``From``,
then the media stream), books a slot, cancels it, and books the same slot
again, all by voice (Piper speech, μ-law 8 kHz, real time). Each step is
checked twice: in what the caller heard (Whisper transcribes the agent's
audio) and in the clinic's appointment book (the SQLite file in the stack's
data folder), which keeps the caller's number. The call-back list the
inspector shows is checked over the gateway's API.

The slot is "Thursday at 11 a.m.": whichever day the test runs, that is the
next Thursday (a week ahead on a Thursday), always an open day.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3

import httpx
import pytest

from speech import hear, normalise, say
from stack import Stack
from test_twilio_e2e import AUTH_TOKEN, dial, settle

pytestmark = pytest.mark.e2e

CALLER = "+15550004242"
INSPECT_TOKEN = "e2e-inspect-token"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with Stack(tmp_path_factory.mktemp("stack"), env={"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "PARLEY_INSPECT_TOKEN": INSPECT_TOKEN}) as s:
        yield s


def next_thursday(today: dt.date) -> str:
    return (today + dt.timedelta(days=(3 - today.weekday()) % 7 or 7)).isoformat()


def book_rows(stack: Stack) -> list[tuple[str, str, str, bool]]:
    conn = sqlite3.connect(stack.root / "data" / "appointments.sqlite3")
    try:
        rows = conn.execute("SELECT date, time, phone, cancelled_at IS NOT NULL FROM appointments ORDER BY id").fetchall()
    finally:
        conn.close()
    return [(d, t, p, bool(c)) for d, t, p, c in rows]


async def turn(caller, speech) -> str:
    """Say something, wait for the whole answer, return what the caller heard."""
    _, spoke_until = await caller.say(speech)
    await caller.wait_audio(after=spoke_until, timeout=40)
    await caller.wait_quiet(quiet=2.0, timeout=60, after=spoke_until)
    return normalise(hear(caller.played_audio(after=spoke_until), rate=8000))


def test_book_cancel_and_rebook_the_same_slot_by_phone(stack, capsys):
    # Synthesized before the call: Piper blocks the loop.
    lines = [
        say("Hi, I'd like to book a check-up on Thursday at eleven a.m.", rate=8000),
        say("Sorry, I need to cancel my appointment.", rate=8000),
        say("Yes please. Thursday at eleven a.m. again.", rate=8000),
    ]
    thursday = next_thursday(dt.date.fromisoformat(stack.now[:10]))  # the stack's pinned clinic day

    async def scenario():
        caller, session = await dial(stack, caller_number=CALLER)
        heard, books = [], []
        try:
            await settle(caller)
            for speech in lines:
                heard.append(await turn(caller, speech))
                books.append(book_rows(stack))
        finally:
            await caller.hang_up()
        return heard, books

    heard, books = asyncio.run(scenario())
    with capsys.disabled():
        print(f"\n[e2e receptionist] heard: {heard}")
    booked, cancelled, rebooked = heard
    # "You're booked" through μ-law: Whisper tiny sometimes writes "you're both".
    said_booked = ("book", "you re both")
    assert any(w in booked for w in said_booked) and "thursday" in booked and "11" in booked.split(), booked
    assert books[0] == [(thursday, "11:00", CALLER, False)]
    assert "cancel" in cancelled and "thursday" in cancelled, cancelled
    assert books[1] == [(thursday, "11:00", CALLER, True)]
    assert any(w in rebooked for w in said_booked) and "thursday" in rebooked and "11" in rebooked.split(), rebooked
    assert books[2] == [(thursday, "11:00", CALLER, True), (thursday, "11:00", CALLER, False)]


def test_a_request_it_cannot_serve_is_listed_for_the_front_desk(stack):
    question = say("Can I speak to a real person about my bill?", rate=8000)

    async def scenario():
        caller, session = await dial(stack, caller_number="+15550005151")
        try:
            await settle(caller)
            return session, await turn(caller, question)
        finally:
            await caller.hang_up()

    session, answer = asyncio.run(scenario())
    assert "call you back" in answer, answer
    r = httpx.get(f"{stack.gateway}/api/callbacks", headers={"Authorization": f"Bearer {INSPECT_TOKEN}"}, trust_env=False, timeout=10)
    assert r.status_code == 200, r.text
    (task,) = [c for c in r.json()["callbacks"] if c["session"] == session]
    assert task["phone"] == "+15550005151" and task["status"] == "open" and "bill" in task["reason"]
    assert httpx.get(f"{stack.gateway}/api/callbacks", trust_env=False, timeout=10).status_code == 403
