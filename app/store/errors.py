"""What can go wrong with the run store, in plain words (``message``), and the texts of lookups that fail."""

from __future__ import annotations

MIN_SQLITE = (3, 37, 0)  # STRICT tables
NO_SUCH_RUN = "no such run: it was never recorded here (or the store was replaced)"


class StoreError(Exception):
    """The store cannot be used or a write failed; ``message`` says why in plain words."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class StoreLocked(StoreError):
    pass


class NewerSchema(StoreError):
    pass


class NotAStore(StoreError):
    """The file is damaged, or not a svcscope run store."""


def _span(seconds: float) -> str:
    for unit, size in (("day", 86_400.0), ("hour", 3_600.0), ("minute", 60.0)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds:g} s"
