"""Writing to the event store: one writer at a time, and a record clock that only moves forward.

Record time must grow strictly with position, across threads and processes, so that an answer
"as known at T" never changes once given. Every write therefore happens under a store-wide lock
(a file lock beside the SQLite file, or a PostgreSQL advisory lock), and takes its instants from
a :class:`RecordClock` started from the newest stored instant.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import weakref
import zlib
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator

ONE_MICROSECOND = timedelta(microseconds=1)
_ADVISORY_KEY = 0x74696D656C  # "timel"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class RecordClock:
    """Instants strictly after the last stored one, and not before the wall clock."""

    def __init__(self, last: datetime | None, now: Callable[[], datetime] = utcnow):
        self._last = last
        self._now = now

    def next(self) -> datetime:
        instant = self._now()
        if self._last is not None and instant <= self._last:
            instant = self._last + ONE_MICROSECOND
        self._last = instant
        return instant


class _ReentrantLock:
    """A thread lock that a holder may take again; the outer hold takes the store-wide lock.

    Readers do not hold it: :meth:`pass_writers` waits until no writer holds it, without
    keeping other readers out.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._depth = 0
        self._owner: int | None = None  # the thread holding the lock, if any

    @contextmanager
    def hold(self) -> Iterator[None]:
        with self._lock:
            self._depth += 1
            try:
                if self._depth == 1:
                    self._owner = threading.get_ident()
                    try:
                        with self._acquire():
                            yield
                    finally:
                        self._owner = None
                else:
                    yield
            finally:
                self._depth -= 1

    def pass_writers(self, then: str | None = None) -> int | None:
        """Return once no writer, in this process or another, holds the store-wide lock.

        Writers take their record time and commit inside the lock, so when this returns every
        write whose record time was taken before the call is committed. Readers take a shared
        lock for a moment, on a file or session of their own: they wait for a writer, never for
        each other. A thread that holds the lock itself is the only writer: it passes at once
        (asking for a shared lock behind its own exclusive one would wait for ever).

        ``then``, a query of one number on the store's database, runs right after on PostgreSQL,
        in the same round trip and with a snapshot taken after passing; its value is returned.
        Elsewhere (and for the lock's holder) the answer is None: the caller asks itself.
        """
        if self._owner == threading.get_ident():
            return None
        return self._pass(then)

    def holds(self) -> int | None:
        """A number that changes whenever a writer takes the lock, or None if not kept here.

        A reader that saw the read model caught up when this number was N, and reads N again
        right after :meth:`pass_writers`, knows no writer has held the lock since: the store's
        head, and so the read model's position, has not moved. The number changes when a writer
        takes the lock, before it writes anything: a writer that stops halfway changes it too.
        """
        return None

    def _acquire(self):  # pragma: no cover - overridden
        raise NotImplementedError

    def _pass(self, then: str | None) -> int | None:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> None:
        pass


