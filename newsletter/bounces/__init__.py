"""The bounce mailbox: bounces and complaints read, mapped to their recipients, applied.

One concern per module; imports run one way, from the top of this list to the bottom:
    process    a report -> the recipient of one send (VERP, else the ledgers) -> what changes
    reports    one message -> a Report (RFC 3464 DSNs, RFC 5965 ARF, flufl.bounce for the rest)
    mailboxes  where the messages are: a Maildir or an IMAP folder, and marking them processed
"""

from __future__ import annotations

from newsletter.bounces.mailboxes import IMAP_PASSWORD_ENV, KEYWORD, Imap, Mailbox, Maildir
from newsletter.bounces.process import Outcome, Processor, Rules
from newsletter.bounces.reports import Recipient, Report, read_report


def run(mailbox: Mailbox, processor: Processor) -> list[Outcome]:
    """Every message not processed yet, in mailbox order; each marked once it is (unless a dry
    run, or left for later because a send of its issue is running)."""
    outcomes = []
    for name, data in mailbox.messages():
        outcome = processor.process(name, read_report(data))
        if not processor.rules.dry_run and outcome.result != "later":
            mailbox.done(name, seen=not outcome.needs_a_person)
        outcomes.append(outcome)
    return outcomes


__all__ = [
    "IMAP_PASSWORD_ENV",
    "KEYWORD",
    "Imap",
    "Mailbox",
    "Maildir",
    "Outcome",
    "Processor",
    "Recipient",
    "Report",
    "Rules",
    "read_report",
    "run",
]
