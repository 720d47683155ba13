"""Subscriber lists: CSV files in subscribers/, read as streams, changed atomically under a lock.

A list is a UTF-8 CSV file with a header row (docs/subscribers.md). Reading accepts what real
files look like (BOM, CRLF, `;` from European Excel, quoted newlines); writing is always UTF-8,
comma-delimited, CRLF (RFC 4180), keeping the column order, unknown columns and row order.

Consent rules live here: only `subscribed` rows get mail; any other status of an address in any
list suppresses it everywhere (unless that row's `scope` is `list`); nothing but `purge` deletes
a row, and `purge` leaves a hashed entry in .newsletter/suppressed so the person cannot come back
through an import.

One concern per module; imports run one way, from the top of this list to the bottom:
    csvstore     all of it as the subscriber store (store.SubscriberStore) the API uses
    consent      add, resubscribe, purge, find
    status       status changes (unsubscribe, bounce) and the bounces a send still has to apply
    batch        changes from `serve`: journaled (group commit), folded within seconds
    selection    the recipients of a send
    importers    `subscribers import` (csv, Mailchimp, listmonk)
    export       `subscribers export`: any lists as one CSV list
    listing      `subscribers list` and `stats`, and lookup
    checks       `subscribers check`
    rewrite      changing a list: journal and Edit streamed into a new file, under its lock
    suppression  the suppression file and who is blocked (Blocklist)
    splice       the same for a few rows of a big list: untouched lines copied as bytes
    journal      a list's pending changes: appended durably, applied by every reader
    edits        what one change does to rows (status, add, scope, purge), as journal entries
    people       what is held on a person besides rows: status history, consent, soft bounces,
                 sign-ups waiting for confirmation
    csvfile      the CSV format: where lists live, reading, rows -> Subscriber
"""

from newsletter.people_types import ConsentRecord, Purged, SoftBounce, StatusEvent
from newsletter.store import Added, StatusChange, completed
from newsletter.subscribers.checks import CheckReport, check_lists
from newsletter.subscribers.consent import Found, add, find, purge
from newsletter.subscribers.csvfile import join_tags, list_files, stamp, suppressed_path
from newsletter.subscribers.csvstore import CsvStore
from newsletter.subscribers.importers import ImportReport, import_list
from newsletter.subscribers.journal import journal_path, open_list, read_list, read_loosely
from newsletter.subscribers.listing import Stats, browse, lookup, stats
from newsletter.subscribers.people import People
from newsletter.subscribers.selection import Selection, select, shown, store_list
from newsletter.subscribers.status import (
    apply_status,
    bounces_to_apply,
    change_status,
    set_status,
    subscribed_since,
)
from newsletter.subscribers.suppression import Blocklist, read_suppressed, suppress

__all__ = [
    "Added",
    "Blocklist",
    "CheckReport",
    "ConsentRecord",
    "CsvStore",
    "Found",
    "ImportReport",
    "People",
    "Purged",
    "Selection",
    "SoftBounce",
    "Stats",
    "StatusChange",
    "StatusEvent",
    "add",
    "apply_status",
    "bounces_to_apply",
    "browse",
    "change_status",
    "check_lists",
    "completed",
    "find",
    "import_list",
    "join_tags",
    "journal_path",
    "list_files",
    "lookup",
    "open_list",
    "purge",
    "read_list",
    "read_loosely",
    "read_suppressed",
    "select",
    "set_status",
    "shown",
    "stamp",
    "stats",
    "store_list",
    "subscribed_since",
    "suppress",
    "suppressed_path",
]
