"""``parley scenarios`` as a user meets it without a stack: validating files,
clear errors and exit codes (2: bad file or usage, 3: no stack)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parley.natsd import free_port
from parley.scenarios import cli
from parley.scenarios.judge import Action, Record

ROOT = Path(__file__).resolve().parents[2]


def test_check_lists_the_shipped_suite(capsys):
    assert cli.main(["check", *map(str, sorted((ROOT / "scenarios").glob("*.yaml")))]) == 0
    out = capsys.readouterr().out
    assert "pause-before-the-day [pcm, twilio] 1 turn(s), 1 mid-turn pause(s)" in out
    assert "scenario(s) valid" in out


def test_a_bad_file_is_exit_2_with_where_it_is_wrong(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("scenarios:\n  - name: x\n    steps:\n      - say: hi\n        speed: 9\n")
    assert cli.main(["run", str(bad)]) == 2
    assert "scenarios[0].steps[0].speed: 9 is out of range" in capsys.readouterr().err
    assert cli.main(["check", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_unknown_transport_and_empty_selection_are_exit_2(capsys):
    f = str(ROOT / "scenarios" / "basics.yaml")
    assert cli.main(["run", f, "--transport", "sip"]) == 2
    assert "unknown transport" in capsys.readouterr().err
    assert cli.main(["run", f, "--only", "no-such-scenario"]) == 2
    assert "no scenario matches" in capsys.readouterr().err


def test_no_stack_is_exit_3_and_says_so(capsys):
    port = free_port()
    code = cli.main(["run", str(ROOT / "scenarios" / "basics.yaml"), "--only", "opening-hours", "--gateway", f"http://127.0.0.1:{port}", "--nats", f"nats://127.0.0.1:{port}"])
    assert code == 3
    assert "does not answer" in capsys.readouterr().err


def test_judge_reads_saved_calls_again(tmp_path, capsys):
    rec = Record("opening-hours", "pcm", session="s", actions=[Action(0, "say", 1.0, 2.0)], frames=[(2.5 + k * 0.02, 0.02, -20.0) for k in range(100)])
    rec.transcripts = {"after_first": "We're open Monday to Friday, from 9 a.m. to 5 p.m."}
    (tmp_path / "opening-hours.pcm.json").write_text(json.dumps({"record": rec.to_json()}))
    out = tmp_path / "judged.json"
    assert cli.main(["judge", str(ROOT / "scenarios" / "basics.yaml"), "--records", str(tmp_path), "--json", str(out)]) == 0
    assert "PASS  pcm    opening-hours  (v2v 500 ms)" in capsys.readouterr().out
    assert json.loads(out.read_text())["summary"]["pcm"]["v2v_p50_ms"] == 500.0
    (tmp_path / "opening-hours.pcm.json").write_text(json.dumps({"record": Record("opening-hours", "pcm", actions=[Action(0, "say", 1.0, 2.0)]).to_json()}))
    assert cli.main(["judge", str(ROOT / "scenarios" / "basics.yaml"), "--records", str(tmp_path)]) == 1
    assert "FAILED answered: no agent audio" in capsys.readouterr().out


@pytest.mark.parametrize("given, ws, http", [("http://h:1", "ws://h:1", "http://h:1"), ("wss://h/", "wss://h", "https://h"), ("h:8080", "ws://h:8080", "http://h:8080")])
def test_gateway_urls(given, ws, http):
    assert cli._urls(given) == (ws, http)


def test_a_twilio_call_is_dialled_through_the_signed_webhook():
    """The runner signs the voice webhook as Twilio does (HMAC-SHA1 over the
    URL and the sorted form fields, keyed with the auth token) and takes the
    stream URL and parameters from the TwiML."""
    import base64
    import hashlib
    import hmac
    import threading
    import urllib.parse
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from parley.scenarios.line import dial_webhook

    token = "secret-token"
    seen = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            form = dict(urllib.parse.parse_qsl(body))
            url = f"http://127.0.0.1:{self.server.server_port}{self.path}"
            data = url + "".join(k + form[k] for k in sorted(form))
            expected = base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()
            seen["ok"] = hmac.compare_digest(expected, self.headers.get("X-Twilio-Signature", ""))
            seen["form"] = form
            twiml = (
                '<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="wss://example.test/twilio/media">'
                '<Parameter name="token" value="t1"/><Parameter name="greeting" value=""/></Stream></Connect></Response>'
            )
            self.send_response(200 if seen["ok"] else 403)
            self.send_header("Content-Type", "text/xml")
            self.end_headers()
            self.wfile.write(twiml.encode())

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url, params = dial_webhook(f"http://127.0.0.1:{server.server_port}", token, "CA123", {"greeting": "", "scenario_call": "abc"})
    finally:
        server.shutdown()
    assert seen["ok"] and seen["form"]["CallSid"] == "CA123"
    assert url == "wss://example.test/twilio/media" and params == {"token": "t1", "greeting": ""}
