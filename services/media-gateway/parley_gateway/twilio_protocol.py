"""Twilio Media Streams, the protocol without the I/O.

Everything the Twilio transport (``twilio_media``) decides lives here, as pure
functions and two small stateful objects whose clocks come in as arguments:

* ``parse(text)``: one WebSocket text message from Twilio -> a typed message
  (``Connected``, ``Start``, ``Media``, ``Dtmf``, ``MarkEcho``, ``Stop``), or
  ``ProtocolError`` with a ``kind`` the transport counts. Nothing else raises.
* ``media_message`` / ``mark_message`` / ``clear_message``: what we send back.
* ``twiml_connect_stream``: the webhook's answer, ``<Connect><Stream>``;
  ``twiml_press_then_stream``: keys pressed into the call, then the stream
  again (a REST call update: pressing keys out).
* ``compute_signature`` / ``valid_signature``: ``X-Twilio-Signature``.
* ``StreamTokens``: one-time tokens that tie a stream's ``start`` to the
  webhook that answered the same CallSid.
* ``FarEnd``: the frames sent, the marks among them and the clear
  generations, i.e. which echoed mark proves the caller heard what, and what
  a clear may have kept from the caller's ears (to send again on resume).

Shapes follow Twilio's "Media Streams - WebSocket Messages" page: every message
is a JSON object with an ``event``; ``sequenceNumber``, ``media.chunk`` and
``media.timestamp`` are strings; audio is base64 μ-law at 8 kHz, mono.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections import deque
from dataclasses import dataclass
from typing import Iterable, Mapping, Union
from urllib.parse import parse_qsl, urlsplit, urlunsplit
from xml.sax.saxutils import escape, quoteattr

import msgspec

MAX_MESSAGE_BYTES = 64 * 1024  # a 20 ms media message is ~300 bytes; 64 KiB is 8 s of μ-law
MEDIA_ENCODING = "audio/x-mulaw"
MEDIA_RATE = 8000
DTMF_DIGITS = frozenset("0123456789*#")

# ---------------------------------------------------------------------------
# Errors


class ProtocolError(ValueError):
    """A message that breaks the protocol. ``kind`` is a short stable label
    (counted in the gateway's stats as ``twilio_<kind>``)."""

    KINDS = ("oversized", "malformed_json", "unknown_event", "invalid_message", "bad_base64", "unsupported_format", "out_of_order")

    def __init__(self, kind: str, message: str):
        assert kind in self.KINDS, kind
        super().__init__(message)
        self.kind = kind


# ---------------------------------------------------------------------------
# Inbound messages, as the transport sees them (validated, decoded, typed)


class Connected(msgspec.Struct, frozen=True):
    protocol: str
    version: str


class Start(msgspec.Struct, frozen=True):
    sequence: int
    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: tuple[str, ...]
    custom_parameters: dict[str, str]


class Media(msgspec.Struct, frozen=True):
    sequence: int
    stream_sid: str
    track: str
    chunk: int
    timestamp: int  # ms since the stream started
    audio: bytes  # μ-law, 8 kHz, mono


class Dtmf(msgspec.Struct, frozen=True):
    sequence: int
    stream_sid: str
    digit: str


class MarkEcho(msgspec.Struct, frozen=True):
    sequence: int
    stream_sid: str
    name: str


class Stop(msgspec.Struct, frozen=True):
    sequence: int
    stream_sid: str
    call_sid: str


Inbound = Union[Connected, Start, Media, Dtmf, MarkEcho, Stop]

# ---------------------------------------------------------------------------
# The wire shapes (camelCase, tagged by "event"). Unknown fields are ignored,
# as Twilio may add some; missing required ones are an ``invalid_message``.

Number = Union[str, int]  # documented as strings; tolerate numbers


class _W(msgspec.Struct, tag_field="event", rename="camel", frozen=True):
    pass


class _MediaFormat(msgspec.Struct, rename="camel", frozen=True):
    encoding: str = MEDIA_ENCODING
    sample_rate: int = MEDIA_RATE
    channels: int = 1


class _StartBody(msgspec.Struct, rename="camel", frozen=True):
    stream_sid: str
    call_sid: str
    account_sid: str = ""
    tracks: list[str] = []
    custom_parameters: dict[str, str] = {}
    media_format: _MediaFormat = _MediaFormat()


class _MediaBody(msgspec.Struct, frozen=True):
    payload: str
    track: str = "inbound"
    chunk: Number = "0"
    timestamp: Number = "0"


class _DtmfBody(msgspec.Struct, frozen=True):
    digit: str
    track: str = "inbound_track"


class _MarkBody(msgspec.Struct, frozen=True):
    name: str


class _StopBody(msgspec.Struct, rename="camel", frozen=True):
    account_sid: str = ""
    call_sid: str = ""


class _Connected(_W, tag="connected", frozen=True):
    protocol: str = ""
    version: str = ""


class _Start(_W, tag="start", frozen=True):
    start: _StartBody
    sequence_number: Number = "0"
    stream_sid: str = ""


class _Media(_W, tag="media", frozen=True):
    media: _MediaBody
    sequence_number: Number = "0"
    stream_sid: str = ""


class _Dtmf(_W, tag="dtmf", frozen=True):
    dtmf: _DtmfBody
    sequence_number: Number = "0"
    stream_sid: str = ""


class _Mark(_W, tag="mark", frozen=True):
    mark: _MarkBody
    sequence_number: Number = "0"
    stream_sid: str = ""


class _Stop(_W, tag="stop", frozen=True):
    sequence_number: Number = "0"
    stream_sid: str = ""
    stop: _StopBody = _StopBody()


_decoder = msgspec.json.Decoder(Union[_Connected, _Start, _Media, _Dtmf, _Mark, _Stop])
_KNOWN = frozenset({"connected", "start", "media", "dtmf", "mark", "stop"})
_SID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _number(value: Number, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    raise ProtocolError("invalid_message", f"{name} must be a non-negative integer as a string, got {value!r}")


def _sid(value: str, name: str) -> str:
    if not _SID.match(value):
        raise ProtocolError("invalid_message", f"{name} {value[:80]!r} is not a valid identifier")
    return value


def _event_of(data: bytes) -> object:
    """The ``event`` of a message that did not validate (for the error only)."""
    try:
        obj = msgspec.json.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError):  # a string that is not UTF-8 (found by fuzzing)
        return None
    return obj.get("event") if isinstance(obj, dict) else None


# long: a match over Twilio's documented message kinds, one case each
def parse(text: str | bytes) -> Inbound:
    """One message from Twilio -> a typed message; ``ProtocolError`` otherwise."""
    try:
        data = text.encode() if isinstance(text, str) else bytes(text)
        if not isinstance(text, str):
            data.decode()  # every message is JSON text: UTF-8
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise ProtocolError("malformed_json", "message is not valid UTF-8 text") from None
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError("oversized", f"message of {len(data)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
    try:
        wire = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        event = _event_of(data)
        if isinstance(event, str) and event not in _KNOWN:
            raise ProtocolError("unknown_event", f"unknown event {event[:40]!r}") from None
        raise ProtocolError("invalid_message", (f"invalid {event} message: {exc}" if isinstance(event, str) else f"invalid message: {exc}")) from None
    except msgspec.DecodeError as exc:
        raise ProtocolError("malformed_json", f"not JSON: {exc}") from None
    except UnicodeDecodeError:  # msgspec's, for a string that is not UTF-8 (found by fuzzing)
        raise ProtocolError("malformed_json", "message is not valid UTF-8 text") from None
    match wire:
        case _Media(media=m):
            try:
                audio = base64.b64decode(m.payload, validate=True)
            except (binascii.Error, ValueError):
                raise ProtocolError("bad_base64", "media.payload is not valid base64") from None
            seq = _number(wire.sequence_number, "sequenceNumber")
            return Media(seq, wire.stream_sid, m.track, _number(m.chunk, "media.chunk"), _number(m.timestamp, "media.timestamp"), audio)
        case _Start(start=s):
            fmt = s.media_format
            if (fmt.encoding, fmt.sample_rate, fmt.channels) != (MEDIA_ENCODING, MEDIA_RATE, 1):
                raise ProtocolError("unsupported_format", f"media format {fmt.encoding}/{fmt.sample_rate}/{fmt.channels} is not {MEDIA_ENCODING}/{MEDIA_RATE}/1")
            seq = _number(wire.sequence_number, "sequenceNumber")
            return Start(seq, _sid(s.stream_sid, "streamSid"), _sid(s.call_sid, "callSid"), s.account_sid, tuple(s.tracks), dict(s.custom_parameters))
        case _Dtmf(dtmf=d):
            if d.digit not in DTMF_DIGITS:
                raise ProtocolError("invalid_message", f"dtmf.digit {d.digit[:8]!r} is not one of 0-9 * #")
            return Dtmf(_number(wire.sequence_number, "sequenceNumber"), wire.stream_sid, d.digit)
        case _Mark(mark=mk):
            return MarkEcho(_number(wire.sequence_number, "sequenceNumber"), wire.stream_sid, mk.name)
        case _Stop(stop=st):
            return Stop(_number(wire.sequence_number, "sequenceNumber"), wire.stream_sid, st.call_sid)
        case _Connected():
            return Connected(wire.protocol, wire.version)
    raise AssertionError(f"unhandled {wire!r}")  # pragma: no cover


# ---------------------------------------------------------------------------
# Outbound messages. streamSid was validated on start (no quoting needed).


def media_message(stream_sid: str, ulaw: bytes) -> str:
    payload = base64.b64encode(ulaw).decode("ascii")
    return '{"event":"media","streamSid":"%s","media":{"payload":"%s"}}' % (stream_sid, payload)


def mark_message(stream_sid: str, name: str) -> str:
    return msgspec.json.encode({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}}).decode()


def clear_message(stream_sid: str) -> str:
    return '{"event":"clear","streamSid":"%s"}' % stream_sid


# ---------------------------------------------------------------------------
# TwiML and URLs


def normalize_host(public_host: str) -> str:
    """``PUBLIC_HOST`` as host[:port]: tolerate a pasted scheme or trailing slash."""
    host = public_host.strip()
    for scheme in ("https://", "http://", "wss://", "ws://"):
        if host.lower().startswith(scheme):
            host = host[len(scheme) :]
    return host.rstrip("/")


def public_url(public_host: str, request_url: str) -> str:
    """The URL Twilio signed: the request's path and query on https://PUBLIC_HOST
    (behind a tunnel the local request URL is not what Twilio called), or the
    request URL itself when PUBLIC_HOST is unset."""
    host = normalize_host(public_host)
    if not host:
        return request_url
    parts = urlsplit(request_url)
    return urlunsplit(("https", host, parts.path, parts.query, ""))


def stream_url(public_host: str, request_host: str, secure: bool, path: str = "/twilio/media") -> str:
    host = normalize_host(public_host)
    if host:
        return f"wss://{host}{path}"
    return f"{'wss' if secure else 'ws'}://{request_host}{path}"


def twiml_dial(number: str, whisper_url: str | None = None) -> str:
    """``<Dial>`` the caller to ``number``; with ``whisper_url`` the person
    answering first hears that URL's TwiML (a warm transfer's summary)."""
    if whisper_url:
        return f"<Response><Dial><Number url={quoteattr(whisper_url)}>{escape(number)}</Number></Dial></Response>"
    return f"<Response><Dial>{escape(number)}</Dial></Response>"


def twiml_say(text: str) -> str:
    return f"<Response><Say>{escape(text)}</Say></Response>"


KEYPAD = frozenset("0123456789*#w")
MAX_TWIML = 4000  # characters: Twilio refuses longer inline TwiML (error 32018)


def twiml_press_then_stream(digits: str, url: str, parameters: Mapping[str, str]) -> str:
    """Keys played into the call (``<Play digits>``: 0-9, *, #, w for half
    a second), then ``<Connect><Stream>`` back to us. Sent as a call update,
    it replaces the TwiML running: Twilio stops the current stream first."""
    if not digits or not set(digits) <= KEYPAD:
        raise ValueError(f"not keypad keys: {digits!r}")
    connect = twiml_connect_stream(url, parameters).split("<Response>", 1)[1]
    twiml = f'<?xml version="1.0" encoding="UTF-8"?><Response><Play digits={quoteattr(digits)}/>{connect}'
    if len(twiml) > MAX_TWIML:
        raise ValueError(f"TwiML of {len(twiml)} characters is over Twilio's {MAX_TWIML}")
    return twiml


def twiml_connect_stream(url: str, parameters: Mapping[str, str]) -> str:
    """``<Connect><Stream>``: a bidirectional stream. Twilio forbids a query
    string on the stream URL; values travel as ``<Parameter>``s and come back
    in ``start.customParameters``."""
    if "?" in url:
        raise ValueError("a <Stream> url may not carry a query string; use parameters")
    params = "".join(f"<Parameter name={quoteattr(str(k))} value={quoteattr(str(v))}/>" for k, v in parameters.items())
    return f'<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url={quoteattr(url)}>{params}</Stream></Connect></Response>'


def twiml_reject_busy() -> str:
    """``<Reject reason="busy"/>``: the caller hears a busy signal, and the
    call is not answered (nor billed)."""
    return '<?xml version="1.0" encoding="UTF-8"?><Response><Reject reason="busy"/></Response>'


# ---------------------------------------------------------------------------
# X-Twilio-Signature


def compute_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]] = ()) -> str:
    """base64(HMAC-SHA1(auth token, url + name1 + value1 + name2 + value2 ...)),
    parameters sorted by name (and by value for a repeated name)."""
    data = url + "".join(k + v for k, v in sorted(params))
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def _port_variants(url: str) -> list[str]:
    """Twilio may sign with or without the scheme's default port; accept both."""
    parts = urlsplit(url)
    default = {"https": 443, "wss": 443, "http": 80, "ws": 80}.get(parts.scheme)
    if default is None or parts.hostname is None:
        return [url]
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    if parts.port is None:
        other = parts._replace(netloc=f"{host}:{default}")
    elif parts.port == default:
        other = parts._replace(netloc=host)
    else:
        return [url]
    return [url, urlunsplit(other)]