class FileWriteLock(_ReentrantLock):
    """An exclusive ``flock`` on a file beside the SQLite store: one writer per store."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        # Kept open between holds: readers pass through the lock on every answer, and opening
        # the file each time cost more than the lock itself. The thread lock above makes one
        # thread at a time use it; a forked child opens its own (see _forget_after_fork).
        self._fd: int | None = None
        # Readers take a shared flock on a file description of their own: a flock belongs to
        # the open file, so a shared request on the writer's descriptor would not wait for a
        # writer thread of this process, it would turn that writer's exclusive lock into a
        # shared one. Reader threads share this one; a shared request on a descriptor that
        # already holds the shared lock succeeds at once, which is right: while it is held,
        # no writer holds the exclusive one.
        self._read_fd: int | None = None
        self._read_open = threading.Lock()
        _FILE_LOCKS.add(self)

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)

    @contextmanager
    def _acquire(self) -> Iterator[None]:
        if self._fd is None:
            self._fd = self._open()
        fd = self._fd
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            # The count of holds, kept in the lock file itself (see holds()).
            os.pwrite(fd, _HOLDS.pack((self._read_holds(fd) + 1) % 2**63), 0)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    @staticmethod
    def _read_holds(fd: int) -> int:
        data = os.pread(fd, _HOLDS.size, 0)
        return _HOLDS.unpack(data)[0] if len(data) == _HOLDS.size else 0

    def holds(self) -> int | None:
        fd = self._read_fd
        return None if fd is None else self._read_holds(fd)

    def _pass(self, then: str | None) -> None:
        fd = self._read_fd
        if fd is None:
            with self._read_open:
                if self._read_fd is None:
                    self._read_fd = self._open()
                fd = self._read_fd
        fcntl.flock(fd, fcntl.LOCK_SH)  # waits while a writer holds LOCK_EX
        fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        with self._read_open:
            if self._read_fd is not None:
                os.close(self._read_fd)
                self._read_fd = None

    def _forget_after_fork(self) -> None:
        # A flock belongs to the open file, which a forked child shares with its parent:
        # holding it there would not keep the parent out. The child opens the file again.
        for name in ("_fd", "_read_fd"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)
        self._read_open = threading.Lock()  # another thread may have held it at the fork


_HOLDS = struct.Struct("<Q")
_FILE_LOCKS: weakref.WeakSet[FileWriteLock] = weakref.WeakSet()


def _forget_file_locks_after_fork() -> None:
    for lock in list(_FILE_LOCKS):
        lock._forget_after_fork()


os.register_at_fork(after_in_child=_forget_file_locks_after_fork)


class PostgresWriteLock(_ReentrantLock):
    """A session advisory lock on the shared PostgreSQL: one writer across every process."""

    def __init__(self, conninfo: dict[str, str], name: str = "public"):
        super().__init__()
        self.conninfo = conninfo
        # One lock per schema: stores in different schemas do not wait for each other.
        self.key = _ADVISORY_KEY ^ (zlib.crc32(name.encode()) << 8)
        self._conn = None
        # Readers pass on a session of their own, for the reason given in FileWriteLock: a
        # session never waits for its own locks, so on the writer's session a reader would not
        # wait for a writer thread of this process. One round trip takes and drops the shared
        # lock; reader threads share the session (a session holding the shared lock is proof
        # enough that no writer holds the exclusive one).
        self._reader = None
        self._pass_sql = (f"SELECT pg_advisory_lock_shared({int(self.key)}); "
                          f"SELECT pg_advisory_unlock_shared({int(self.key)})")

    def _connection(self):
        import psycopg

        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(autocommit=True, **self.conninfo)
        return self._conn

    @contextmanager
    def _acquire(self) -> Iterator[None]:
        conn = self._connection()
        try:
            conn.execute("SELECT pg_advisory_lock(%s)", (self.key,))
        except Exception:
            # A dropped connection: try once more on a fresh one.
            self._conn = None
            conn = self._connection()
            conn.execute("SELECT pg_advisory_lock(%s)", (self.key,))
        try:
            yield
        finally:
            try:
                conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            except Exception:
                # The session is gone, and PostgreSQL released its locks with it.
                self._conn = None

    def _pass(self, then: str | None) -> int | None:
        import psycopg

        # One simple-protocol message: each statement takes its snapshot when it starts, so
        # ``then`` sees every write that was committed before the shared lock was granted.
        sql = self._pass_sql if then is None else f"{self._pass_sql}; {then}"
        reader = self._reader
        if reader is None or reader.closed or reader.broken:
            reader = self._reader = psycopg.connect(autocommit=True, **self.conninfo)
        try:
            cursor = reader.execute(sql)
        except psycopg.OperationalError:
            # A dropped connection (its locks went with it): once more on a fresh one.
            reader = self._reader = psycopg.connect(autocommit=True, **self.conninfo)
            cursor = reader.execute(sql)
        if then is None:
            return None
        cursor.nextset()
        cursor.nextset()
        return cursor.fetchone()[0] or 0

    def close(self) -> None:
        for name in ("_conn", "_reader"):
            conn = getattr(self, name)
            if conn is not None:
                conn.close()
                setattr(self, name, None)
