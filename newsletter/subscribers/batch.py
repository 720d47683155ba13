"""Changes from a long-running process (`serve`): each durable in its list's journal when it
returns, folded into the list file within FOLD_AFTER seconds and when the batch ends.

A command changes a list by rewriting it at once (rewrite.py), which also folds whatever a
batch left in the journal. A batch appends instead: one short append under the journal's lock,
shared with the other threads appending at the same moment (one write, one fsync), so a list
of any size takes an unsubscribe in about the time of an fsync. A thread of the batch folds
each list FOLD_AFTER seconds after its first unfolded change, and the lists whose journal
it finds when it starts (left by a process killed before its fold). A list that cannot be folded
(a full disk, a broken row) keeps its journal, which every reader applies, and the addresses
its pending entries stop mail to go to the suppression file as well; the fold is tried again.
"""

from __future__ import annotations

import csv
import logging
import re
import threading
import time
from pathlib import Path

from newsletter.errors import NewsletterError
from newsletter.models import SUPPRESSING
from newsletter.subscribers.csvfile import list_files
from newsletter.subscribers.edits import Edit, StatusEdit
from newsletter.subscribers.journal import Holders, append, journal_path, read_journal
from newsletter.subscribers.rewrite import fold
from newsletter.subscribers.suppression import suppress

FOLD_AFTER = 2.0  # seconds from a list's first unfolded change to its fold (the rule: <= 5)
RETRY_AFTER = 30.0  # seconds before a fold that failed is tried again
log = logging.getLogger("newsletter.subscribers")


class Batch:
    """Journaled changes to the lists of `folder`, folded by a thread of its own."""

    def __init__(self, folder: Path, *, fold_after: float | None = None) -> None:
        self.folder = folder
        self.fold_after = FOLD_AFTER if fold_after is None else fold_after
        self.holders = Holders()
        self.due: dict[Path, float] = {}  # list -> time.monotonic() its fold is due
        for path in list_files(folder):  # what a process killed before its fold left
            if journal_path(path).exists():
                self.due[path] = time.monotonic() + self.fold_after
        self.wake = threading.Condition()
        self.closing = False
        self.thread = threading.Thread(target=self._run, name="newsletter-fold", daemon=True)
        self.thread.start()

    def holds(self, path: Path, key: str) -> bool:
        return self.holders.holds(path, key)

    def append(self, path: Path, edit: Edit) -> None:
        """Durable when it returns; in the list file within `fold_after` seconds."""
        append(path, [edit])
        with self.wake:
            self.due.setdefault(path, time.monotonic() + self.fold_after)
            self.wake.notify()

    def close(self) -> None:
        """Fold every list with changes left (after the thread's fold in progress ends)."""
        with self.wake:
            self.closing = True
            self.wake.notify()
        self.thread.join()
        for path in list(self.due):
            self._fold(path, again=False)
        self.due.clear()

    def _run(self) -> None:
        while True:
            with self.wake:
                ready = self._ready()
                while not ready and not self.closing:
                    self.wake.wait(self._sleep())
                    ready = self._ready()
                if self.closing:
                    return
            for path in ready:
                self._fold(path, again=True)

    def _ready(self) -> list[Path]:
        """The lists whose fold is due, taken off the schedule (the caller holds `wake`)."""
        now = time.monotonic()
        ready = [path for path, due in self.due.items() if due <= now]
        for path in ready:
            del self.due[path]
        return ready

    def _sleep(self) -> float | None:
        return max(0.0, min(self.due.values()) - time.monotonic()) if self.due else None

    def _fold(self, path: Path, *, again: bool) -> None:
        try:
            folded = fold(path)
            if folded is not None:
                self.holders.folded(path, *folded)
        except (NewsletterError, OSError, csv.Error, ValueError) as exc:  # the thread goes on
            self._keep(path, exc)
            if again:
                with self.wake:
                    self.due.setdefault(path, time.monotonic() + RETRY_AFTER)

    def _keep(self, path: Path, exc: Exception) -> None:
        """A list that cannot be folded: say why, and suppress who its entries stop mail to."""
        log.warning(
            "list not folded, its changes stay in its journal and its unsubscribes go to the "
            "suppression file: list_file=%s reason=%s",
            path,
            _scrub(str(exc).replace("\n", "; ")),
        )
        try:
            pending = read_journal(path).pending(None)
            for edit in pending:
                if isinstance(edit, StatusEdit) and edit.status in SUPPRESSING:
                    suppress(self.folder, edit.key, edit.status)
        except (NewsletterError, OSError) as failure:
            log.error("suppression file not written: reason=%s", _scrub(str(failure)))


_ADDRESS = re.compile(r"[^\s,;:'\"<>()]+@[^\s,;:'\"<>()]+")


def _scrub(text: str) -> str:
    """A message without any address in it (a row or header may quote one): logs keep none."""
    return _ADDRESS.sub("<address>", text)
