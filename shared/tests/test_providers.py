"""A refused WebSocket handshake becomes one ProviderError, whatever the
vendor put in its answer (parley.providers.handshake_refused)."""

from parley.providers import handshake_refused

DEEPGRAM = ("err_msg", "message", "err_code")
TTS = ("message", "error", "detail")


def test_the_reason_comes_from_the_vendors_json_body():
    e = handshake_refused("deepgram", 401, {"dg-error": "bad key"}, b'{"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials."}', DEEPGRAM, header="dg-error")
    assert (e.provider, e.kind, str(e), e.retry_after) == ("deepgram", "auth", "deepgram: connection refused: HTTP 401 Invalid credentials.", None)
    e = handshake_refused("deepgram", 400, {}, b'{"err_code": "Bad Request"}', DEEPGRAM)
    assert (e.kind, str(e)) == ("refused", "deepgram: connection refused: HTTP 400 Bad Request")


def test_a_rate_limit_carries_its_retry_after():
    e = handshake_refused("cartesia", 429, {"Retry-After": "2"}, b'{"error": "Too many requests"}', TTS)
    assert (e.kind, e.retry_after, str(e)) == ("rate_limit", 2.0, "cartesia: connection refused: HTTP 429 Too many requests")


def test_without_json_the_header_then_the_text_says_why():
    e = handshake_refused("deepgram", 400, {"dg-error": "encoding mulaw needs sample_rate"}, b"Bad Request", DEEPGRAM, header="dg-error")
    assert str(e) == "deepgram: connection refused: HTTP 400 encoding mulaw needs sample_rate"
    e = handshake_refused("elevenlabs", 503, {}, b"<html>" + b"x" * 500, TTS)
    assert str(e) == "elevenlabs: connection refused: HTTP 503 <html>" + "x" * 194
    e = handshake_refused("elevenlabs", 500, {}, b"", TTS)
    assert (e.kind, str(e)) == ("refused", "elevenlabs: connection refused: HTTP 500")
    e = handshake_refused("cartesia", 403, {}, b'["not", "an", "object"]', TTS)
    assert (e.kind, str(e)) == ("auth", 'cartesia: connection refused: HTTP 403 ["not", "an", "object"]')
