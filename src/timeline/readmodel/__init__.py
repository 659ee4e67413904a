"""Read models in SQLite, fed from the notification log; queries never replay events."""

from timeline.readmodel.store import ReadModel

__all__ = ["ReadModel"]
