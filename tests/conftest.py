"""Shared fixtures: real broker processes (see broker_harness.py)."""

from broker_harness import broker_proc, brokers

__all__ = ["broker_proc", "brokers"]
