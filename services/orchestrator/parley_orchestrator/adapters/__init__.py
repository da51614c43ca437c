"""Brains the runtime can ask for the agent's replies: an OpenAI-compatible
server, the built-in demo receptionist, and a fixed-latency fake for benchmarks."""