def valid_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]], signature: str | None) -> bool:
    if not signature or not auth_token:
        return False
    params = list(params)
    given = signature.encode()
    ok = False
    for candidate in _port_variants(url):
        # compare_digest on every candidate: the time does not depend on which matched
        ok |= hmac.compare_digest(compute_signature(auth_token, candidate, params).encode(), given)
    return ok


def body_sha256(url: str) -> str | None:
    """The ``bodySHA256`` query parameter Twilio adds to the URL of a request
    with a JSON body (None: a form request)."""
    values = [v for k, v in parse_qsl(urlsplit(url).query, keep_blank_values=True) if k == "bodySHA256"]
    return values[0] if values else None


def verify_webhook(auth_token: str, url: str, body: bytes, signature: str | None) -> list[tuple[str, str]] | None:
    """A webhook's form fields if ``X-Twilio-Signature`` proves Twilio sent
    it, else None. A form body is signed as URL + sorted fields; a JSON body
    (``application/json``) is signed over the URL alone, which carries
    ``bodySHA256`` = hex SHA-256 of the exact body bytes: both must hold.
    Raises ValueError for a form body that does not parse."""
    claimed = body_sha256(url)
    if claimed is not None:
        actual = hashlib.sha256(body).hexdigest()
        body_ok = hmac.compare_digest(claimed.lower().encode(), actual.encode())
        return [] if valid_signature(auth_token, url, [], signature) and body_ok else None
    form = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    return form if valid_signature(auth_token, url, form, signature) else None


