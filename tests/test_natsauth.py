"""The bus refuses who does not belong: a real nats-server with the
configuration ``parley.natsauth`` generates.

* a client without credentials (or with a key the server does not know) is
  refused at connect;
* each service can publish and subscribe exactly where the table says, for
  every subject in ``parley.subjects`` (checked against the server, not just
  the table), and the least-privilege rules the issue names hold in the table;
* a new subject in ``parley.subjects`` without a publisher and a subscriber
  here fails this test, not production;
* inboxes are per service: one cannot read another's replies.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import nats
import nats.errors
import pytest

from parley import natsauth, subjects
from parley.natsd import NatsServer, free_port

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("gateway", "asr", "tts", "orchestrator")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("natsauth")
    password = secrets.token_urlsafe(12)
    made = natsauth.ensure(root / "secrets", ROOT / "deploy" / "nats.conf", [natsauth.user_block("test", user="test", password=password)])
    srv = NatsServer(free_port(), root / "nats", made.config).start(log=root / "nats.log")
    try:
        yield srv, made, password, root
    finally:
        srv.stop()


def _concrete(pattern: str) -> str:
    return ".".join("s1" if t == "*" else "x" if t == ">" else t for t in pattern.split("."))


class Client:
    """A role's connection that records the server's permission errors."""

    def __init__(self):
        self.errors: list[str] = []
        self.nc = None

    async def connect(self, url: str, **options) -> "Client":
        async def on_error(exc):
            self.errors.append(str(exc))

        self.nc = await nats.connect(url, error_cb=on_error, allow_reconnect=False, max_reconnect_attempts=0, **options)
        return self


async def _as(role: str, srv, made) -> Client:
    return await Client().connect(srv.url, **natsauth.Credentials(seed=made.seeds[role], role=role).connect_options())


# ---------------------------------------------------------------- the table


def test_every_subject_has_a_publisher_and_a_subscriber():
    patterns = natsauth.subject_patterns()
    assert len(patterns) >= 15, patterns  # the function picks them all up
    orphans = []
    filters = {f for fs in natsauth.STREAMS.values() for f in fs}
    for name, pattern in patterns.items():
        # A stream's filter, or the load reports (each kind publishes only its
        # own, parley.load.<kind>.*): some service must publish into it.
        if pattern in filters or pattern == subjects.LOAD_ALL:
            pubs = [r for r in natsauth.ROLES if any(natsauth.intersects(a, pattern) for a in natsauth.ROLES[r].publish)]
        else:
            pubs = [r for r in natsauth.ROLES if natsauth.may_publish(r, pattern)]
        subs = [r for r in natsauth.ROLES if natsauth.may_subscribe(r, pattern)] + natsauth.stored_by(pattern)
        if not pubs or not subs:
            orphans.append(f"{name} = {pattern}: publishers {pubs}, subscribers {subs}")
    assert not orphans, "subjects no service may use (add them to natsauth.ROLES):\n" + "\n".join(orphans)


def test_least_privilege_as_the_issue_states_it():
    may_pub, may_sub = natsauth.may_publish, natsauth.may_subscribe
    tts_audio = subjects.tts_audio("s1", 3)
    # Only TTS speaks into a call; only the gateway hears it.
    assert [r for r in natsauth.ROLES if may_pub(r, tts_audio)] == ["tts"]
    assert [r for r in natsauth.ROLES if may_sub(r, tts_audio)] == ["gateway"]
    # Load reports: each kind reports only as itself; the gateways read them all.
    assert [r for r in natsauth.ROLES if may_pub(r, subjects.load("asr", "asr-1"))] == ["asr"]
    assert [r for r in natsauth.ROLES if may_sub(r, subjects.load("tts", "tts-1"))] == ["gateway"]
    # The gateway may not command TTS; TTS may not read callers' audio.
    assert not may_pub("gateway", subjects.TTS_REQUEST)
    assert not may_sub("tts", subjects.audio_in("s1"))
    # Callers' audio (as PCM, and as the carrier sent it): the gateway publishes it, ASR alone hears it.
    for subject in (subjects.audio_in("s1"), subjects.audio_native("s1")):
        assert [r for r in natsauth.ROLES if may_pub(r, subject)] == ["gateway"], subject
        assert [r for r in natsauth.ROLES if may_sub(r, subject)] == ["asr"], subject
    assert not may_sub("tts", subjects.audio_native("s1")) and not may_sub("orchestrator", subjects.audio_native("s1"))
    # Playback commands and the event log come from the orchestrator alone.
    for subject in (subjects.playback("s1"), subjects.log("s1"), subjects.observe("s1"), subjects.TTS_REQUEST):
        assert [r for r in natsauth.ROLES if may_pub(r, subject)] == ["orchestrator"], subject
    # Nobody subscribes to everything, nobody publishes to every session's subjects at once.
    for role in natsauth.ROLES:
        assert not may_sub(role, ">") and not may_sub(role, "parley.>") and not may_sub(role, "_INBOX.>"), role
        assert not may_pub(role, ">") and not may_pub(role, "$JS.API.>"), role
    # The people's tools read; they write nothing.
    assert not any(may_pub("operator", p) for p in natsauth.subject_patterns().values() if p != subjects.ORCHESTRATOR_INFO)


def test_jetstream_api_is_scoped_to_each_services_own_streams():
    js = lambda role, subject: natsauth.may_publish(role, subject)  # noqa: E731
    assert js("orchestrator", f"$JS.API.CONSUMER.MSG.NEXT.{subjects.EVENTS_STREAM}.evt-3")
    assert not js("gateway", f"$JS.API.CONSUMER.MSG.NEXT.{subjects.EVENTS_STREAM}.evt-3")
    assert not js("asr", f"$JS.API.DIRECT.GET.{subjects.EVENTS_STREAM}")
    # The catch-up reads a session's events from the stream's leader when it has copies.
    assert js("orchestrator", f"$JS.API.STREAM.MSG.GET.{subjects.EVENTS_STREAM}") and not js("gateway", f"$JS.API.STREAM.MSG.GET.{subjects.EVENTS_STREAM}")
    assert not js("gateway", f"$KV.{subjects.SESSIONS_BUCKET}.s1")  # no writing another's state
    for role in natsauth.ROLES:
        for verb in ("STREAM.DELETE", "STREAM.PURGE", "CONSUMER.DELETE"):
            assert not js(role, f"$JS.API.{verb}.{subjects.EVENTS_STREAM}" + (".evt-0" if verb.startswith("CONSUMER") else "")), (role, verb)
        assert not js(role, f"$JS.API.STREAM.DELETE.{subjects.LOG_STREAM}"), role


def test_matches_follows_nats_wildcards():
    m = natsauth.matches
    assert m("a.*", "a.b") and not m("a.*", "a.b.c") and m("a.>", "a.b.c") and not m("a.>", "a")
    assert m("a.*.c", "a.*.c") and not m("a.b.c", "a.*.c") and not m("a.*", "a.>")
    i = natsauth.intersects
    assert i("a.*", "a.>") and i("a.b", "a.*") and not i("a.b", "a.c") and not i("a.*", "a.b.c") and i("a.>", "a.b.c")


# ---------------------------------------------------------------- the server


def test_a_client_without_credentials_is_refused(server):
    srv, made, _, _ = server

    async def attempt(**options):
        try:
            nc = await nats.connect(srv.url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=3, **options)
        except Exception as exc:  # noqa: BLE001
            return str(exc)
        await nc.close()
        return "connected"

    assert "authorization violation" in asyncio.run(attempt()).lower()
    assert "authorization violation" in asyncio.run(attempt(nkeys_seed_str=natsauth.new_seed())).lower()  # a key it does not know
    assert "authorization violation" in asyncio.run(attempt(user="test", password="wrong")).lower()
    assert asyncio.run(attempt(nkeys_seed_str=made.seeds["asr"])) == "connected"


def test_the_server_enforces_the_table_for_every_subject_and_service(server):
    """Publish to a concrete subject of every pattern as every role, and
    subscribe the same way: the server lets through exactly what the table
    allows (checked from a test client that sees everything)."""
    srv, made, password, _ = server
    patterns = sorted(set(natsauth.subject_patterns().values()))

    async def run():
        watcher = await Client().connect(f"nats://test:{password}@127.0.0.1:{srv.port}")
        got: list[str] = []

        async def seen(msg):
            got.append(msg.subject + "|" + msg.data.decode())

        await watcher.nc.subscribe(">", cb=seen)
        clients = {role: await _as(role, srv, made) for role in natsauth.ROLES}
        received: dict[tuple[str, str], list] = {}
        for role, c in clients.items():
            for pattern in patterns:
                subject = _concrete(pattern)
                await c.nc.publish(subject, f"{role}".encode())
                box = received[(role, subject)] = []

                async def sink(msg, box=box):
                    box.append(msg)

                try:
                    await c.nc.subscribe(subject, cb=sink)
                except nats.errors.Error:
                    pass
            await c.nc.flush()
        await asyncio.sleep(0.5)
        for pattern in patterns:
            await watcher.nc.publish(_concrete(pattern), b"from-test")
        await watcher.nc.flush()
        await asyncio.sleep(0.5)
        wrong = []
        for role, c in clients.items():
            for pattern in patterns:
                subject = _concrete(pattern)
                published = f"{subject}|{role}" in got
                if published != natsauth.may_publish(role, subject):
                    wrong.append(f"{role} publish {subject}: server {'allowed' if published else 'refused'}")
                heard = any(m.data == b"from-test" for m in received[(role, subject)])
                # Queue-group subjects may only be subscribed in their group.
                queue_only = any(s.startswith(subject + " ") for s in natsauth.ROLES[role].subscribe)
                expect = natsauth.may_subscribe(role, subject) and not queue_only
                if heard != expect:
                    wrong.append(f"{role} subscribe {subject}: server {'allowed' if heard else 'refused'}")
            if any(not natsauth.may_publish(role, _concrete(p)) for p in patterns):
                assert any("permissions violation" in e.lower() for e in c.errors), (role, c.errors[:3])
        for c in (*clients.values(), watcher):
            await c.nc.close()
        return wrong

    wrong = asyncio.run(run())
    assert not wrong, "\n".join(wrong)


def test_queue_groups_are_enforced(server):
    """ASR may take claims only as a member of the ASR group (so a second,
    plain subscriber cannot see every claim)."""
    srv, made, password, _ = server

    async def run():
        asr = await _as("asr", srv, made)
        test = await Client().connect(f"nats://test:{password}@127.0.0.1:{srv.port}")
        in_group, plain = [], []

        async def grp(msg):
            in_group.append(msg)

        async def pl(msg):
            plain.append(msg)

        await asr.nc.subscribe(subjects.ASR_CLAIM, queue=subjects.ASR_GROUP, cb=grp)
        await asr.nc.subscribe(subjects.ASR_CLAIM, queue="other", cb=pl)
        await asr.nc.subscribe(subjects.ASR_CLAIM, cb=pl)
        await asr.nc.flush()
        await asyncio.sleep(0.2)
        await test.nc.publish(subjects.ASR_CLAIM, b"claim")
        await test.nc.flush()
        await asyncio.sleep(0.3)
        await asr.nc.close()
        await test.nc.close()
        return len(in_group), len(plain), asr.errors

    n_group, n_plain, errors = asyncio.run(run())
    assert (n_group, n_plain) == (1, 0)
    assert any("subscription" in e.lower() for e in errors), errors


def test_replies_reach_only_their_requester(server):
    """Request/reply works across services (the gateway claims an ASR
    worker), and one service cannot listen to another's inbox."""
    srv, made, _, _ = server

    async def run():
        gateway, asr, tts = [await _as(r, srv, made) for r in ("gateway", "asr", "tts")]

        async def answer(msg):
            await msg.respond(b"claimed")

        await asr.nc.subscribe(subjects.ASR_CLAIM, queue=subjects.ASR_GROUP, cb=answer)
        stolen = []

        async def steal(msg):
            stolen.append(msg)

        await tts.nc.subscribe(natsauth.inbox(natsauth.public_key(made.seeds["gateway"])) + ".>", cb=steal)
        await tts.nc.subscribe("_INBOX.>", cb=steal)
        await asr.nc.flush()
        await tts.nc.flush()
        reply = await gateway.nc.request(subjects.ASR_CLAIM, b"s1", timeout=3)
        # ASR may answer a request it got, but not write into the gateway's inbox uninvited.
        await asr.nc.publish(natsauth.inbox(natsauth.public_key(made.seeds["gateway"])) + ".forged", b"x")
        await asr.nc.flush()
        await asyncio.sleep(0.3)
        for c in (gateway, asr, tts):
            await c.nc.close()
        return reply.data, stolen, asr.errors

    data, stolen, asr_errors = asyncio.run(run())
    assert data == b"claimed"
    assert stolen == []
    assert any("publish" in e.lower() for e in asr_errors), asr_errors


