"""Parley's TTS service: Synthesize chunks -> streamed PCM16 over NATS, with cancels.

Modules, from the pure core out: ``spoken`` (text as the voice should say
it), ``lanes`` (per-run queues and the memory of cancelled runs), ``audio``
(PCM pieces and the canned loop), ``adapters`` (the Piper voice, and the
canned voice of fixed-latency mode, behind one ``Voice`` interface),
``worker`` (the NATS shell), ``app`` (FastAPI: /healthz and the lifespan).
"""