# ---------------------------------------------------------------------------
# One-time stream tokens


class TokenError(ValueError):
    pass


class StreamTokens:
    """Tokens the webhook puts in ``<Parameter name="token">`` and the stream's
    ``start`` must present: HMAC-bound to the CallSid, expiring after ``ttl``
    seconds, and accepted once (a used-set remembers nonces until they expire).

    Stateless apart from the used-set: with several gateway replicas behind one
    host the used-set is per replica; the CallSid binding and expiry still hold.
    """

    def __init__(self, secret: bytes | None = None, ttl: float = 120.0):
        self.secret = secret or secrets.token_bytes(32)
        self.ttl = ttl
        self.used: dict[str, float] = {}  # nonce -> expiry

    def _mac(self, call_sid: str, expiry: int, nonce: str) -> str:
        msg = f"parley-twilio-stream|{call_sid}|{expiry}|{nonce}".encode()
        return base64.urlsafe_b64encode(hmac.new(self.secret, msg, hashlib.sha256).digest()).decode().rstrip("=")

    def issue(self, call_sid: str, now: float) -> str:
        expiry = int(now + self.ttl)
        nonce = secrets.token_urlsafe(12)
        return f"{expiry}.{nonce}.{self._mac(call_sid, expiry, nonce)}"

    def redeem(self, token: str, call_sid: str, now: float) -> None:
        """Accept the token once for this CallSid, or raise TokenError(why)."""
        self.used = {n: e for n, e in self.used.items() if e >= now}
        parts = token.split(".") if isinstance(token, str) else []
        if len(parts) != 3 or not parts[0].isascii() or not parts[0].isdigit():
            raise TokenError("malformed stream token")
        expiry, nonce, mac = int(parts[0]), parts[1], parts[2]
        if not hmac.compare_digest(self._mac(call_sid, expiry, nonce).encode(), mac.encode()):
            raise TokenError("stream token does not match this call")
        if now > expiry:
            raise TokenError("stream token expired")
        if nonce in self.used:
            raise TokenError("stream token already used")
        self.used[nonce] = expiry


