"""qstore's per-node append-only LMDB journal (format: docs/journal-format.md)."""

from .errors import (
    CorruptRecord,
    JournalClosed,
    JournalError,
    JournalFull,
    JournalLocked,
    NotAJournal,
    UnsupportedFormat,
)
from .journal import DEFAULT_MAP_SIZE, Journal
from .reader import JournalReader
from .records import (
    FORMAT_VERSION,
    Bind,
    Delivery,
    Dequeue,
    Enqueue,
    Entry,
    Epoch,
    ExchangeDeclare,
    ExchangeDelete,
    History,
    QueueDeclare,
    QueueDelete,
    Record,
    RecordType,
    Unbind,
)
from .state import BindingState, ExchangeState, JournalState, MessageState, QueueState

__all__ = [
    "DEFAULT_MAP_SIZE",
    "FORMAT_VERSION",
    "Bind",
    "BindingState",
    "CorruptRecord",
    "Delivery",
    "Dequeue",
    "Enqueue",
    "Entry",
    "Epoch",
    "ExchangeDeclare",
    "ExchangeDelete",
    "ExchangeState",
    "History",
    "Journal",
    "JournalClosed",
    "JournalError",
    "JournalFull",
    "JournalLocked",
    "JournalReader",
    "JournalState",
    "MessageState",
    "NotAJournal",
    "QueueDeclare",
    "QueueDelete",
    "QueueState",
    "Record",
    "RecordType",
    "Unbind",
    "UnsupportedFormat",
]
