"""Latency and accuracy-drift measurements."""