def test_the_gateway_cannot_silence_a_call_by_posing_as_tts(server):
    """The issue's attack: one 640-byte message on a made-up run. A service
    that is not TTS cannot even publish it (the gateway's own guard against
    TTS itself is in services/media-gateway/tests/test_stale_runs.py)."""
    srv, made, password, _ = server

    async def run():
        test = await Client().connect(f"nats://test:{password}@127.0.0.1:{srv.port}")
        seen = []

        async def got(msg):
            seen.append(msg)

        await test.nc.subscribe(subjects.tts_audio_all("s1"), cb=got)
        await test.nc.flush()
        for role in ("gateway", "asr", "orchestrator", "operator"):
            c = await _as(role, srv, made)
            await c.nc.publish(subjects.tts_audio("s1", 99), bytes(640))
            await c.nc.flush()
            await c.nc.close()
        await asyncio.sleep(0.3)
        await test.nc.close()
        return seen

    assert asyncio.run(run()) == []


def test_the_generated_config_is_valid_and_holds_no_secret(server):
    _, made, _, _ = server
    text = made.config.read_text()
    for role, seed in made.seeds.items():
        assert seed not in text
        assert natsauth.public_key(seed) in text
    assert oct(made.seed_file("asr").stat().st_mode & 0o777) == "0o600"


