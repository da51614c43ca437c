"""The pure Twilio protocol: parsing, outbound messages, TwiML, signatures,
stream tokens, mark names and clear generations."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley_gateway import twilio_protocol as tp
from parley_gateway.twilio_protocol import ProtocolError

# Example messages in the shapes of Twilio's "Media Streams - WebSocket
# Messages" page (values are ours; strings where Twilio sends strings).
SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
CALL = "CA7a2d7e1d6a8b4f4f8e4f5a1b2c3d4e5f"
CONNECTED = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
START = {
    "event": "start",
    "sequenceNumber": "1",
    "start": {
        "accountSid": "AC00000000000000000000000000000000",
        "streamSid": SID,
        "callSid": CALL,
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": {"token": "abc", "caller": "+15550001111"},
    },
    "streamSid": SID,
}
MEDIA = {
    "event": "media",
    "sequenceNumber": "3",
    "media": {"track": "inbound", "chunk": "1", "timestamp": "5", "payload": base64.b64encode(bytes([0xFF, 0x7F, 0x00])).decode()},
    "streamSid": SID,
}
DTMF = {"event": "dtmf", "streamSid": SID, "sequenceNumber": "5", "dtmf": {"track": "inbound_track", "digit": "1"}}
MARK = {"event": "mark", "sequenceNumber": "4", "streamSid": SID, "mark": {"name": "3.0.0"}}
STOP = {"event": "stop", "sequenceNumber": "5", "stop": {"accountSid": "AC00000000000000000000000000000000", "callSid": CALL}, "streamSid": SID}


def msg(base: dict, **changes) -> str:
    """A copy of ``base`` with dotted-path changes (value None deletes)."""
    out = json.loads(json.dumps(base))
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = out
        for p in parents:
            node = node[p]
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return json.dumps(out)


# ---------------------------------------------------------------- parsing


def test_documented_messages_parse_into_typed_values():
    assert tp.parse(json.dumps(CONNECTED)) == tp.Connected("Call", "1.0.0")
    start = tp.parse(json.dumps(START))
    assert start == tp.Start(1, SID, CALL, "AC00000000000000000000000000000000", ("inbound",), {"token": "abc", "caller": "+15550001111"})
    assert tp.parse(json.dumps(MEDIA)) == tp.Media(3, SID, "inbound", 1, 5, bytes([0xFF, 0x7F, 0x00]))
    assert tp.parse(json.dumps(DTMF)) == tp.Dtmf(5, SID, "1")
    assert tp.parse(json.dumps(MARK)) == tp.MarkEcho(4, SID, "3.0.0")
    assert tp.parse(json.dumps(STOP)) == tp.Stop(5, SID, CALL)


def test_parse_accepts_bytes_and_unknown_fields_and_numeric_counters():
    assert tp.parse(json.dumps({**CONNECTED, "extra": [1, 2]}).encode()) == tp.Connected("Call", "1.0.0")
    m = tp.parse(msg(MEDIA, sequenceNumber=7, media__chunk=2, media__timestamp=40, media__extra="x"))
    assert (m.sequence, m.chunk, m.timestamp) == (7, 2, 40)


BAD = [
    ("not json", "malformed_json"),
    ('{"event": "media"', "malformed_json"),
    ("", "malformed_json"),
    ("[]", "invalid_message"),
    ("{}", "invalid_message"),
    ('{"event": 5}', "invalid_message"),
    ('{"event": "hello"}', "unknown_event"),
    ('{"event": "clear", "streamSid": "MZ1"}', "unknown_event"),  # outbound-only event
    (msg(MEDIA, media=None), "invalid_message"),
    (msg(MEDIA, media__payload=None), "invalid_message"),
    (msg(MEDIA, media__payload="***not base64***"), "bad_base64"),
    (msg(MEDIA, media__payload="AAE"), "bad_base64"),  # bad padding
    (msg(MEDIA, sequenceNumber="-1"), "invalid_message"),
    (msg(MEDIA, media__chunk="1.5"), "invalid_message"),
    (msg(MEDIA, media__timestamp="٣"), "invalid_message"),  # a digit, but not ASCII
    (msg(START, start__streamSid=None), "invalid_message"),
    (msg(START, start__callSid="CA 1; drop"), "invalid_message"),
    (msg(START, start__customParameters={"a": 1}), "invalid_message"),
    (msg(START, start__mediaFormat={"encoding": "audio/l16", "sampleRate": 16000, "channels": 1}), "unsupported_format"),
    (msg(START, start__mediaFormat__channels=2), "unsupported_format"),
    (msg(DTMF, dtmf__digit="12"), "invalid_message"),
    (msg(DTMF, dtmf__digit="x"), "invalid_message"),
    (msg(MARK, mark=None), "invalid_message"),
    ('{"event": "media", "media": {"payload": "' + "A" * tp.MAX_MESSAGE_BYTES + '"}}', "oversized"),
    ("\ud800", "malformed_json"),
]


@pytest.mark.parametrize("text,kind", BAD)
def test_bad_messages_raise_a_protocol_error_of_the_right_kind(text, kind):
    with pytest.raises(ProtocolError) as info:
        tp.parse(text)
    assert info.value.kind == kind
    assert str(info.value)  # a message a human can read in the log


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
events = st.sampled_from(["connected", "start", "media", "dtmf", "mark", "stop", "clear", "Media", ""])


def _mutations(base: dict):
    """Documented messages with one field replaced by an arbitrary JSON value."""
    paths = []

    def walk(node, prefix):
        for k, v in node.items():
            paths.append(prefix + (k,))
            if isinstance(v, dict):
                walk(v, prefix + (k,))

    walk(base, ())
    return st.tuples(st.sampled_from(paths), json_values).map(lambda pv: _replace(base, *pv))


def _replace(base: dict, path: tuple, value) -> str:
    out = json.loads(json.dumps(base))
    node = out
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return json.dumps(out)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.text(max_size=200),
        st.binary(max_size=200),
        json_values.map(json.dumps),
        st.dictionaries(st.text(max_size=10), json_values, max_size=5).flatmap(lambda d: events.map(lambda e: json.dumps({**d, "event": e}))),
        *[_mutations(m) for m in (CONNECTED, START, MEDIA, DTMF, MARK, STOP)],
    )
)
def test_parse_raises_nothing_but_protocol_error(text):
    try:
        out = tp.parse(text)
    except ProtocolError as exc:
        assert exc.kind in ProtocolError.KINDS
    else:
        assert isinstance(out, (tp.Connected, tp.Start, tp.Media, tp.Dtmf, tp.MarkEcho, tp.Stop))


@given(st.binary(max_size=400), st.integers(0, 10**9), st.integers(0, 10**9))
def test_media_payload_and_counters_round_trip(audio, seq, ts):
    text = msg(MEDIA, sequenceNumber=str(seq), media__timestamp=str(ts), media__payload=base64.b64encode(audio).decode())
    m = tp.parse(text)
    assert (m.audio, m.sequence, m.timestamp) == (audio, seq, ts)


# ---------------------------------------------------------------- outbound


@given(st.binary(max_size=400))
def test_outbound_media_is_documented_json_with_base64_ulaw(ulaw):
    out = json.loads(tp.media_message(SID, ulaw))
    assert out == {"event": "media", "streamSid": SID, "media": {"payload": base64.b64encode(ulaw).decode()}}


def test_outbound_mark_and_clear():
    assert json.loads(tp.mark_message(SID, "1.2.3")) == {"event": "mark", "streamSid": SID, "mark": {"name": "1.2.3"}}
    assert json.loads(tp.clear_message(SID)) == {"event": "clear", "streamSid": SID}


# ---------------------------------------------------------------- TwiML and URLs


def test_twiml_connects_a_bidirectional_stream_with_parameters():
    params = {"token": "t.1.x", "caller": "+1555", "greeting": 'Hi <there> & "you"'}
    xml = tp.twiml_connect_stream("wss://gw.example.com/twilio/media", params)
    root = ET.fromstring(xml)
    assert root.tag == "Response"
    (connect,) = list(root)
    assert connect.tag == "Connect"
    (stream,) = list(connect)
    assert stream.tag == "Stream" and stream.get("url") == "wss://gw.example.com/twilio/media"
    assert {p.get("name"): p.get("value") for p in stream.findall("Parameter")} == params


def test_twiml_refuses_a_query_string_on_the_stream_url():
    with pytest.raises(ValueError):
        tp.twiml_connect_stream("wss://gw.example.com/twilio/media?token=1", {})


@pytest.mark.parametrize(
    "public_host,request_url,expected",
    [
        ("gw.example.com", "http://127.0.0.1:8080/twilio/voice", "https://gw.example.com/twilio/voice"),
        ("https://gw.example.com/", "http://127.0.0.1:8080/twilio/voice?greeting=hi", "https://gw.example.com/twilio/voice?greeting=hi"),
        ("gw.example.com:8443", "http://x/twilio/voice", "https://gw.example.com:8443/twilio/voice"),
        ("", "http://127.0.0.1:8080/twilio/voice?a=1", "http://127.0.0.1:8080/twilio/voice?a=1"),
    ],
)
def test_public_url_is_what_twilio_signed(public_host, request_url, expected):
    assert tp.public_url(public_host, request_url) == expected


def test_stream_url():
    assert tp.stream_url("gw.example.com", "127.0.0.1:8080", False) == "wss://gw.example.com/twilio/media"
    assert tp.stream_url("", "127.0.0.1:8080", False) == "ws://127.0.0.1:8080/twilio/media"
    assert tp.stream_url("", "h:1", True) == "wss://h:1/twilio/media"


# ---------------------------------------------------------------- signatures

# The worked example of Twilio's security documentation (as quoted in the
# twilio-php docs and elsewhere): this auth token, URL and POST parameters sign
# to this value. Not computed by our code: it is the published answer.
DOC_TOKEN = "12345"
DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
DOC_PARAMS = {"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030", "Digits": "1234", "From": "+12349013030", "To": "+18005551212"}
DOC_SIGNATURE = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def test_signature_matches_twilios_documented_example():
    assert tp.compute_signature(DOC_TOKEN, DOC_URL, DOC_PARAMS.items()) == DOC_SIGNATURE
    assert tp.valid_signature(DOC_TOKEN, DOC_URL, DOC_PARAMS.items(), DOC_SIGNATURE)


def test_signature_does_not_depend_on_parameter_order():
    assert tp.valid_signature(DOC_TOKEN, DOC_URL, reversed(list(DOC_PARAMS.items())), DOC_SIGNATURE)


@pytest.mark.parametrize(
    "token,url,params,signature",
    [
        ("54321", DOC_URL, DOC_PARAMS, DOC_SIGNATURE),  # wrong auth token
        (DOC_TOKEN, DOC_URL.replace("foo=1", "foo=2"), DOC_PARAMS, DOC_SIGNATURE),  # URL changed
        (DOC_TOKEN, DOC_URL, {**DOC_PARAMS, "Digits": "1235"}, DOC_SIGNATURE),  # a param changed
        (DOC_TOKEN, DOC_URL, {**DOC_PARAMS, "Extra": "1"}, DOC_SIGNATURE),  # a param added
        (DOC_TOKEN, DOC_URL, DOC_PARAMS, DOC_SIGNATURE[:-2]),  # truncated
        (DOC_TOKEN, DOC_URL, DOC_PARAMS, ""),  # missing
        (DOC_TOKEN, DOC_URL, DOC_PARAMS, None),
        ("", DOC_URL, DOC_PARAMS, DOC_SIGNATURE),  # no token configured never validates
    ],
)
def test_signature_rejects_any_change(token, url, params, signature):
    assert not tp.valid_signature(token, url, params.items(), signature)


def test_signature_accepts_the_url_with_or_without_the_default_port():
    sig = tp.compute_signature(DOC_TOKEN, "https://gw.example.com/twilio/voice", [])
    assert tp.valid_signature(DOC_TOKEN, "https://gw.example.com:443/twilio/voice", [], sig)
    sig443 = tp.compute_signature(DOC_TOKEN, "https://gw.example.com:443/twilio/voice", [])
    assert tp.valid_signature(DOC_TOKEN, "https://gw.example.com/twilio/voice", [], sig443)
    assert not tp.valid_signature(DOC_TOKEN, "https://gw.example.com:8443/twilio/voice", [], sig)


# ---------------------------------------------------------------- stream tokens


def test_a_token_is_accepted_once_for_its_call():
    book = tp.StreamTokens(b"k" * 32, ttl=120)
    token = book.issue(CALL, now=1000.0)
    book.redeem(token, CALL, now=1010.0)
    with pytest.raises(tp.TokenError, match="already used"):
        book.redeem(token, CALL, now=1011.0)


@pytest.mark.parametrize(
    "mutate,call,now,why",
    [
        (lambda t: t, "CAother", 1010.0, "does not match"),
        (lambda t: t, CALL, 1121.0, "expired"),
        (lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"), CALL, 1010.0, "does not match"),
        (lambda t: str(int(t.split(".")[0]) + 3600) + t[t.index(".") :], CALL, 1010.0, "does not match"),  # extended expiry
        (lambda t: "garbage", CALL, 1010.0, "malformed"),
        (lambda t: "", CALL, 1010.0, "malformed"),
    ],
)
def test_bad_tokens_are_refused(mutate, call, now, why):
    book = tp.StreamTokens(b"k" * 32, ttl=120)
    token = mutate(book.issue(CALL, now=1000.0))
    with pytest.raises(tp.TokenError, match=why):
        book.redeem(token, call, now=now)


def test_a_token_from_another_secret_is_refused():
    token = tp.StreamTokens(b"a" * 32).issue(CALL, now=0)
    with pytest.raises(tp.TokenError):
        tp.StreamTokens(b"b" * 32).redeem(token, CALL, now=1)


def test_the_used_set_forgets_expired_tokens():
    book = tp.StreamTokens(b"k" * 32, ttl=10)
    for i in range(50):
        book.redeem(book.issue(f"CA{i}", now=i * 100.0), f"CA{i}", now=i * 100.0 + 1)
    assert len(book.used) == 1


@given(st.text(max_size=80))
def test_arbitrary_strings_never_redeem(token):
    with pytest.raises(tp.TokenError):
        tp.StreamTokens(b"k" * 32).redeem(token, CALL, now=0)


# ---------------------------------------------------------------- marks and clears


@given(st.integers(0, 10**9 - 1), st.integers(0, 10**9 - 1), st.integers(0, 10**12 - 1), st.integers(0, 10**9 - 1))
def test_mark_names_round_trip(run, chunk, seq, generation):
    assert tp.parse_mark_name(tp.mark_name(run, chunk, seq, generation)) == (run, chunk, seq, generation)
    assert tp.parse_mark_name(tp.mark_name(run, chunk, seq, generation, ends_chunk=True)) == (run, chunk, seq, generation)


@pytest.mark.parametrize("name", ["", "1.2", "1.2.3", "1.2.3.4.5", "1.2.3.4.en", "a.b.c.d", "-1.2.3.4", "1.2.3.4 ", "greeting", "1..3.4"])
def test_foreign_mark_names_are_not_ours(name):
    assert tp.parse_mark_name(name) is None


def frame(run: int, chunk: int, end_ms: int, i: int = 0) -> tp.Frame:
    return tp.Frame(run, chunk, end_ms, i.to_bytes(4, "big"))


def test_far_end_examples():
    far = tp.FarEnd(mark_every=2)
    assert far.sent(frame(1, 0, 20)) is None
    a = far.sent(frame(1, 0, 40))  # every 2 frames
    assert tp.parse_mark_name(a)[:2] == (1, 0)
    b = far.sent(frame(1, 0, 50), [tp.ChunkEnd(1, 0, 50)])  # a chunk's end is always marked
    assert b.endswith(".end") and not a.endswith(".end")
    c = far.sent(frame(1, 1, 20))
    assert c is None and far.unproven_ms == 80
    assert far.echoed(a) == [tp.Heard(1, 0, 40, False)]
    assert far.echoed(a) == "unknown"  # echoed twice: the second proves nothing
    assert far.echoed(b) == [tp.Heard(1, 0, 50, True)]
    assert far.proven == tp.Heard(1, 0, 50, True)
    d = far.sent(frame(1, 1, 40))
    assert far.holds_audio() and far.holds_audio(runs_from=1) and not far.holds_audio(runs_from=2)
    unheard = far.clear()
    assert [(i.chunk, i.end_ms) for i in unheard] == [(1, 20), (1, 40)]
    assert far.echoed(d) == "cleared" and not far.holds_audio()  # Twilio echoes what the clear dropped
    e = far.sent(frame(2, 0, 20), [tp.ChunkEnd(2, 0, 20)])
    assert tp.parse_mark_name(e)[3] == 1  # the next generation
    assert far.echoed(e) == [tp.Heard(2, 0, 20, True)]
    assert far.echoed("greeting") == "unknown"
    assert far.pending == {} and far.unproven_ms == 0


def test_one_echo_proves_every_chunk_that_ended_before_it():
    far = tp.FarEnd(mark_every=50)
    far.sent(None, [tp.ChunkEnd(3, 0, 0)])  # an empty chunk: marked at once
    m = far.sent(frame(3, 1, 20), [tp.ChunkEnd(3, 1, 20), tp.ChunkEnd(3, 2, 0)])
    first = next(iter(far.pending))
    assert far.echoed(m) == [tp.Heard(3, 0, 0, True), tp.Heard(3, 1, 20, True), tp.Heard(3, 2, 0, True)]
    assert far.echoed(first) == "unknown"  # older than a mark already echoed: lost, proves nothing now


def test_a_mark_sent_before_a_clear_never_counts_even_if_echoed_late():
    far = tp.FarEnd()
    old = far.sent(frame(1, 0, 20))
    far.clear()
    far.clear()
    assert far.echoed(old) == "cleared"


def test_marks_that_never_come_back_do_not_grow_memory_without_bound():
    far = tp.FarEnd(mark_every=1, max_unproven=50)
    for i in range(500):
        far.sent(frame(1, i // 10, (i % 10 + 1) * 20, i))
    assert far.frames_unproven == 50 and far.forgotten == 450
    assert len(far.pending) <= 51
    assert [int.from_bytes(f.audio, "big") for f in far.clear()] == list(range(450, 500))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["send", "send", "send", "play", "play", "deliver", "clear"]), max_size=120), st.integers(1, 4))
def test_far_end_against_a_model_of_twilio(script, mark_every):
    """A model of Twilio's buffer: frames and marks queue in order; playing a
    frame echoes the marks behind it; clear drops the buffer and echoes every
    pending mark at once. Echoes reach the gateway later (``deliver``), so a
    clear can race an echo of audio that did play. The gateway sends a replay
    of what a clear took back before new frames, as the transport does.

    Holds: (1) whatever is reported heard was played: every chunk reported
    finished had all its frames played, in order; (2) no audio is skipped:
    the frames played, first occurrences only, are 0, 1, 2, ... with no
    gap; (3) a frame is played again only if no echo had proven it heard
    when the clear came."""
    far = tp.FarEnd(mark_every=mark_every)
    twilio: list[tuple[str, object]] = []  # ("frame", id) / ("mark", name), oldest first
    in_flight: list[str] = []
    replay: list = []
    played: list[int] = []
    proven_at_clear: list[tuple[int, set[int]]] = []  # (highest id proven, ids replayed)
    finished_chunks: list[int] = []
    per_chunk = 3
    next_id = 0
    proven_id = -1
    for op in script:
        if op == "send":
            if replay:
                item = replay.pop(0)
                ends = []
                while replay and isinstance(replay[0], tp.ChunkEnd):
                    ends.append(replay.pop(0))
                f = item if isinstance(item, tp.Frame) else None
                if f is None:
                    ends.insert(0, item)
            else:
                i = next_id
                next_id += 1
                f = frame(1, i // per_chunk, (i % per_chunk + 1) * 20, i)
                ends = [tp.ChunkEnd(1, i // per_chunk, per_chunk * 20)] if i % per_chunk == per_chunk - 1 else []
            if f is not None:
                twilio.append(("frame", int.from_bytes(f.audio, "big")))
            name = far.sent(f, ends)
            if name:
                twilio.append(("mark", name))
        elif op == "play":
            while twilio and twilio[0][0] == "mark":
                in_flight.append(twilio.pop(0)[1])
            if twilio:
                played.append(twilio.pop(0)[1])
                while twilio and twilio[0][0] == "mark":  # its audio has played
                    in_flight.append(twilio.pop(0)[1])
        elif op == "deliver" and in_flight:
            out = far.echoed(in_flight.pop(0))
            if isinstance(out, list):
                for h in out:
                    if h.finished:
                        finished_chunks.append(h.chunk)
                    proven_id = max(proven_id, h.chunk * per_chunk + h.played_ms // 20 - 1)
        elif op == "clear":
            unheard = far.clear()
            ids = {int.from_bytes(i.audio, "big") for i in unheard if isinstance(i, tp.Frame)}
            proven_at_clear.append((proven_id, ids))
            replay = unheard + replay
            in_flight.extend(n for kind, n in twilio if kind == "mark")
            twilio.clear()
    # (1) reported heard only what was played, chunks in order
    assert finished_chunks == sorted(finished_chunks)
    for c in finished_chunks:
        assert all(i in played for i in range(c * per_chunk, (c + 1) * per_chunk)), (c, played)
    # (2) no gap in what the caller heard
    first_seen = list(dict.fromkeys(played))
    assert first_seen == list(range(len(first_seen))), played
    # (3) repeats only of audio no echo had proven
    for upto, ids in proven_at_clear:
        assert all(i > upto for i in ids), (upto, ids)
