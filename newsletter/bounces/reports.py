"""One message of the bounce mailbox -> a Report: what kind, whom it is about, where it was sent.

Delivery status notifications (RFC 3464: multipart/report; report-type=delivery-status) are
read with the stdlib email package: each recipient's Action, Status and Final-/Original-
Recipient. Feedback reports (RFC 5965 ARF: report-type=feedback-report) are complaints. Any other
message goes to flufl.bounce (GNU Mailman's detectors for the formats MTAs used before DSNs,
such as Exim's X-Failed-Recipients); what it finds has no status, so the first enhanced status
code in the text decides hard or soft (none: hard, 5.0.0).

`return_paths` are the addresses the report was delivered to (Delivered-To, X-Original-To, To,
...; for a complaint the original envelope sender too): one of them is our VERP return path
when the send had a bounce_address, and that, not the text, says whom it is about.
"""

from __future__ import annotations

import base64
import email
import email.utils
import logging
import quopri
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_DELIVERED_TO = ("delivered-to", "x-original-to", "envelope-to", "x-envelope-to")
_ADDRESSED_TO = ("to", "cc")
_COMPLAINTS = ("abuse", "fraud")  # RFC 5965 Feedback-Types a reader's complaint has ("not-spam",
# "auth-failure" (DMARC failure reports), "virus" and "other" are not one)
_PLAIN = ("7bit", "8bit", "binary")
# flufl.bounce logs a detector's exception with its traceback before raising it again (we report
# the message as malformed): without a handler of its own, Python would print that to stderr
logging.getLogger("flufl.bounce").addHandler(logging.NullHandler())


@dataclass(frozen=True)
class Recipient:
    """One recipient a report is about."""

    email: str  # Final-Recipient (the address the receiving system used)
    original: str  # Original-Recipient: the address we sent to, when the MTA kept it
    action: str  # failed, delayed, delivered, relayed, expanded; "complaint" for ARF
    status: str  # the enhanced status, "5.1.1"; "" when none was given

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(a for a in (self.original, self.email) if a)


@dataclass(frozen=True)
class Report:
    kind: str  # "dsn", "arf", "other" (flufl.bounce found one), "none" (not a bounce)
    recipients: tuple[Recipient, ...]
    return_paths: tuple[str, ...]  # where it was delivered: our VERP address, if any
    message_ids: tuple[str, ...]  # of the original message, when the report returned it
    at: float | None  # the report's Date (unix time)
    subject: str
    problem: str = ""  # why it could not be read ("" when it could)


def read_report(data: bytes) -> Report:
    """The report in one message's bytes; a Report with `problem` set when it is malformed."""
    try:
        msg = email.message_from_bytes(data)
    except Exception as exc:  # the email package may raise anything on junk
        return _malformed(f"not a mail message ({exc})")
    try:
        return _read(msg)
    except (ValueError, LookupError, TypeError, AttributeError, UnicodeError) as exc:
        return _malformed(f"cannot be read ({type(exc).__name__}: {exc})", msg)


def _malformed(problem: str, msg: Message | None = None) -> Report:
    subject = _text(msg.get("subject", "")) if msg is not None else ""
    return Report("none", (), (), (), None, subject, problem)


def _read(msg: Message) -> Report:
    report = msg.get_content_type() == "multipart/report"
    kind = str(msg.get_param("report-type", "")).lower() if report else ""
    forwarded = None if report else _forwarded_report(msg)
    if forwarded is not None:  # forwarded to the bounce mailbox, or wrapped on the way
        return _read(forwarded)
    paths = _delivered_to(msg)
    subject, at = _text(msg.get("subject", "")), _date(msg)
    originals = list(_originals(msg))
    ids = tuple(i for o in originals if (i := _angle(o.get("message-id", ""))))
    if kind == "delivery-status":
        recipients = _dsn_recipients(msg)
        if not recipients:
            return Report("dsn", (), paths, ids, at, subject, "a delivery report naming nobody")
        return Report("dsn", recipients, paths, ids, at, subject)
    if kind == "feedback-report":
        return _arf(msg, paths, ids, originals, at, subject)
    recipients = _other(msg)
    return Report("other" if recipients else "none", recipients, paths, ids, at, subject)


# -- where it was delivered ---------------------------------------------------------------------


def _delivered_to(msg: Message) -> tuple[str, ...]:
    found = [_angle(str(v)) for name in _DELIVERED_TO for v in msg.get_all(name, [])]
    addressed = [str(v) for name in _ADDRESSED_TO for v in msg.get_all(name, [])]
    found += [address for _, address in email.utils.getaddresses(addressed)]
    return tuple(dict.fromkeys(a for a in found if "@" in a))


def _angle(value: str) -> str:
    return value.strip().strip("<>").strip()


def _text(value: object) -> str:
    return " ".join(str(value).split())[:200]