def test_tls_is_optional_and_works_with_the_documented_settings(tmp_path):
    """deploy/nats.conf + a tls block; clients with NATS_URL=tls://... and
    PARLEY_NATS_TLS_CA (docs/SECURITY.md). A client that does not trust the
    CA is refused."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "parley-test-nats")])
    now = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=36500))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    base = tmp_path / "nats.conf"
    base.write_text((ROOT / "deploy" / "nats.conf").read_text() + f'\ntls {{ cert_file: "{tmp_path}/cert.pem", key_file: "{tmp_path}/key.pem" }}\n')
    made = natsauth.ensure(tmp_path / "secrets", base)
    seed_env = {natsauth.SEED_FILE_ENV: str(made.seed_file("asr"))}

    async def attempt(creds):
        try:
            nc = await nats.connect(f"tls://127.0.0.1:{srv.port}", allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=3, **creds.connect_options())
        except Exception as exc:  # noqa: BLE001
            return type(exc).__name__
        await nc.close()
        return "connected"

    srv = NatsServer(free_port(), tmp_path / "data", made.config).start(log=tmp_path / "nats.log")
    try:
        trusted = natsauth.Credentials.from_env({**seed_env, natsauth.TLS_CA_ENV: str(tmp_path / "cert.pem")})
        assert asyncio.run(attempt(trusted)) == "connected"
        assert asyncio.run(attempt(natsauth.Credentials.from_env(seed_env))) != "connected"  # the system CAs do not know it
    finally:
        srv.stop()
