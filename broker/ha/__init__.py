"""HA: the broker states, the role state machine, replication and the ack guard."""
