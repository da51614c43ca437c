"""Parley's ASR service: Silero VAD endpointing and faster-whisper transcripts over NATS.

Modules, from the pure core out: ``endpointer`` (probabilities -> utterance
start/stop), ``audio`` (a session's inbox and history), ``vad`` (Silero,
batched across sessions), ``whisper`` (the faster-whisper adapter),
``transcription`` (finals before partials), ``worker`` (the NATS shell),
``app`` (FastAPI: /healthz and the lifespan).
"""
