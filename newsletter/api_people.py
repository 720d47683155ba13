"""The API's calls about people, wired behind `Newsletter` as the sends are in sending.py:
everything held on one address (`Newsletter.person`, what `subscribers show` prints), erasing
it on request (`Newsletter.purge`), and the bounce mailbox (`Newsletter.bounces`), with what
the first two return (`Person`, `Erased`). Callers import these from `newsletter.api`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from newsletter.errors import BadAddress, BadOption
from newsletter.people_types import (
    ConsentRecord,
    HeldRow,
    Scrubbed,
    SendOutcome,
    SignupRecord,
    SoftBounce,
    StatusEvent,
)

if TYPE_CHECKING:
    from newsletter.api import Newsletter, PathLike
    from newsletter.bounces import Outcome
    from newsletter.verp import ReturnPaths


@dataclass(frozen=True)
class Person:
    """Everything held on one address: what `subscribers show` prints, and what a data subject
    access request asks for. `to_json()` is the object of `subscribers show --json`
    (docs/person.schema.json)."""

    email: str  # as asked
    key: str  # how addresses compare (the lookup key: case and Unicode form do not matter)
    root: Path  # the newsletter folder: paths in `to_json()` are relative to it
    rows: tuple[HeldRow, ...]  # every row in every list, all its columns
    suppressed: str | None  # the reason of its suppression entry; None: no entry
    history: tuple[StatusEvent, ...]
    consents: tuple[ConsentRecord, ...]
    soft_bounces: tuple[SoftBounce, ...]
    sends: tuple[SendOutcome, ...]
    signups: tuple[SignupRecord, ...] = ()  # web-form requests, confirmed or not

    @property
    def held(self) -> bool:
        """Is anything held on the address at all? ("we hold nothing" is an answer too)"""
        places = [self.rows, self.history, self.consents, self.soft_bounces, self.sends]
        return self.suppressed is not None or any([*places, self.signups])

    def to_json(self) -> dict[str, Any]:
        return {
            "email": self.email,
            "key": self.key,
            "held": self.held,
            "rows": [
                {"file": self._shown(r.path), "line": r.line, "columns": dict(r.columns)}
                for r in self.rows
            ],
            "suppressed": None if self.suppressed is None else {"reason": self.suppressed},
            "history": [dataclasses.asdict(event) for event in self.history],
            "consents": [dataclasses.asdict(record) for record in self.consents],
            "soft_bounces": [dataclasses.asdict(bounce) for bounce in self.soft_bounces],
            "signups": [dataclasses.asdict(signup) for signup in self.signups],
            "sends": [
                {
                    "issue": o.issue,
                    "destination": o.destination,
                    "outcome": o.outcome,
                    "at": None if o.at is None else utc_stamp(o.at),
                    "ledger": self._shown(Path(o.ledger)),
                    "returns": [
                        {"kind": r.kind, "status": r.status, "at": utc_stamp(r.at)}
                        for r in o.returns
                    ],
                }
                for o in self.sends
            ],
        }

    def _shown(self, path: Path) -> str:
        """A path in the folder as the folder sees it (`subscribers/news.csv`)."""
        return str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)


@dataclass(frozen=True)
class Erased:
    """What `Newsletter.purge` erased; only the suppression entry (a digest) is left."""

    email: str
    rows: int  # list rows deleted
    files: tuple[Path, ...]  # the lists they were in
    sends: tuple[Scrubbed, ...]  # the sends' records of the person, now without the address
    elsewhere: tuple[Path, ...] = ()  # files under subscribers/ that are no list but hold it

    @property
    def unfinished(self) -> tuple[str, ...]:
        """Ledgers in use (a send of the issue planned or running, or a reader) that may keep
        old copies: purge again once that is done."""
        return tuple(one.ledger for one in self.sends if not one.complete)


def utc_stamp(unix: float) -> str:
    """ISO 8601 UTC to the second, as the lists write times: 2026-01-31T09:00:00Z."""
    moment = dt.datetime.fromtimestamp(unix, dt.UTC).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------------
# people


def show_person(nl: Newsletter, email: str) -> Person:
    person = _person(nl, email)
    refusal = None if person.held else _not_an_address(email)
    if refusal is not None:  # "nothing is held" would be the answer to a typo
        raise refusal
    return person


def _person(nl: Newsletter, email: str) -> Person:
    from newsletter.addresses import address_key

    held = nl.store.held(_given(email))
    return Person(
        email,
        address_key(email),
        nl.config.root,
        held.rows,
        held.suppressed,
        held.history,
        held.consents,
        held.soft_bounces,
        tuple(nl.sends.outcomes(email)),
        held.signups,
    )


def purge_person(nl: Newsletter, email: str) -> Erased:
    from newsletter.errors import InvalidInput

    refusal = _not_an_address(email, "; nothing was erased")
    if refusal is not None and not _person(nl, email).held:
        raise refusal
    try:
        purged = nl.store.purge(_given(email))
    except InvalidInput:
        nl.sends.forget(email)  # a broken list must not keep the ledgers unerased
        raise
    scrubbed = nl.sends.forget(email)
    files, elsewhere = tuple(purged.files), tuple(purged.elsewhere)
    return Erased(email, purged.rows, files, tuple(scrubbed), elsewhere)


def _given(email: str) -> str:
    """An address to look up or erase: anything but nothing (a row with a malformed address
    is still someone's)."""
    if not email.strip():
        from newsletter.errors import BadAddress

        raise BadAddress(email, "no address given")
    return email


def _not_an_address(email: str, then: str = "") -> BadAddress | None:
    """Why `email` is not an address (a name and address pasted from a From line matches no
    row), naming the address inside it when there is one; None for an address."""
    from email.utils import parseaddr

    from newsletter.addresses import normalise_address

    try:
        normalise_address(email, allow_reserved=True)
        return None
    except BadAddress:
        inside = parseaddr(email.strip())[1]
        inside = inside[7:] if inside.lower().startswith("mailto:") else inside
    try:
        inside = inside and normalise_address(inside, allow_reserved=True)[0]
    except BadAddress:
        inside = ""
    hint = f": give the address alone, as in {inside}" if inside else ""
    return BadAddress(email, f"not an address, and nothing is held on it{hint}{then}")


# ---------------------------------------------------------------------------------------------
# the bounce mailbox


def read_bounces(
    nl: Newsletter,
    maildir: PathLike | None,
    imap: str | None,
    *,
    dry_run: bool,
    ca_file: PathLike | None,
) -> list[Outcome]:
    from newsletter import bounces

    if (maildir is None) == (imap is None):
        raise BadOption("maildir", maildir, "give a Maildir folder or an imaps:// URL (one)")
    ca = Path(ca_file) if ca_file is not None else None
    mailbox: bounces.Mailbox = (
        bounces.Maildir(Path(maildir))
        if maildir is not None
        else bounces.Imap(str(imap), ca_file=ca)
    )
    rules = bounces.Rules(
        nl.config.newsletter.soft_bounce_limit,
        nl.config.newsletter.soft_bounce_days,
        dry_run,
    )
    processor = bounces.Processor(nl.store, nl.sends, _return_paths(nl), rules)
    try:
        return bounces.run(mailbox, processor)
    finally:
        processor.close()
        mailbox.close()


def _return_paths(nl: Newsletter) -> ReturnPaths | None:
    """What reads our VERP return paths: needs the secret the sends made them with."""
    from newsletter.config import SECRET_ENV, secret
    from newsletter.verp import ReturnPaths

    if not nl.config.bounce_address:
        return None
    stored = nl.config.state_dir / "secret"  # what an outbox send made, if any
    create = not os.environ.get(SECRET_ENV) and stored.is_file()
    return ReturnPaths(nl.config.bounce_address, secret(nl.config, create=create))
