"""The AMQP 1.0 layer: proton events on one connection become calls into the model."""
