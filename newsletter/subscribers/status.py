"""Status changes (unsubscribe, bounce, complaint, pending): a suppression only ever gets
stronger, and an unsubscribe is recorded even when a list cannot be changed."""

from __future__ import annotations

import csv
import datetime as dt
import math
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import cast

from newsletter.addresses import address_key, key_hash
from newsletter.errors import InvalidInput, LockBusy, NewsletterError, Problem, StorageError
from newsletter.models import STATUSES, SUPPRESSING, Status, Subscriber
from newsletter.store import StatusChange, completed
from newsletter.subscribers.batch import Batch
from newsletter.subscribers.csvfile import (
    RANK,
    RowParser,
    absent,
    date_problem,
    list_files,
    now,
    stamp,
)
from newsletter.subscribers.edits import StatusEdit, should_change
from newsletter.subscribers.journal import open_list
from newsletter.subscribers.people import People
from newsletter.subscribers.rewrite import rewrite
from newsletter.subscribers.suppression import read_suppressed, suppress


def change_status(
    folder: Path,
    email: str,
    status: Status,
    *,
    lists: Sequence[Path] | None = None,
    when: dt.datetime | None = None,
    scope_list: bool = False,
    source: str = "",
) -> StatusChange:
    """Set `status` in every list holding the address (default: every list in subscribers/).

    No list holds it and the status suppresses: an entry in the suppression file instead. A list
    that cannot be read or written is reported (InvalidInput) after the others are done, with a
    suppression entry written, so an unsubscribe is never lost to a broken file.
    """
    return completed(
        apply_status(
            folder, email, status, lists=lists, when=when, scope_list=scope_list, source=source
        )
    )


def apply_status(
    folder: Path,
    email: str,
    status: Status,
    *,
    lists: Sequence[Path] | None = None,
    when: dt.datetime | None = None,
    scope_list: bool = False,
    source: str = "",
    batch: Batch | None = None,
) -> StatusChange:
    """`change_status` that returns the lists it could not change in `.broken` instead of raising.

    With a suppressing status and a broken list, the suppression file records the address (a
    failure to write that file raises: the change is then not recorded anywhere). With `batch`,
    the change goes to each list's journal (durable; in `changed` as written there), to be
    folded by the batch.
    """
    if status not in RANK:
        raise InvalidInput.one(None, f"unknown status {status!r} (one of: {', '.join(STATUSES)})")
    key = address_key(email)
    moment = stamp(when) if when is not None else now()
    paths = list_files(folder) if lists is None else list(lists)
    changed: list[Path] = []
    journaled: list[Path] = []
    held: list[Path] = []
    broken: list[Problem] = []
    for path in paths:
        try:
            if absent(path) or (batch is not None and not batch.holds(path, key)):
                continue
            edit = StatusEdit(key, status, moment, scope_list=scope_list, source=source)
            if batch is not None:  # the list holds the address: the entry will change it
                batch.append(path, edit)  # its history is written when it is folded (rewrite.py)
                journaled.append(path)
                held.append(path)
                continue
            if rewrite(path, edit):
                changed.append(path)
            if edit.held:
                held.append(path)
        except (NewsletterError, OSError, csv.Error) as exc:
            broken.extend(_problems(path, exc))
    suppressed = False
    if status in SUPPRESSING and (broken or not held):
        suppressed = suppress(folder, email, status)
    places = [p.name for p in changed] + ([""] if suppressed else [])
    broken.extend(record_history(folder, email, status, places, moment, source))
    return StatusChange(email, status, changed + journaled, held, suppressed, broken)


def record_history(
    folder: Path, email: str, status: str, places: Sequence[str], moment: str, source: str
) -> list[Problem]:
    """Add the change to the person's history (people.py); a failure is reported, not raised:
    the change itself is already durable in the lists."""
    if not places:
        return []
    try:
        with People(folder) as people:
            for place in places:
                people.record_status(email, status, list_name=place, source=source, at=moment)
    except StorageError as exc:
        return [Problem(exc.path, f"status history not recorded: {exc.action}: {exc.reason}")]
    return []


