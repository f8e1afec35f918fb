"""What the event log and HA share about replication: which entities replicate (`levels`) and
how an event travels to the backups (`stream`, the wire format).

Plain data and functions, no I/O. They sit below both: the event log decides per entity and
writes each event as a stream item, HA (`broker/ha`) sends and applies those items. In `broker/ha`
they made the event log import HA while HA's primary and replicator use the event log.
"""
