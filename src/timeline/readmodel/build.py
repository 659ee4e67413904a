"""A whole read model made in one pass over the events: what ``import`` and ``rebuild`` do."""

from __future__ import annotations

from typing import Callable, Iterable

from timeline.domain.model import Rule
from timeline.readmodel.projector import Projector, collector_paused
from timeline.readmodel.store import BuildIndexes, ReadModel
from timeline.readmodel.writer import write_rows


def build(
    readmodel: ReadModel,
    events_by_rule: Iterable[tuple[int, Rule.Event]],
    head: int,
    progress: Callable[[int, int], None] | None = None,
    before_commit: Callable[[], None] | None = None,
) -> int:
    """Replace the read model with one made from every event up to ``head``; returns ``head``.

    ``events_by_rule`` gives each rule's events together, in version order
    (:meth:`~timeline.application.PolicyApplication.events_by_rule`), with their positions.
    Everything happens in one transaction of the read model: until it commits, readers
    (full-text searches included) see the read model as it was, and an exception or a crash
    leaves it so. ``progress(position, count)`` follows each page of events;
    ``before_commit()`` runs once every row is written, and if it raises, nothing is kept.
    """
    with readmodel.write() as conn, collector_paused():
        ReadModel.replace_tables(conn)
        indexes = BuildIndexes(conn)
        for page in Projector(readmodel).pages_by_rule(events_by_rule):
            write_rows(conn, page)
            indexes.after_page()
            if progress is not None:
                progress(page.events[-1].position, len(page.events))
        ReadModel.set_position(conn, head)
        indexes.finish()
        if before_commit is not None:
            before_commit()
    # The transaction went through the write-ahead log, as large as the read model: empty it
    # now, or every reader looks pages up in its index until some later write resets it.
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    return head
