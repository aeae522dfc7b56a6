"""Unreadable files found when first decoded (datasets read per item: their index opens no file). With
``data.on_error=skip`` each is warned about once — in the process that trains, whichever DataLoader worker decoded
it — with the running count, in the messages an index-time check gives (``skipped <reason>``, ``N file(s) under
ROOT skipped``); with ``fail`` the decode error stops the run (one line, from a worker too)."""

from __future__ import annotations

import logging

log = logging.getLogger("modelforge.data")


class SkippedAtFirstTouch:
    """The skipped files of one dataset (and its subsets). ``found`` is called where the file was decoded; in a
    DataLoader worker the reasons wait there until the batch carries them back (``take``, then ``note`` in the
    training process — training/batches.py does both), so a file is reported once however many workers and epochs
    meet it."""

    def __init__(self, where: str):
        self.where = where  # e.g. "file(s) under /data/train"
        self.pending: list[str] = []
        self.seen: set[str] = set()

    def found(self, reason: str) -> None:
        from torch.utils.data import get_worker_info

        if get_worker_info() is None:
            self.note([reason])
        else:
            self.pending.append(reason)

    def take(self) -> list[str]:
        taken, self.pending = self.pending, []
        return taken

    def note(self, reasons: list[str]) -> None:
        fresh = [reason for reason in dict.fromkeys(reasons) if reason not in self.seen]
        for reason in fresh:
            self.seen.add(reason)
            log.warning("skipped %s", reason)
        if fresh:
            log.warning("%d %s skipped so far (set data.on_error=fail to stop instead)", len(self.seen), self.where)

    @property
    def count(self) -> int:
        return len(self.seen)
