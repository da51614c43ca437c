"""parley talk without a conversation: what it shows, and a machine with no sound device."""

from __future__ import annotations

import io
import sys
import types

from parley import session_params, talk


def test_no_sound_device_is_said_clearly_and_exits_2(monkeypatch, capsys):
    fake = types.ModuleType("sounddevice")

    def no_device(**kwargs):
        raise ValueError("Error querying device -1")

    fake.check_input_settings = no_device
    fake.check_output_settings = no_device
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    assert talk.main(["--gateway", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "parley talk: no sound device: no usable microphone and speakers: Error querying device -1" in err


def test_without_portaudio_it_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import fails
    assert talk.main(["--gateway", "http://127.0.0.1:9"]) == 2
    assert "sounddevice package is not installed" in capsys.readouterr().err


def test_a_param_that_is_not_name_equals_value_is_refused_by_name(capsys):
    assert talk.main(["--gateway", "http://127.0.0.1:9", "--param", "greeting=Hi, there", "--param", "reprompt_after"]) == 2
    assert "parley talk: --param takes NAME=VALUE, not 'reprompt_after'" in capsys.readouterr().err
    assert session_params.from_command_line(["greeting=a=b", "x="]) == {"greeting": "a=b", "x": ""}


def test_the_screen_shows_words_states_and_cuts():
    out = io.StringIO()
    screen = talk.Screen(out)
    for notice in [
        {"type": "state", "state": "Listening"},
        {"type": "transcript", "final": False, "text": "I'd like"},  # not a tty: partials are not drawn
        {"type": "transcript", "final": True, "text": "I'd like to book."},
        {"type": "agent_text", "run": 1, "chunk": 0, "text": "Sure."},
        {"type": "interrupted", "run": 1},
        {"type": "end", "reason": "goodbye"},
    ]:
        screen.show(notice)
    assert screen.lines == ["       [Listening]", "you:   I'd like to book.", "agent: Sure.", "       (you cut in: the agent stops)", "the agent ended the call (goodbye)"]
    assert out.getvalue().splitlines() == screen.lines


def test_the_speaker_plays_in_order_pads_with_silence_and_clears():
    s = talk._Speaker()
    s.push(b"\x01\x00" * 3)
    assert s.pull(4) == b"\x01\x00\x01\x00" and s.pull(4) == b"\x01\x00\x00\x00"
    s.push(b"\x02\x00" * 10)
    s.clear()
    assert s.pull(4) == b"\x00" * 4


def test_ctrl_c_hangs_up_at_the_gateway_and_says_so(tmp_path):
    """A real SIGINT to a running ``parley talk`` (an injected device, a stand-in of
    the gateway's /ws/pcm): the gateway is told ``hangup`` and the terminal says "hung up"."""
    import asyncio
    import json
    import os
    import signal
    import subprocess

    from websockets.asyncio.server import serve

    script = (
        "import sys, numpy as np\n"
        "from parley import talk\n"
        "device = talk.Injected(np.zeros(16000 * 60, np.int16))\n"
        "sys.exit(talk.main(['--gateway', sys.argv[1], '--token', 'tok'], device=device))\n"
    )

    async def main():
        got: dict = {"audio": 0, "text": [], "path": None}
        audio_flows = asyncio.Event()
        closed = asyncio.Event()

        async def gateway(ws):
            got["path"] = ws.request.path
            await ws.send(json.dumps({"type": "session", "session": "pcm-test"}))
            try:
                async for msg in ws:
                    if isinstance(msg, bytes):
                        got["audio"] += len(msg)
                        if got["audio"] >= 640 * 10:
                            audio_flows.set()
                    else:
                        got["text"].append(json.loads(msg))
            finally:
                closed.set()

        async with serve(gateway, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", script, f"http://127.0.0.1:{port}", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"},
                # As a terminal starts it: a test run started in the background
                # (`cmd &` in a script) ignores SIGINT, and a child inherits that.
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )  # fmt: skip
            try:
                await asyncio.wait_for(audio_flows.wait(), 30)
                proc.send_signal(signal.SIGINT)
                ended = asyncio.ensure_future(proc.communicate())
                if not (await asyncio.wait({ended}, timeout=30))[0]:  # still running: every thread's stack (faulthandler)
                    proc.send_signal(signal.SIGABRT)
                    out, err = await ended
                    raise AssertionError(f"parley talk did not end 30 s after Ctrl-C:\n{err.decode()[-4000:]}")
                out, err = ended.result()
                await asyncio.wait_for(closed.wait(), 10)
            finally:
                if proc.returncode is None:
                    proc.kill()
        return got, proc.returncode, out.decode(), err.decode()

    got, code, out, err = asyncio.run(main())
    assert got["path"] == "/ws/pcm?token=tok"
    assert {"type": "hangup"} in got["text"], got["text"]
    assert code == 0 and "hung up" in out and "Traceback" not in err, (code, out, err)
