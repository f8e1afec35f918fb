"""`qstore-journal`: forensics over the journal of a stopped or a running broker, and repair.

Everything that reads goes through `JournalReader`, which never takes the data directory's lock and
reads in short LMDB transactions, so the tool can look at a live broker's journal without slowing it
down. Messages are shown decoded (_inspect_message.py). `salvage` and `import` are the only verbs
that write, and only a new data directory (_inspect_target.py); salvage's source is not written
at all. Exit status: 0 fine, 1 something found (damage, divergence, a missing queue, no match,
records lost by a salvage), 2 the journal could not be read or written, or the command line was
wrong.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable
from typing import TextIO

import lmdb

from qstore.journal import (
    Bind,
    CorruptRecord,
    Delivery,
    Dequeue,
    Enqueue,
    JournalError,
    JournalReader,
    JournalState,
    QueueDeclare,
    QueueDelete,
    Record,
    RecordType,
    Unbind,
    UnsupportedFormat,
)
from qstore.journal.records import HEADER, decode, read_header
from qstore.journal.state import QueueState

from ._inspect_common import (
    EXIT_ERROR,
    EXIT_FOUND,
    EXIT_OK,
    Fail,
    Progress,
    damage_is_a_finding,
    damaged_json,
    dumps,
    entry_json,
    entry_text,
    expiry_text,
    message_field,
    open_reader,
    table,
)
from ._inspect_diff import Side, diverge, outline, state_line
from ._inspect_find import absences, node_names, search
from ._inspect_import import import_file, journal_header
from ._inspect_message import Undecodable, body_text, decode_message, value_text
from ._inspect_query import Query
from ._inspect_salvage import salvage, salvage_text
from ._inspect_summary import print_summary, summarize
from ._inspect_target import check_target, writing

PROG = "qstore-journal"
EXIT_PIPE = 128 + 13  # SIGPIPE


def replay(reader: JournalReader, name: str, progress: Progress, bodies: bool) -> JournalState:
    with damage_is_a_finding(name):
        return reader.replay(keep_bodies=bodies, progress=progress)


# -- summary ----------------------------------------------------------------------------------


def cmd_summary(args: argparse.Namespace, out: TextIO) -> int:
    with open_reader(args.dir) as reader:
        s = summarize(reader, args.dir)
    if args.json:
        out.write(dumps(s) + "\n")
    else:
        print_summary(s, out)
    return EXIT_OK


# -- dump / export ----------------------------------------------------------------------------


def record_queue(record: Record) -> str | None:
    """The queue a record is about, if any (what `dump --queue` filters on)."""
    if isinstance(record, QueueDeclare | QueueDelete):
        return record.name
    if isinstance(record, Bind | Unbind | Enqueue | Dequeue | Delivery):
        return record.queue
    return None


def cmd_dump(args: argparse.Namespace, out: TextIO) -> int:
    types = set(args.types) if args.types else None
    body = args.body
    bad = 0
    with open_reader(args.dir) as reader:
        # The line would fight with the records when both go to the same terminal.
        enabled = False if _tty(out) else None
        with Progress(reader.count(), "dumping", enabled=enabled) as progress:
            for seq, value in reader.raw(args.start, args.end, progress=progress):
                # --type filters on the unchecked header (cheap; verify is for damage).
                if types and len(value) >= HEADER.size and read_header(value)[1] not in types:
                    continue
                try:
                    e = decode(seq, value)
                except (CorruptRecord, UnsupportedFormat) as exc:
                    reason = exc.reason if isinstance(exc, CorruptRecord) else str(exc)
                    bad += 1
                    text = f"seq={seq} DAMAGED: {reason}"
                    out.write(
                        (dumps(damaged_json(seq, reason, value)) if args.json else text) + "\n"
                    )
                    continue
                if args.queue is not None and record_queue(e.record) != args.queue:
                    continue
                line = dumps(entry_json(e, body)) if args.json else entry_text(e, body)
                out.write(line + "\n")
    if bad:
        raise Fail(f"{args.dir}: {bad} damaged record(s) (run verify for details)", EXIT_FOUND)
    return EXIT_OK


def cmd_export(args: argparse.Namespace, out: TextIO) -> int:
    """The journal's header line (node id, ...), then what `dump --json` prints: what `import`
    reads back."""
    with open_reader(args.dir) as reader:
        out.write(dumps(journal_header(reader)) + "\n")
    args.json, args.start, args.end, args.types, args.queue = True, 0, None, None, None
    return cmd_dump(args, out)


def cmd_import(args: argparse.Namespace, out: TextIO) -> int:
    dst = check_target(args.dir)
    with Progress(None, "importing") as progress, writing(args.dir):
        done = import_file(dst, args.file, skip_damaged=args.skip_damaged, progress=progress)
    if args.json:
        out.write(
            dumps(
                {
                    "target": args.dir,
                    "node_id": done.node_id,
                    "records": done.records,
                    "skipped": done.skipped,
                }
            )
            + "\n"
        )
        return EXIT_OK
    out.write(f"imported {done.records} record(s) into {args.dir} (node {done.node_id})\n")
    if done.skipped:
        out.write(
            f"skipped {len(done.skipped)} record(s) marked damaged: seq "
            + ", ".join(map(str, done.skipped[:20]))
            + (", ..." if len(done.skipped) > 20 else "")
            + "\n"
        )
    return EXIT_OK


def _tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# -- verify -----------------------------------------------------------------------------------


def cmd_verify(args: argparse.Namespace, out: TextIO) -> int:
    bad: list[tuple[int, str]] = []
    n = 0
    with open_reader(args.dir) as reader:
        reader.node_id  # noqa: B018  (a journal without metadata is not one)
        with Progress(reader.count(), "verifying") as progress:
            for seq, _, reason in reader.verified(progress=progress):
                n += 1
                if reason is not None:
                    bad.append((seq, reason))
    if args.json:
        out.write(dumps({"records": n, "damaged": [{"seq": s, "reason": r} for s, r in bad]}))
        out.write("\n")
    else:
        for seq, reason in bad:
            out.write(f"seq {seq}: {reason}\n")
        out.write(f"damaged: {len(bad)} of {n} records\n" if bad else f"ok: {n} records\n")
    return EXIT_FOUND if bad else EXIT_OK


# -- messages ---------------------------------------------------------------------------------


def _replayed_queue(reader: JournalReader, args: argparse.Namespace) -> QueueState:
    """`args.queue` as replay leaves it (no bodies: they are read one by one after); `Fail` if
    the journal has no such queue."""
    with Progress(reader.count(), "replaying") as progress:
        st = replay(reader, args.dir, progress, bodies=False)
    q = st.queues.get(args.queue)
    if q is None:
        known = ", ".join(repr(n) for n in st.queues) or "none"
        raise Fail(
            f"{args.dir}: no queue {args.queue!r} in the journal (queues: {known})", EXIT_FOUND
        )
    return q


def cmd_messages(args: argparse.Namespace, out: TextIO) -> int:
    with open_reader(args.dir) as reader:
        q = _replayed_queue(reader, args)
        # Bodies are read one by one from the journal (replay kept none): memory stays that of
        # the queue's metadata, as in a broker's start.
        msgs = [(m, _stored_message(reader, m.seq, args.dir)) for m in q.messages.values()]
    if args.json:
        for m, message in msgs:
            row = {
                "msgid": m.msgid,
                "seq": m.seq,
                "size": m.size,
                "priority": m.priority,
                "expiry": m.expiry,
                "delivery_count": m.delivery_count,
                "position": list(m.position),
            }
            out.write(dumps({**row, **message_field(message, args.body)}) + "\n")
        return EXIT_OK
    head = ["MSGID", "SEQ", "SIZE", "PRIORITY", "EXPIRY", "DELIVERIES", "POSITION"]
    rows = [[*head, "MESSAGE-ID", "SUBJECT", "BODY"]]
    for m, message in msgs:
        rows.append(
            [
                str(m.msgid),
                str(m.seq),
                str(m.size),
                str(m.priority),
                expiry_text(m.expiry),
                str(m.delivery_count),
                f"({m.position[0]}, {m.position[1]})",
                *_message_columns(message, args.body),
            ]
        )
    out.writelines(line + "\n" for line in table(rows))
    out.write(f"{len(msgs)} messages, {q.bytes} bytes in queue {q.name!r}\n")
    return EXIT_OK


def _stored_message(reader: JournalReader, seq: int, name: str) -> bytes:
    with damage_is_a_finding(name):
        e = reader.get(seq)
    if e is None or not isinstance(e.record, Enqueue):  # compacted under a live broker's feet
        raise Fail(f"{name}: the journal changed while it was read (seq {seq}); try again", 1)
    return e.record.body


def _message_columns(body: bytes, full: bool) -> list[str]:
    try:
        v = decode_message(body)
    except Undecodable as exc:
        return ["-", "-", f"(undecodable: {exc})"]
    mid = "-" if v.message_id is None else value_text(v.message_id)
    return [mid, "-" if v.subject is None else value_text(v.subject), body_text(v, full)]


# -- dedup ------------------------------------------------------------------------------------


def cmd_dedup(args: argparse.Namespace, out: TextIO) -> int:
    """A queue's dedup window as replay rebuilds it: the message-id of each of its last N
    messages, oldest first, live or consumed (the journal keeps those records for it)."""
    with open_reader(args.dir) as reader:
        q = _replayed_queue(reader, args)
        window = [
            (msgid, seq, live, _window_id(_stored_message(reader, seq, args.dir)))
            for msgid, seq, live in q.window_seqs()
        ]
    if args.json:
        for msgid, seq, live, mid in window:
            row = {"msgid": msgid, "seq": seq, "live": live, "message_id": mid}
            out.write(dumps(row) + "\n")
        return EXIT_OK
    rows = [["MSGID", "SEQ", "STATE", "MESSAGE-ID"]]
    for msgid, seq, live, mid in window:
        rows.append([str(msgid), str(seq), "live" if live else "consumed", mid or "-"])
    out.writelines(line + "\n" for line in table(rows))
    if not q.window_size:
        out.write(f"queue {q.name!r} has no dedup window (qstore.dedup-window)\n")
    else:
        out.write(f"{len(window)} of {q.window_size} in the dedup window of queue {q.name!r}\n")
    return EXIT_OK


def _window_id(body: bytes) -> str | None:
    try:
        v = decode_message(body)
    except Undecodable:
        return None
    return None if v.message_id is None else value_text(v.message_id)


# -- find -------------------------------------------------------------------------------------


def cmd_find(args: argparse.Namespace, out: TextIO) -> int:
    q = Query(args.message_id, args.subject, args.properties or [], args.body_contains, args.queue)
    if not (q.message_id or q.subject or q.properties or q.body is not None):
        raise Fail("find needs --message-id, --subject, --property or --body-contains", EXIT_ERROR)
    for i, d in enumerate(args.dirs):
        if any(_same_dir(d, e) for e in args.dirs[:i]):
            raise Fail(f"{d}: given twice", EXIT_ERROR)
    names = node_names(args.dirs)
    results = []
    with contextlib.ExitStack() as stack:
        readers = [stack.enter_context(open_reader(d)) for d in args.dirs]
        total = sum(r.count() for r in readers)
        with Progress(total, "searching") as progress:
            for name, d, reader in zip(names, args.dirs, readers, strict=True):
                results.append(search(reader, name, d, q, limit=args.limit, progress=progress))
    missing = absences(results)
    found = sum(len(r.hits) + r.more for r in results)
    damaged = sum(r.damaged for r in results)
    if args.json:
        for r in results:
            node = {"node": r.name, "data_dir": r.data_dir, "node_id": r.node_id}
            out.writelines(dumps({**node, **h.json()}) + "\n" for h in r.hits)
        for _, nodes in missing:
            for a in nodes:
                n = a.node
                row = {"node": n.name, "data_dir": n.data_dir, "node_id": n.node_id}
                row.update(queue=a.queue, msgid=a.msgid, absent=a.why, detail=a.detail)
                out.write(dumps({**row, "position": list(n.position)}) + "\n")
        for r in results:
            row = {"node": r.name, "data_dir": r.data_dir, "node_id": r.node_id}
            row.update(matches=len(r.hits) + r.more, listed=len(r.hits), damaged=r.damaged)
            out.write(dumps({**row, "position": list(r.position)}) + "\n")
        return EXIT_FOUND if not found or damaged else EXIT_OK
    rows = [["NODE", "QUEUE", "MSGID", "SEQ", "EPOCH", "ORIGIN", "MESSAGE-ID", "LIFE"]]
    for r in results:
        for h in r.hits:
            mid = "-" if h.message.message_id is None else value_text(h.message.message_id)
            row = [r.name, h.queue, str(h.msgid), str(h.seq), str(h.epoch), str(h.origin), mid]
            rows.append([*row, h.life()])
    for hit, nodes in missing:
        mid = "-" if hit.message.message_id is None else value_text(hit.message.message_id)
        for a in nodes:
            place = [a.node.name, a.queue, str(a.msgid), "-", "-", "-", mid]
            rows.append([*place, a.text()])
    if len(rows) > 1:
        out.writelines(line + "\n" for line in table(rows))
    for r in results:
        if r.more:
            out.write(f"{r.name}: {r.more} more match(es) not listed (--limit {args.limit})\n")
        if r.damaged:
            out.write(f"{r.name}: {r.damaged} damaged record(s) skipped (run verify)\n")
    where = sum(1 for r in results if r.hits or r.more)
    n = len(results)
    if found:
        out.write(f"{found} match(es) for {q.describe()} in {where} of {n} journal(s)\n")
    else:
        out.write(f"no message with {q.describe()} in {n} journal(s)\n")
    return EXIT_FOUND if not found or damaged else EXIT_OK


# -- salvage ----------------------------------------------------------------------------------


def cmd_salvage(args: argparse.Namespace, out: TextIO) -> int:
    dst = check_target(args.dst, args.dir)
    with (
        open_reader(args.dir, untouched=True) as reader,
        Progress(reader.count(), "salvaging") as progress,
        writing(args.dst),
    ):
        s = salvage(reader, args.dir, dst, skip_damaged=args.skip_damaged, progress=progress)
    if args.json:
        out.write(dumps(s.json()) + "\n")
    else:
        out.writelines(line + "\n" for line in salvage_text(s))
    return EXIT_FOUND if s.lost or s.unreadable else EXIT_OK


# -- diff -------------------------------------------------------------------------------------


def cmd_diff(args: argparse.Namespace, out: TextIO) -> int:
    with contextlib.ExitStack() as stack:
        ra = stack.enter_context(open_reader(args.dir))
        # LMDB opens an environment once per process: the same journal twice shares a reader.
        rb = ra if _same_dir(args.dir, args.dir2) else stack.enter_context(open_reader(args.dir2))
        # Three passes over each: outline, the positional walk, the replay.
        progress = stack.enter_context(Progress(3 * (ra.count() + rb.count()), "comparing"))
        sides = []
        for name, reader in ((args.dir, ra), (args.dir2, rb)):
            with damage_is_a_finding(name):
                sides.append(Side(name, reader, outline(reader, progress), progress))
        a, b = sides
        line = diverge(a, b)
        result = "diverge"
        if line is None:
            snaps = [replay(s.reader, s.name, progress, bodies=True).snapshot() for s in sides]
            line, result = state_line(snaps[0], snaps[1], a.name, b.name), "state-differs"
    if line is None:
        out.write(dumps({"result": "identical"}) + "\n" if args.json else "identical\n")
        return EXIT_OK
    out.write(dumps({"result": result, "message": line}) + "\n" if args.json else line + "\n")
    return EXIT_FOUND


def _same_dir(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


# -- command line -----------------------------------------------------------------------------


def _seq(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a sequence number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"sequence numbers are not negative: {text!r}")
    return value


def _type(text: str) -> RecordType:
    try:
        return RecordType.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _property(text: str) -> tuple[str, str]:
    key, eq, value = text.partition("=")
    if not eq or not key:
        raise argparse.ArgumentTypeError(f"not K=V: {text!r}")
    return key, value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive number: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    # --json may stand before or after the verb; SUPPRESS keeps a subparser from resetting it.
    js = argparse.ArgumentParser(add_help=False)
    js.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="machine-readable output (JSON, or JSON lines for record listings)",
    )
    p = argparse.ArgumentParser(
        prog=PROG,
        parents=[js],
        description="Read-only forensics over a qstore data directory's journal "
        "(safe on a running broker).",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def verb(name: str, text: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, parents=[js], help=text, description=text)
        sp.add_argument("dir", metavar="DIR", help="the data directory (holding journal/)")
        return sp

    verb("summary", "node id, epochs, records by type, live queues, exchanges and bindings")
    d = verb("dump", "one line per record (--json: JSON lines, bodies in base64)")
    d.add_argument(
        "--from", dest="start", type=_seq, default=0, metavar="SEQ", help="first local seq to show"
    )
    d.add_argument(
        "--to", dest="end", type=_seq, default=None, metavar="SEQ", help="last local seq to show"
    )
    d.add_argument(
        "--type",
        dest="types",
        type=_type,
        action="append",
        metavar="T",
        help="only records of this type (e.g. enqueue, queue-declare; repeatable)",
    )
    d.add_argument("--queue", metavar="Q", help="only records about queue Q")
    _body_option(d)
    verb("verify", "check every record's crc32c and encoding")
    m = verb("messages", "live messages of a queue after replay, as the application sent them")
    m.add_argument("--queue", required=True, metavar="Q", help="the queue")
    _body_option(m)
    dd = verb("dedup", "a queue's dedup window after replay: message-ids, oldest first")
    dd.add_argument("--queue", required=True, metavar="Q", help="the queue")
    df = verb("diff", "first position where two journals diverge, or replicated-state difference")
    df.add_argument("dir2", metavar="DIR2", help="the other data directory")
    _body_option(
        verb(
            "export",
            "the journal as JSON lines: a header (node id, format), then every record as "
            "dump --json prints it (what import reads)",
        )
    )
    im = sub.add_parser(
        "import",
        parents=[js],
        help="build a new data directory from an export",
        description="build a new data directory DIR from export's JSON lines (FILE, - for stdin)",
    )
    im.add_argument("dir", metavar="DIR", help="the new data directory (missing or empty)")
    im.add_argument("file", metavar="FILE", help="an export (JSON lines); - reads stdin")
    im.add_argument(
        "--skip-damaged",
        action="store_true",
        help="leave out records the export marks damaged (default: refuse the file)",
    )
    f = sub.add_parser(
        "find",
        parents=[js],
        help="where is my message? search every queue of one or several data directories",
        description="search every queue of the data directories for messages (all the criteria "
        "given must hold) and show what each journal holds of their life",
    )
    f.add_argument("dirs", nargs="+", metavar="DIR", help="data directories (one per node)")
    f.add_argument("--message-id", metavar="ID", help="the message-id the application set")
    f.add_argument("--subject", metavar="S", help="the subject (a routing key through an exchange)")
    f.add_argument(
        "--property",
        dest="properties",
        type=_property,
        action="append",
        metavar="K=V",
        help="an application property K whose value reads V (repeatable)",
    )
    f.add_argument("--body-contains", metavar="TEXT", help="text the body contains")
    f.add_argument("--queue", metavar="Q", help="only messages of queue Q")
    f.add_argument(
        "--limit", type=_positive, default=1000, metavar="N", help="matches listed per journal"
    )
    sv = verb(
        "salvage",
        "write a new data directory DST from every record of DIR that verifies, in order "
        "(DIR is only read)",
    )
    sv.add_argument("dst", metavar="DST", help="the new data directory (missing or empty)")
    sv.add_argument(
        "--skip-damaged",
        action="store_true",
        help="go on past a damaged record (default: stop at the first one)",
    )
    return p


def _body_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--body",
        action="store_true",
        help="show each message's whole body (default: the first characters, or bytes in hex)",
    )


COMMANDS: dict[str, Callable[[argparse.Namespace, TextIO], int]] = {
    "summary": cmd_summary,
    "dump": cmd_dump,
    "verify": cmd_verify,
    "messages": cmd_messages,
    "dedup": cmd_dedup,
    "diff": cmd_diff,
    "export": cmd_export,
    "salvage": cmd_salvage,
    "import": cmd_import,
    "find": cmd_find,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.json = getattr(args, "json", False)
    if args.command == "dump" and args.end is not None and args.end < args.start:
        parser.error(f"--to {args.end} is before --from {args.start}")
    try:
        return COMMANDS[args.command](args, sys.stdout)
    except Fail as exc:
        return _fail(str(exc), exc.code)
    except CorruptRecord as exc:  # every command names its journal; this is a safety net
        return _fail(str(exc), EXIT_FOUND)
    except JournalError as exc:
        return _fail(str(exc), EXIT_ERROR)
    except lmdb.Error as exc:
        return _fail(f"cannot read the journal: {exc}", EXIT_ERROR)
    except BrokenPipeError:
        # The reader of our output went away (`| head`): stop quietly, with the status a
        # process killed by SIGPIPE would have (as `cat` does).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_PIPE
    except OSError as exc:
        name = exc.filename or (args.dir if hasattr(args, "dir") else "")
        return _fail(f"{name}: {exc.strerror or exc}", EXIT_ERROR)
    except KeyboardInterrupt:
        return 130


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"{PROG}: {message}\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
