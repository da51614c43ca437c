"""``parley``: command-line tools for recorded sessions.

    parley replay SESSION_ID [--nats URL]   re-reduce a session from the event log
    parley replay FILE.jsonl                re-reduce an exported log
    parley export SESSION_ID [--nats URL]   print the log as JSON lines
    parley sessions [--nats URL]            list recorded sessions
    parley usage SESSION_ID [--prices P]    what the call used of each provider, and its estimated
                                            cost (prices: PARLEY_PRICES, a JSON file or
                                            provider.unit=price,...; parley_orchestrator/usage.py)
    parley call +15551234567 [options]     place an outbound call through the gateway
                                            (POST /api/calls; PARLEY_API_KEY, PARLEY_GATEWAY_URL)
    parley scenarios run FILE...            drive scenario calls through a running stack
                                            (``parley scenarios --help``; docs/SCENARIOS.md)
    parley talk [--gateway URL]             a conversation with this machine's microphone and
                                            speakers, over /ws/pcm (Ctrl-C hangs up)
    parley config [SERVICE...]              every service's effective settings, secrets masked;
                                            exit 2 if any would refuse them (docs/SETTINGS.md)

``replay`` exits 0 when every command, transition and drop is identical,
1 on any mismatch, and 2 when the log was recorded under other reducer rules
(an older release) and the rule changes made it decide differently.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from parley import bus, contract, natsauth, session_params, subjects

from .records import decode_stored, read_step
from .replay import from_jsonl, replay, state_digest, timeline, to_jsonl


async def fetch(session: str, url: str, credentials: natsauth.Credentials | None = None) -> tuple[list[contract.Step], str | None]:
    """A session's log from JetStream, and the digest of its state in KV.

    The state is read first: it records how many events it has consumed, and
    the log is read up to exactly that many, so a session that is still live
    (a timer firing, a hang-up arriving) cannot put the two out of step.
    """
    nc = await bus.connect(url, name="parley-cli", credentials=credentials)
    try:
        js = nc.jetstream()
        digest, consumed = None, None
        try:
            kv = await js.key_value(subjects.SESSIONS_BUCKET)
            stored = decode_stored((await kv.get(session)).value)
            digest, consumed = state_digest(stored.state), stored.consumed
        except Exception:  # noqa: BLE001 - state may have expired; replay still checks every step
            pass
        steps: list[contract.Step] = []
        sub = await js.subscribe(subjects.log(session), ordered_consumer=True)
        try:
            while consumed is None or len(steps) < consumed:
                try:
                    msg = await sub.next_msg(timeout=2)
                except TimeoutError:
                    break
                steps.append(read_step(msg.data))
                if consumed is None and msg.metadata.num_pending == 0:
                    break
        finally:
            await sub.unsubscribe()
        return steps[:consumed] if consumed is not None else steps, digest
    finally:
        await nc.close()


async def list_sessions(url: str, credentials: natsauth.Credentials | None = None) -> list[str]:
    nc = await bus.connect(url, name="parley-cli", credentials=credentials)
    try:
        kv = await nc.jetstream().key_value(subjects.SESSIONS_BUCKET)
        try:
            return sorted(await kv.keys())
        except Exception:  # noqa: BLE001 - no keys
            return []
    finally:
        await nc.close()


# long: the `parley` command: its subcommands (replay, export, sessions, usage, scenarios, config, talk) declared and dispatched, one branch each
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["scenarios"]:
        return scenarios(argv[1:])
    if argv[:1] == ["talk"]:
        try:
            from parley.talk import main as talk
        except ImportError as exc:
            print(f"parley talk needs the parley[talk] extra ({exc.name} is missing): pip install 'parley[talk]'", file=sys.stderr)
            return 2
        return talk(argv[1:])
    if argv[:1] == ["config"]:
        from parley.config import main as config

        return config(argv[1:])
    parser = argparse.ArgumentParser(prog="parley", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nats", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_replay = sub.add_parser("replay", help="re-reduce a session and verify the commands")
    p_replay.add_argument("source", help="a session id or a .jsonl file")
    p_replay.add_argument("--quiet", action="store_true", help="print only the verdict")
    p_export = sub.add_parser("export", help="print a session's log as JSON lines")
    p_export.add_argument("session")
    sub.add_parser("sessions", help="list sessions with state in KV")
    p_usage = sub.add_parser("usage", help="a session's provider usage and its estimated cost")
    p_usage.add_argument("session")
    p_usage.add_argument("--prices", default=os.environ.get("PARLEY_PRICES", ""), help="JSON file, JSON text, or provider.unit=price,... (default: PARLEY_PRICES)")
    p_usage.add_argument("--json", action="store_true", help="the lines as JSON")
    sub.add_parser("scenarios", help="run scenario files against a stack (parley scenarios --help)")
    sub.add_parser("config", help="every service's effective settings, secrets masked (parley config --help)")
    sub.add_parser("talk", help="talk to the agent with this machine's microphone and speakers (parley talk --help)")
    p_call = sub.add_parser("call", help="place an outbound call (the gateway's POST /api/calls)")
    p_call.add_argument("to", help="the number to call, E.164: +15551234567")
    p_call.add_argument("--from", dest="from_", default="", help="the caller id (default: the gateway's TWILIO_CALLER_ID)")
    p_call.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a session parameter (greeting, system_prompt...)")
    p_call.add_argument("--voicemail-message", default="", help="left on an answering machine after the beep (default: hang up on machines)")
    p_call.add_argument("--gateway", default=os.environ.get("PARLEY_GATEWAY_URL", "http://127.0.0.1:8080"))
    args = parser.parse_args(argv)

    if args.cmd == "call":
        return place_call(args)

    try:
        creds = natsauth.operator_credentials(os.environ)
    except ValueError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return 2
    if args.cmd == "sessions":
        print("\n".join(asyncio.run(list_sessions(args.nats, creds))))
        return 0
    if args.cmd == "usage":
        return show_usage(args, creds)
    if args.cmd == "export":
        steps, digest = asyncio.run(fetch(args.session, args.nats, creds))
        sys.stdout.write(to_jsonl(steps, digest))
        return 0 if steps else 1
    source = Path(args.source)
    if source.suffix == ".jsonl" or source.exists():
        steps, digest = from_jsonl(source.read_text())
    else:
        steps, digest = asyncio.run(fetch(args.source, args.nats, creds))
    if not steps:
        print(f"no recorded events for {args.source}", file=sys.stderr)
        return 1
    result = replay(steps, digest)
    text = timeline(result)
    print(text.splitlines()[-1] if args.quiet else text)
    return 0 if result.ok else 1 if result.same_rules else 2


def show_usage(args: argparse.Namespace, creds) -> int:
    import json

    from . import usage

    try:
        prices = usage.parse_prices(args.prices)
    except ValueError as exc:
        print(f"parley usage: {exc}", file=sys.stderr)
        return 2
    steps, _ = asyncio.run(fetch(args.session, args.nats, creds))
    if not steps:
        print(f"no recorded events for {args.session}", file=sys.stderr)
        return 1
    lines = usage.priced(usage.totals(steps), prices)
    if args.json:
        print(json.dumps([{**l.__dict__, "cost": l.cost} for l in lines]))
    else:
        print(usage.render(args.session, lines))
    return 0


def place_call(args: argparse.Namespace) -> int:
    """POST /api/calls with the API key from PARLEY_API_KEY; prints the
    session id to watch (and replay) the call by."""
    import httpx

    key = os.environ.get("PARLEY_API_KEY", "")
    if not key:
        print("parley call: set PARLEY_API_KEY (the gateway's API key)", file=sys.stderr)
        return 2
    try:
        params = session_params.from_command_line(args.param)
    except ValueError as exc:
        print(f"parley call: {exc}", file=sys.stderr)
        return 2
    body = {"to": args.to, "params": params, **({"from": args.from_} if args.from_ else {}), **({"voicemail_message": args.voicemail_message} if args.voicemail_message else {})}
    try:
        r = httpx.post(f"{args.gateway.rstrip('/')}/api/calls", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30, trust_env=False)
    except httpx.HTTPError as exc:
        print(f"parley call: the gateway at {args.gateway} did not answer: {exc}", file=sys.stderr)
        return 1
    answer = r.json() if r.headers.get("content-type", "").startswith("application/json") else {"error": r.text}
    if r.status_code != 201:
        print(f"parley call: {answer.get('error', r.text)} (HTTP {r.status_code})", file=sys.stderr)
        return 1
    print(f"calling {args.to}: session {answer['session']} (Twilio call {answer['call_sid']}, {answer['status']})")
    return 0


def scenarios(argv: list[str]) -> int:
    """The scenario runner is a client tool in the shared library, with its
    own dependencies (Piper, Whisper, websockets): imported only when used."""
    try:
        import websockets  # noqa: F401
        import yaml  # noqa: F401

        from parley.scenarios.cli import main as run
    except ImportError as exc:
        print(f"parley scenarios needs the parley[scenarios] extra ({exc.name} is missing): pip install 'parley[scenarios]'", file=sys.stderr)
        return 2
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
