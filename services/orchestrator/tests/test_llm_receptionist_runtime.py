"""The receptionist inside the real orchestrator: a real nats-server, the
runtime and reducer, the appointment book on SQLite. Two caller turns, the
details spread over both; the booking goes through a real tool call and the
confirmation is sent to TTS. This checks the receptionist against the
messages the reducer really builds (system prompt with today's date, history,
the tool step), not against hand-made ones. The clinic is in New York and the
session starts late on Tuesday there, already Wednesday in UTC: "tomorrow" is
the clinic's Wednesday."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from zoneinfo import ZoneInfo

from parley import bus, contract as c, subjects
from parley.clock import Clock
from parley.natsd import NatsServer, free_port
from parley_orchestrator.adapters.receptionist import Receptionist
from parley_orchestrator.app import SYSTEM_PROMPT
from parley_orchestrator.runtime import Runtime
from parley_orchestrator.appointments import default_registry

NEW_YORK = ZoneInfo("America/New_York")
TUESDAY_EVENING = dt.datetime(2026, 11, 24, 22, 0, tzinfo=NEW_YORK)  # 03:00 on Wednesday in UTC


async def _wait(pred, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.02)
    raise TimeoutError


def test_two_turns_through_the_runtime_book_an_appointment(tmp_path):
    registry = default_registry(tmp_path / "appointments.sqlite3", clock=Clock.fixed(TUESDAY_EVENING))

    async def scenario(url: str):
        nc = await bus.connect(url)
        # The brain's own clock is wrong on purpose: the date comes from the
        # system prompt, which the runtime fills from its clock (the clinic's zone).
        brain = Receptionist(clock=Clock.fixed(dt.datetime(1999, 1, 1)))
        rt = Runtime(nc=nc, brain=brain, tools=registry, defaults={"system_prompt": SYSTEM_PROMPT}, clock=Clock(NEW_YORK))
        await rt.start()
        synth: list[c.Synthesize] = []

        async def on_tts(msg):
            synth.append(c.decode_command(msg.data))

        await nc.subscribe(subjects.TTS_REQUEST, cb=on_tts)
        at = TUESDAY_EVENING.timestamp()  # the prompt's date comes from the session's start, in the clinic's zone
        await bus.publish_event(nc, c.SessionStarted(session="r1", at=at))

        async def turn(utterance: int, text: str) -> str:
            await bus.publish_event(nc, c.SpeechStarted(session="r1", at=at, utterance=utterance))
            await bus.publish_event(nc, c.SpeechStopped(session="r1", at=at, utterance=utterance))
            await bus.publish_event(nc, c.TranscriptFinal(session="r1", at=at, utterance=utterance, text=text))
            run = utterance + 1  # no greeting: one run per caller turn

            def said() -> str:
                return " ".join(s.text for s in synth if s.run == run)

            await _wait(lambda: said().rstrip().endswith("?"))
            # The caller hears every chunk to the end: the run finishes.
            for s in [s for s in synth if s.run == run]:
                await bus.publish_event(nc, c.PlaybackProgress(session="r1", at=at, run=run, chunk=s.chunk, finished=True))
            return said()

        first = await turn(0, "Hi, I'd like to make an appointment.")
        second = await turn(1, "Tomorrow at three p.m.")
        await rt.stop()
        await nc.close()
        return first, second

    with NatsServer(free_port(), tmp_path / "nats") as server:
        first, second = asyncio.run(scenario(server.url))
    assert "What day and time would suit you?" in first
    assert "You're booked for tomorrow, Wednesday the 25th, at 3 p.m." in second
    book = registry._tools["book_appointment"].handler.__self__
    assert [(a["date"], a["time"]) for a in book.appointments()] == [("2026-11-25", "15:00")]
