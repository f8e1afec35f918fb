"""The $management node (AMQP Management style requests)."""
