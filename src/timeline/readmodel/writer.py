"""Writing the projector's rows: the statements, and a process that writes while another folds.

A page of rows is plain tuples and lists (:class:`PageRows`), so it can be written here in the
projecting process, or sent to a writer process (:class:`WriterProcess`): building a whole read
model, one process (or two, for a rebuild) folds the events into rows while another writes them.
"""

from __future__ import annotations

import marshal
import multiprocessing
import multiprocessing.connection
import queue
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple

from timeline.readmodel.store import END_OF_RECORD, BuildIndexes, ReadModel, connect

_STATE_FIELDS = "status, rate_percent, conditions, since, until, certain, uncertain_because"


class PageRows(NamedTuple):
    """The rows one page of events adds to each table, and the rows it closes."""

    rules: list[tuple]
    events: list[tuple]
    closed_states: list[tuple]  # (known_to, rule_id, valid_from) of rows of earlier pages
    states: list[list]
    closed_starts: list[tuple]  # (known_to, rule_id, effective_start, ord), as closed_states
    starts: list[list]
    actions: list[tuple]
    requests: list[tuple]
    versions: list[tuple]  # (last_version, last_recorded_at, rule_id), rules of earlier pages


def write_rows(conn: sqlite3.Connection, page: PageRows) -> None:
    """Write one page of rows, inside the caller's transaction."""
    conn.executemany(
        "INSERT INTO rules (id, title, jurisdiction, instrument, targets, subjects, tags, "
        "links, subjects_text, registered_at, position, last_version, last_recorded_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        page.rules,
    )
    conn.executemany("UPDATE rules SET last_version = ?, last_recorded_at = ? WHERE id = ?",
                     page.versions)
    conn.executemany(
        "INSERT INTO rule_events (position, rule_id, version, type, action_id, recorded_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        page.events,
    )
    # Rows opened before this page close first, so that their key finds only them.
    conn.executemany(
        f"UPDATE states SET known_to = ? WHERE rule_id = ? AND valid_from = ? "
        f"AND known_to = '{END_OF_RECORD}'",
        page.closed_states,
    )
    conn.executemany(
        f"INSERT INTO states (rule_id, valid_from, known_from, known_to, {_STATE_FIELDS}) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        page.states,
    )
    conn.executemany(
        f"UPDATE action_starts SET known_to = ? WHERE rule_id = ? AND effective_start = ? "
        f"AND ord = ? AND known_to = '{END_OF_RECORD}'",
        page.closed_starts,
    )
    conn.executemany(
        "INSERT INTO action_starts (rule_id, effective_start, ord, known_from, known_to, "
        "action_id) VALUES (?, ?, ?, ?, ?, ?)",
        page.starts,
    )
    # An upsert, not INSERT OR REPLACE: a replace deletes the old row without its delete
    # trigger, which would leave the old summary in the full-text index.
    conn.executemany(
        "INSERT INTO actions (rule_id, id, kind, effective, effective_start, "
        "effective_end, summary, data, jurisdiction, instrument, recorded_at, position, "
        "corrected, retracted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (rule_id, id) DO UPDATE SET kind = excluded.kind, "
        "effective = excluded.effective, effective_start = excluded.effective_start, "
        "effective_end = excluded.effective_end, summary = excluded.summary, "
        "data = excluded.data, corrected = excluded.corrected, retracted = excluded.retracted",
        page.actions,
    )
    conn.executemany(
        "INSERT OR IGNORE INTO requests (key, fingerprint, rule_id, position, type, "
        "object_id, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        page.requests,
    )


def check_empty(conn: sqlite3.Connection) -> None:
    """A whole read model is built only into empty tables (see Projector.build)."""
    if ReadModel.position_in(conn) or conn.execute("SELECT 1 FROM rule_events LIMIT 1").fetchone():
        raise RuntimeError("a read model is built only into empty tables")


class HelperFailed(RuntimeError):
    """A helper process (a writer, a folder, an import's check) failed or died: the work it
    was part of is not kept."""


class WriterFailed(HelperFailed):
    """The writer process stopped before committing: nothing it wrote is kept."""


def can_fork() -> bool:
    """Whether helper processes can be forked here (where not, their work is done in process)."""
    return "fork" in multiprocessing.get_all_start_methods()


def name_process(name: str) -> None:
    """Show a forked helper as ``name`` in ps, top and /proc (Linux keeps 15 characters; where
    there is no /proc, nothing changes). Without it, each helper shows its parent's name."""
    try:
        with open("/proc/self/comm", "w", encoding="ascii") as comm:
            comm.write(name[:15])
    except OSError:
        pass