def _date(msg: Message) -> float | None:
    try:
        return email.utils.parsedate_to_datetime(str(msg.get("date", ""))).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def _parts(msg: Message) -> list[Message]:
    """The parts of a report itself: not those of a message it returned (the original of a
    bounce may be a report about someone else)."""
    payload = msg.get_payload() if msg.is_multipart() else None
    return [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []


def _forwarded_report(msg: Message) -> Message | None:
    """The outermost multipart/report inside a message that is not one itself: attached to a
    forward (message/rfc822), or wrapped by a gateway that added a part."""
    return next((p for p in msg.walk() if p.get_content_type() == "multipart/report"), None)


def _originals(msg: Message) -> Iterator[Message]:
    """The original message (or its headers) a report returned."""
    for part in _parts(msg):
        kind = part.get_content_type()
        if kind in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                yield payload[0]
        elif kind in ("text/rfc822-headers", "text/global-headers"):
            yield HeaderParser().parsestr(_body_text(part))


def _body_text(part: Message) -> str:
    raw = part.get_payload(decode=True)
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="replace")
    return str(part.get_payload())


def _blocks(part: Message) -> list[Message]:
    """The header blocks of a message/delivery-status or message/feedback-report part (the email
    package parses the first kind itself, unless it was transfer-encoded)."""
    payload = part.get_payload()
    encoding = str(part.get("content-transfer-encoding", "7bit")).strip().lower()
    if not isinstance(payload, list):
        text = _body_text(part)
    elif encoding in _PLAIN or encoding not in ("base64", "quoted-printable"):
        return [p for p in payload if isinstance(p, Message)]
    else:  # the email package parsed the encoded text as header blocks: decode it first
        text = _decoded(
            "\n\n".join(p.as_string() for p in payload if isinstance(p, Message)), encoding
        )
    return [HeaderParser().parsestr(b) for b in re.split(r"\r?\n\s*\r?\n", text) if b.strip()]


def _decoded(text: str, encoding: str) -> str:
    raw = text.encode("ascii", errors="replace")
    data = base64.b64decode(raw) if encoding == "base64" else quopri.decodestring(raw)
    return data.decode("utf-8", errors="replace")


# -- delivery status notifications (RFC 3464) ----------------------------------------------------


def _dsn_recipients(msg: Message) -> tuple[Recipient, ...]:
    found: list[Recipient] = []
    for part in _parts(msg):
        if part.get_content_type() in ("message/delivery-status", "message/global-delivery-status"):
            for block in _blocks(part)[1:]:  # the first block is about the message
                recipient = _dsn_recipient(block)
                if recipient is not None:
                    found.append(recipient)
    return tuple(found)


def _dsn_recipient(block: Message) -> Recipient | None:
    final = _typed_address(block.get("final-recipient", ""))
    original = _typed_address(block.get("original-recipient", ""))
    if not (final or original):
        return None
    action = str(block.get("action", "")).strip().lower()
    status = _status(str(block.get("status", ""))) or _status(str(block.get("diagnostic-code", "")))
    return Recipient(final, original, action or "failed", status)


def _typed_address(value: object) -> str:
    """`rfc822; someone@example.org` -> the address."""
    text = " ".join(str(value).split())
    kind, _, address = text.partition(";")
    return _angle(address if address else kind)


def _status(text: str) -> str:
    found = _STATUS.search(text)
    return ".".join(found.groups()) if found else ""


# -- feedback reports (RFC 5965) ----------------------------------------------------------------


def _arf(
    msg: Message,
    paths: tuple[str, ...],
    ids: tuple[str, ...],
    originals: list[Message],
    at: float | None,
    subject: str,
) -> Report:
    fields = [p for p in _parts(msg) if p.get_content_type() == "message/feedback-report"]
    blocks = [block for part in fields for block in _blocks(part)]
    if not blocks:
        return Report("arf", (), paths, ids, at, subject, "a feedback report without its fields")
    kind = re.sub(r"\(.*?\)", " ", str(blocks[0].get("feedback-type", ""))).strip().lower()
    kind = kind.split()[0] if kind else "abuse"  # a report without one: as a complaint
    if kind not in _COMPLAINTS:  # not a reader's complaint: for a person to read, if anyone
        return Report("none", (), paths, ids, at, f"{kind} feedback report: {subject}")
    mail_from = [_angle(str(v)) for b in blocks for v in b.get_all("original-mail-from", [])]
    return_paths = [_angle(str(o.get("return-path", ""))) for o in originals]
    rcpts = [_angle(str(v)) for b in blocks for v in b.get_all("original-rcpt-to", [])]
    recipients = tuple(Recipient(r, "", "complaint", "") for r in rcpts if r) or (
        Recipient("", "", "complaint", ""),
    )
    everywhere = tuple(dict.fromkeys(a for a in (*mail_from, *return_paths, *paths) if "@" in a))
    return Report("arf", recipients, everywhere, ids, at, subject)


# -- other formats (flufl.bounce) ---------------------------------------------------------------


def _other(msg: Message) -> tuple[Recipient, ...]:
    from flufl.bounce import all_failures

    temporary, permanent = all_failures(msg)
    status = _status(_all_text(msg))
    if not status or status.startswith("2"):
        status = "5.0.0"
    failed = [Recipient(a.decode("ascii"), "", "failed", status) for a in sorted(permanent)]
    delayed = [Recipient(a.decode("ascii"), "", "delayed", "4.0.0") for a in sorted(temporary)]
    return tuple(failed + [d for d in delayed if d.email not in {f.email for f in failed}])


def _all_text(msg: Message) -> str:
    """The text parts of a report (not the returned original), for a status code."""
    texts = []
    for part in msg.walk():
        if part.get_content_type() in ("message/rfc822", "text/rfc822-headers"):
            break
        if part.get_content_type() == "text/plain":
            texts.append(_body_text(part))
    return "\n".join(texts)