# ---------------------------------------------------------------------------
# What Twilio holds for the caller: frames sent, marks, clear generations

_MARK = re.compile(r"^(\d{1,9})\.(\d{1,9})\.(\d{1,12})\.(\d{1,9})(\.end)?$")


def mark_name(run: int, chunk: int, seq: int, generation: int, ends_chunk: bool = False) -> str:
    """``run.chunk.seq.generation``: the run and chunk of the audio just
    before the mark, a number unique on the stream, the clear generation;
    ``.end`` when that audio ended the chunk (for people reading logs)."""
    return f"{run}.{chunk}.{seq}.{generation}" + (".end" if ends_chunk else "")


def parse_mark_name(name: str) -> tuple[int, int, int, int] | None:
    """(run, chunk, seq, generation), or None for a name we did not make."""
    m = _MARK.match(name)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4))) if m else None


@dataclass(frozen=True, slots=True)
class Frame:
    """One media message as sent: ``end_ms`` of its chunk's audio has played
    once this frame has (padding excluded)."""

    run: int
    chunk: int
    end_ms: int
    audio: bytes  # μ-law


@dataclass(frozen=True, slots=True)
class ChunkEnd:
    """The chunk's last audio was in the frame before: ``played_ms`` is its length."""

    run: int
    chunk: int
    played_ms: int