# The writer's page cache. Rows come rule by rule, but one index is keyed otherwise (the
# actions by effective day): filled row by row, its pages are written all over, and with a
# cache smaller than the tables being written, SQLite writes them out to the log and reads them
# back again and again. A build replacing the read model makes that index at the end instead
# (see BuildIndexes), but a build into empty tables fills it as it goes. The memory goes with
# the writer process.
WRITER_CACHE_KIB = 128 * 1024

# Pages a folding process may have handed over that the writer has not taken yet: enough to
# keep folding while the writer drops the old read model at the start of a rebuild.
PAGES_AHEAD = 16


class PageSender:
    """Sends messages on a pipe from a thread of its own, up to ``PAGES_AHEAD`` behind.

    A message is serialised by the caller and written by the thread, so folding goes on while
    the writer is busy. After a failed write the thread drops what is left (``send`` then raises).

    Messages between the build's processes are plain tuples, lists, strings, bytes and numbers,
    serialised with :mod:`marshal` (both ends run the same Python): it reads a page of rows
    about three times faster than pickle, and the writer reads every page.
    """

    def __init__(self, pipe: Any):
        self._pipe = pipe
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=PAGES_AHEAD)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="timeline-page-sender",
                                         daemon=True)
        self._thread.start()

    def send(self, message: Any) -> None:
        if self.error is not None:
            raise self.error
        self._queue.put(marshal.dumps(message))

    def flush(self) -> None:
        """Wait until every message is written (or dropped); raise what stopped the writes."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self.error is not None:
            raise self.error

    def flush_quietly(self) -> None:
        """Stop the thread, whatever became of the writes."""
        try:
            self.flush()
        except OSError:
            pass

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            if self.error is None:
                try:
                    self._pipe.send_bytes(data)
                except OSError as exc:  # the reader is gone
                    self.error = exc


class HelperEvents:
    """The events a helper process folds (see ``Projector.build``): ``events()`` is called
    there, after the fork, and reads them (from a store of its own, say)."""

    def __init__(self, events: Callable[[], Iterable[Any]]):
        self._events = events

    def before_fork(self) -> None:
        """In the building process, just before the helper is forked."""

    def events(self) -> Iterable[Any]:
        """In the helper: the events to fold."""
        return self._events()

    def after_fork(self) -> None:
        """In the building process, once the helper runs."""

    def close(self) -> None:
        """In the building process, once the helper has stopped (whatever became of it)."""


class FedEvents(HelperEvents):
    """Events read in the building process and sent to the helper to fold: where the helper
    could not read them itself (an import's events, not yet committed).

    ``pages()`` runs in a thread of the building process, page by page (lists of rows);
    ``decode(row)``, in the helper, makes each row an event. If the thread fails, the helper
    sees its pipe close before the end and fails too, so the build keeps nothing.
    """

    def __init__(self, pages: Callable[[], Iterable[list[Any]]], decode: Callable[[Any], Any]):
        super().__init__(pages)
        self._decode = decode
        self._thread: threading.Thread | None = None
        self._send: Any = None
        self._receive: Any = None

    def before_fork(self) -> None:
        self._receive, self._send = multiprocessing.get_context("fork").Pipe(duplex=False)

    def events(self) -> Iterator[Any]:
        self._send.close()  # the building process's end: closed there, the pipe ends
        decode = self._decode
        while True:
            try:
                rows = marshal.loads(self._receive.recv_bytes())
            except EOFError:
                raise RuntimeError("the building process stopped sending events") from None
            if rows is None:
                return
            for row in rows:
                yield decode(row)

    def after_fork(self) -> None:
        self._receive.close()
        self._thread = threading.Thread(target=self._feed, name="timeline-helper-feed",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._thread.join()
        if self._send is not None:
            self._send.close()
        if self._receive is not None:  # the helper never started: its end is still here
            self._receive.close()

    def _feed(self) -> None:
        try:
            for rows in self._events():
                self._send.send_bytes(marshal.dumps(rows))
            self._send.send_bytes(marshal.dumps(None))
        except Exception:  # the helper sees the pipe close early, and fails the build
            pass
        finally:
            self._send.close()


class WriterProcess:
    """A process writing pages of rows into one read-model file, all in one transaction.

    ``write(page)`` hands a page over (and waits only while the writer is ``PAGES_AHEAD``
    pages behind); ``commit(position)`` sets the tracking position, commits and waits for it. If this side stops first (an exception, a crash), the writer sees its pipe close and
    rolls back; if the writer fails, the next call here raises :class:`WriterFailed`.

    With ``helpers``, the writer also takes pages from that many other processes, each on a
    pipe of its own (``helper_pipes``), each ending with ``("done", events)``; it commits only
    once every helper is done, and rolls back if one fails or stops without saying so.
    """

    def __init__(self, path: Path, helpers: int = 0, replace: bool = False):
        # fork: the writer starts at once and needs nothing from the main module. It opens
        # its own connection and never touches those it inherits (see _write_all).
        context = multiprocessing.get_context("fork")
        self._pipe, theirs = context.Pipe()
        ends = [context.Pipe(duplex=False) for _ in range(helpers)]
        self.helper_pipes = [send for _, send in ends]
        # The writer closes its copies of the other ends, or it would never see them close.
        self._process = context.Process(
            target=_write_all,
            args=(str(path), theirs, [receive for receive, _ in ends],
                  [self._pipe, *self.helper_pipes], replace),
            name="timeline-readmodel-writer", daemon=True)
        self._process.start()
        theirs.close()
        for receive, _ in ends:
            receive.close()
        self.helper_events = 0  # what the helpers folded, once committed
        self._sender = PageSender(self._pipe)
        self._expect("begun")

    def own_pipes(self) -> list[Any]:
        """This side's ends, which a process forked from here must close (see __init__)."""
        return [self._pipe]

    def write(self, page: PageRows) -> None:
        try:
            self._sender.send(("rows", tuple(page)))
        except OSError:
            self._expect("never")  # the writer stopped: raise what it said

    def commit(self, position: int) -> None:
        try:
            self._sender.flush()
            self._pipe.send_bytes(marshal.dumps(("commit", position)))
        except OSError:
            self._expect("never")
        self.helper_events = self._expect("committed") or 0
        self._process.join()
        self.close()

    def close(self) -> None:
        """Stop the writer; uncommitted, its transaction rolls back."""
        if self._process.is_alive() and self._process.exitcode is None:
            # Not committed (or failing): stopping it rolls back, and frees a send it blocks.
            self._process.terminate()
        self._process.join()
        self._sender.flush_quietly()
        self._pipe.close()
        for pipe in self.helper_pipes:
            pipe.close()

    def _expect(self, word: str) -> Any:
        try:
            answer, detail = self._pipe.recv()
        except (EOFError, ConnectionResetError, OSError):
            self._process.join()
            raise WriterFailed(
                f"the read-model writer stopped (exit code {self._process.exitcode})") from None
        if answer != word:
            self.close()
            raise WriterFailed(f"the read-model writer failed: {detail}")
        return detail


def _write_all(path: str, pipe: Any, helpers: list[Any], others: list[Any],
               replace: bool) -> None:
    """The writer process: one transaction, a page per message, until commit or a pipe closes.

    With ``replace``, the transaction first drops the read model there is and makes its tables
    again (while the folding processes start: their first pages wait in the pipes).
    """
    name_process("timeline-writer")
    for end in others:
        end.close()
    conn = connect(Path(path))
    conn.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
    try:
        conn.execute("BEGIN IMMEDIATE")
        if not replace:
            check_empty(conn)
        pipe.send(("begun", None))
        indexes = None
        if replace:
            ReadModel.replace_tables(conn)
            indexes = BuildIndexes(conn)  # the new model commits with every index
        waiting = [pipe, *helpers]  # each leaves once it has said all it will send
        commit_at = 0
        helper_events = 0
        while waiting:
            for source in multiprocessing.connection.wait(waiting):
                try:
                    kind, body = marshal.loads(source.recv_bytes())
                except EOFError:
                    if source is pipe:
                        return  # the projecting process stopped: roll back
                    raise RuntimeError("a folding process stopped before it was done") from None
                if kind == "rows":
                    write_rows(conn, PageRows(*body))
                    if indexes is not None:
                        indexes.after_page()
                elif kind == "done":  # a helper's last word
                    helper_events += body
                    waiting.remove(source)
                elif kind == "commit":  # the projecting process's last word
                    commit_at = body
                    waiting.remove(source)
                else:
                    raise RuntimeError(f"a folding process failed: {body}")
        ReadModel.set_position(conn, commit_at)
        if indexes is not None:
            indexes.finish()
        conn.execute("COMMIT")
        # The transaction went through the write-ahead log, as large as the read model: empty
        # it now, or every reader looks pages up in its index until some later write resets it.
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        pipe.send(("committed", helper_events))
    except Exception as exc:  # reported to the projecting process, which raises it
        try:
            pipe.send(("failed", f"{type(exc).__name__}: {exc}"))
        except OSError:
            pass
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()
