"""Local servers that speak cloud vendors' wire protocols (Deepgram, OpenAI, ElevenLabs) on
127.0.0.1, with knobs for latency, pacing and faults. The tests run the vendors' real SDKs against
them; the benchmarks use them to stand in for the cloud at published latencies."""
