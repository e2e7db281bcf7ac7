"""Group commit: concurrent requests in one API process share one database transaction.

Each request thread builds its rows, then calls `submit`. If no commit is under way, that thread leads:
it takes every item waiting at that moment, writes them in one transaction, hands each caller its own
outcome and wakes them. Items that arrive meanwhile wait for the next batch, which one of them leads. A
lone request commits at once (no hand-off to another thread, so no added latency); under load, N requests
cost one commit and one round of the database's write lock instead of N.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")


@dataclass
class _Slot(Generic[Item]):
    item: Item
    done: bool = False
    error: BaseException | None = None


@dataclass
class GroupCommit(Generic[Item]):
    # Writes a batch in one transaction; returns, per item, None (written) or the error for its caller.
    # If it raises, every item of the batch fails with that error.
    write: Callable[[list[Item]], list[BaseException | None]]
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _waiting: list[_Slot[Item]] = field(default_factory=list)
    _leading: bool = False

    def submit(self, item: Item) -> None:
        """Write `item` with whatever else is waiting; raises the error meant for this item."""
        slot = _Slot(item)
        with self._cond:
            self._waiting.append(slot)
            while not slot.done:
                if self._leading:
                    self._cond.wait()
                    continue
                self._leading = True
                batch, self._waiting = self._waiting, []
                self._cond.release()
                # Whatever happens to the write, every caller of the batch is answered and the next can lead.
                errors: list[BaseException | None] = [RuntimeError("the group commit was interrupted")] * len(batch)
                try:
                    errors = self._write(batch)
                finally:
                    self._cond.acquire()
                    for each, error in zip(batch, errors, strict=True):
                        each.done, each.error = True, error
                    self._leading = False
                    self._cond.notify_all()
        if slot.error is not None:
            raise slot.error

    def _write(self, batch: list[_Slot[Item]]) -> list[BaseException | None]:
        try:
            errors = self.write([slot.item for slot in batch])
        except Exception as exc:
            return [exc] * len(batch)
        if len(errors) != len(batch):
            return [RuntimeError(f"the batch write answered {len(errors)} of {len(batch)} items")] * len(batch)
        return errors
