"""Simulated callers: the far end of a call, for tests, benchmarks and
``parley scenarios``.

* ``pcm.PcmCaller``: a ``/ws/pcm`` client, a microphone that never stops;
* ``twilio.TwilioCaller``: Twilio's side of a bidirectional Media Stream
  (μ-law 8 kHz, marks, clear, a playout buffer at the far end).

Both pace their microphone at real time and record everything they received,
with ``time.monotonic()`` stamps, so timings can be measured from the
caller's side. They need the ``websockets`` package (``parley[scenarios]``).
"""
