"""Shared fixtures: real broker processes (broker_harness.py) and HA clusters
(cluster_harness.py)."""

from broker_harness import broker_proc, brokers
from cluster_harness import cluster

__all__ = ["broker_proc", "brokers", "cluster"]
