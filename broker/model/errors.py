"""The model's one error hierarchy.

Every refusal the model makes is a `ModelError` carrying an AMQP error `condition` (the symbol the
AMQP layer puts in the `error` of a detach, disposition or management response) and a `description`
a person can act on. The AMQP layer never needs to parse text: it maps the class, or just reads
`condition`. A model bug is not a `ModelError`; it surfaces as an ordinary exception.
"""

from __future__ import annotations


class ModelError(Exception):
    """A request the broker refuses; `condition` is an AMQP error condition symbol."""

    condition = "amqp:internal-error"

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.condition}: {self.description})"


class NotFound(ModelError):
    """A named queue, exchange, binding or consumer does not exist."""

    condition = "amqp:not-found"


class PreconditionFailed(ModelError):
    """The entity exists but not as asked (wrong exchange type, queue not empty, in use)."""

    condition = "amqp:precondition-failed"


class ResourceLimitExceeded(ModelError):
    """A queue limit with the reject policy refuses the message."""

    condition = "amqp:resource-limit-exceeded"


class ResourceLocked(ModelError):
    """An exclusive queue is owned by another connection."""

    condition = "amqp:resource-locked"


class InvalidField(ModelError):
    """A name, argument or binding argument has a bad value or type."""

    condition = "amqp:invalid-field"


class NotAllowed(ModelError):
    """The operation is never allowed (deleting a built-in exchange, binding to the default one)."""

    condition = "amqp:not-allowed"
