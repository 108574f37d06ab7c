"""What the store raises, the same for every backend, so the API can answer 404/409 uniformly."""

from __future__ import annotations


class StoreError(Exception):
    """The database failed or is out of reach (driver errors are wrapped in this).

    ``retryable`` is true for failures that may pass on their own (connection lost, database busy)."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class NotFound(StoreError):
    """No row with that id."""

    def __init__(self, kind: str, id: str | int) -> None:
        super().__init__(f"no {kind} {id}")
        self.kind = kind
        self.id = id


class Conflict(StoreError):
    """A unique or foreign-key constraint said no: a duplicate phone number, a reference to a missing row,
    deleting a row that others still reference, or ending a call that has already ended."""

    def __init__(self, message: str, *, reason: str = "state") -> None:
        super().__init__(message)
        self.reason = reason
        """``unique``, ``foreign_key`` (from the database) or ``state`` (the row is in the wrong state)."""