def _problems(path: Path, exc: NewsletterError | OSError | csv.Error) -> list[Problem]:
    """Why a list could not be changed, as located problems (no file contents beyond the error)."""
    if isinstance(exc, InvalidInput):
        return exc.problems
    if isinstance(exc, LockBusy):
        return [Problem(path, "another process holds its lock")]
    if isinstance(exc, StorageError):  # names the file it failed on: the list, its lock or a temp
        where = "" if exc.path == path else f"{exc.path}: "
        return [Problem(path, f"{where}{exc.action}: {exc.reason}")]
    if isinstance(exc, OSError):
        return [Problem(path, exc.strerror or type(exc).__name__)]
    if isinstance(exc, csv.Error):
        return [Problem(path, f"unreadable CSV: {exc}")]
    return [Problem(path, str(exc))]


def set_status(
    folder: Path,
    email: str,
    status: str,
    *,
    lists: Sequence[Path] | None = None,
    when: dt.datetime | None = None,
) -> list[Path]:
    """Set `status` for an address in every list holding it; the lists changed.

    For the dispatcher (5.1.x bounces: "bounced") and the unsubscribe endpoint ("unsubscribed").
    When no list holds the address and the status suppresses, the suppression file records it.
    """
    return change_status(folder, email, cast(Status, status), lists=lists, when=when).changed


def bounces_to_apply(folder: Path, refusals: Iterable[tuple[str, float]]) -> list[str]:
    """The addresses of 5.1.x refusals (address, unix time) that the lists do not show yet.

    Decided by reading every list of subscribers/ once (where `set_status` marks a bounce):
    shown means every row of the address is bounced or stronger, or no row holds it and the
    suppression file does. A row subscribed again after the refusal (a later subscribed_at)
    means the person came back since: their address is left alone.
    """
    wanted = {key_hash(address_key(email)): (email, at) for email, at in refusals}
    rows: dict[int, list[tuple[str, str]]] = {}
    unreadable = False
    for path in list_files(folder) if wanted else []:
        try:
            _bounce_rows(path, wanted, rows)
        except (NewsletterError, OSError, csv.Error):
            unreadable = True  # it may hold any of them: only the suppression file shows those
    suppressed = read_suppressed(folder) if wanted else set()
    return [
        email
        for compact, (email, at) in wanted.items()
        if _bounce_missing(rows.get(compact, []), at, compact in suppressed, unreadable)
    ]


def _bounce_rows(
    path: Path, wanted: Collection[int], rows: dict[int, list[tuple[str, str]]]
) -> None:
    """Add the (status, subscribed_at) of each row of `path` whose address is `wanted`."""
    with open_list(path) as reader:
        parser = RowParser(reader)
        for _line, cells in reader.rows():
            compact = key_hash(address_key(cells[parser.email]))
            if compact in wanted:
                status = parser.cell(cells, parser.status).lower() or "subscribed"
                since = parser.cell(cells, reader.index.get("subscribed_at"))
                rows.setdefault(compact, []).append((status, since))


def _bounce_missing(
    rows: list[tuple[str, str]], at: float, suppressed: bool, unreadable: bool
) -> bool:
    if any(_after(since, at) for _status, since in rows):
        return False
    weaker = any(should_change(status, "bounced") for status, _since in rows)
    if not rows or unreadable:  # then the suppression file is where the bounce shows
        return weaker or not suppressed
    return weaker


def subscribed_since(subscriber: Subscriber, at: float) -> bool:
    """Does the subscriber's row say they subscribed at or after the unix time `at`?"""
    return _after(subscriber.fields.get("subscribed_at", "").strip(), at)


def _after(when: str, at: float) -> bool:
    """Is the ISO 8601 time `when` at or after the unix time `at`? (A date alone: its start.)"""
    if not when or date_problem(when):
        return False
    moment = dt.datetime.fromisoformat(when.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp() >= math.floor(at)  # lists keep seconds: the same second counts