Sent = Union[Frame, ChunkEnd]


class Heard(msgspec.Struct, frozen=True):
    """An echoed mark proves the caller heard ``played_ms`` of this chunk
    (all of it when ``finished``)."""

    run: int
    chunk: int
    played_ms: int
    finished: bool


class FarEnd:
    """What Twilio holds for the caller, as far as echoed marks prove it.

    Theory of operation. Twilio plays the media it is sent in order and echoes
    a mark once the audio queued before it has played. So:

    * every frame sent is recorded here (``sent``), in order, with a mark after
      every ``mark_every`` frames and after every chunk's last frame;
    * an echo of a current-generation mark proves everything recorded before
      it was heard: those items leave ``unproven`` and come back as ``Heard``
      (one per chunk that ended, and the position reached in the last one);
    * ``clear`` empties Twilio's buffer **and echoes every pending mark**, so a
      clear starts a new generation (the generation is in the mark's name) and
      those echoes prove nothing. ``clear()`` returns what is still unproven:
      the caller may not have heard it, and a resume sends it again, starting
      exactly where the last proven mark says playback stopped.

    A mark echo in flight while the clear travels is counted as cleared: the
    report stays truthful (never more than was proven), at the price of
    replaying up to one mark interval plus a round trip that was heard.

    ``max_unproven`` bounds the memory when marks stop coming back (a broken
    peer): the oldest unproven audio is forgotten (``forgotten`` counts
    frames), never reported heard.
    """

    def __init__(self, mark_every: int = 1, max_unproven: int = 500):
        if mark_every < 1:
            raise ValueError("mark_every must be at least one frame")
        self.mark_every = mark_every
        self.max_unproven = max_unproven
        self.generation = 0
        self.unproven: deque[Sent] = deque()
        self.frames_unproven = 0
        self.base = 0  # items proven (or forgotten) so far: index of unproven[0]
        self.pending: dict[str, int] = {}  # mark name -> index just past its audio
        self.since_mark = 0
        self.seq = 0
        self.proven: Heard | None = None  # the last position proven heard
        self.forgotten = 0

    def sent(self, frame: Frame | None, ends: Iterable[ChunkEnd] = ()) -> str | None:
        """A frame (and the chunk ends right after it) went out. Returns the
        name of the mark to send after them, or None."""
        ends = tuple(ends)
        if frame is not None:
            self.unproven.append(frame)
            self.frames_unproven += 1
            self.since_mark += 1
        self.unproven.extend(ends)
        if len(self.unproven) > 0 and self.frames_unproven > self.max_unproven:
            self._forget()
        if not ends and self.since_mark < self.mark_every:
            return None
        last = self.unproven[-1]
        self.seq += 1
        name = mark_name(last.run, last.chunk, self.seq, self.generation, isinstance(last, ChunkEnd))
        self.pending[name] = self.base + len(self.unproven)
        self.since_mark = 0
        return name

    def _forget(self) -> None:
        while self.frames_unproven > self.max_unproven:
            item = self.unproven.popleft()
            self.base += 1
            if isinstance(item, Frame):
                self.frames_unproven -= 1
                self.forgotten += 1
        self.pending = {n: i for n, i in self.pending.items() if i > self.base}

    def echoed(self, name: str, frames: list[Frame] | None = None) -> list[Heard] | str:
        """A mark came back: what it proves was heard (oldest first), or why it
        proves nothing (``"cleared"``, ``"unknown"``). With ``frames``, the
        frames it proves played are appended to it (a recording's)."""
        upto = self.pending.pop(name, None)
        parsed = parse_mark_name(name)
        if parsed is None or upto is None:
            return "cleared" if parsed is not None and parsed[3] < self.generation else "unknown"
        # Marks echo in order: any older one still pending was lost on the way.
        self.pending = {n: i for n, i in self.pending.items() if i > upto}
        heard: list[Heard] = []
        last: Frame | None = None
        while self.base < upto and self.unproven:
            item = self.unproven.popleft()
            self.base += 1
            if isinstance(item, ChunkEnd):
                heard.append(Heard(item.run, item.chunk, item.played_ms, True))
                last = None
            else:
                self.frames_unproven -= 1
                last = item
                if frames is not None:
                    frames.append(item)
        if last is not None:
            heard.append(Heard(last.run, last.chunk, last.end_ms, False))
        if heard:
            self.proven = heard[-1]
        return heard

    def clear(self) -> list[Sent]:
        """A clear was sent: every pending mark is void; returns what was sent
        and not proven heard, oldest first."""
        self.generation += 1
        self.pending.clear()
        unheard = list(self.unproven)
        self.base += len(unheard)
        self.unproven.clear()
        self.frames_unproven = 0
        self.since_mark = 0
        return unheard

    def holds_audio(self, runs_from: int = 0) -> bool:
        """Whether Twilio may still hold audio of run ``runs_from`` or newer."""
        return any(isinstance(i, Frame) and i.run >= runs_from for i in self.unproven)

    @property
    def unproven_ms(self) -> int:
        return self.frames_unproven * 20
