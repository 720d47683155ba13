"""The slow, obvious ways to make the bytes the package makes fast: the references tests compare
against (and benchmarks/messages.py times). Not shipped: the package never runs them.

`build_reference` builds the message `MessageFactory.build` makes, with
`email.message.EmailMessage`; `wire_bytes` puts any message in SMTP DATA form in two passes.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8

from newsletter.config import Config
from newsletter.headers import check_header_value, tidy_header_text
from newsletter.message import (
    _aware,
    _distinct_fields,
    _html_escape,
    _list_id,
    recipient_address,
    recipient_name,
)
from newsletter.models import Field, Rendered, Subscriber, Template
from newsletter.tokens import TokenMaker

_LINE_ENDINGS = re.compile(rb"\r\n|\n|\r(?!\n)")
_LEADING_DOT = re.compile(rb"(?m)^\.")


def wire_bytes(message: bytes) -> bytes:
    """`message` as SMTP DATA wants it: CRLF line endings, ending in CRLF, leading dots doubled.

    The slow, obvious way (two passes over the whole message). The message builder does this
    once per issue; this is for single messages and for tests to compare against.
    """
    message = _LINE_ENDINGS.sub(b"\r\n", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    return _LEADING_DOT.sub(b"..", message)


def build_reference(
    rendered: Rendered,
    config: Config,
    secret: bytes,
    subscriber: Subscriber,
    *,
    message_id: str,
    now: dt.datetime,
    to: str | None = None,
    subject_prefix: str = "",
) -> bytes:
    """The same message as `MessageFactory.build`, made with EmailMessage (~300 a second).

    A reference for tests, not for sending: Python 3.11's folder mangles long headers (long
    display names lose their quotes, CPython gh-80222; a long List-Unsubscribe becomes
    encoded words), so this version does not fold; and names that look like encoded words
    ("=?...?=") are decoded when assigned."""
    address = recipient_address(subscriber, to)
    token = TokenMaker(secret, config.list_id).make(address)
    url = f"{config.newsletter.base_url}/unsubscribe/{token}"
    values = {"unsubscribe_url": url}
    fields = _distinct_fields(rendered.subject + rendered.text + rendered.html)
    raw = {f: field_value(f, subscriber, values) for f in fields}
    name = "" if to is not None else recipient_name(subscriber)
    utf8 = not address.isascii()
    # Unfolded: Python 3.11's header folder drops the quotes of a long display name, turning
    # "Smith, J..." into two addresses (CPython gh-80222, fixed in later releases).
    msg = EmailMessage(policy=(SMTPUTF8 if utf8 else SMTP).clone(max_line_length=1 << 20))
    msg["From"] = Address(tidy_header_text(config.from_name), addr_spec=config.from_address)
    msg["To"] = Address(name, addr_spec=address) if utf8 or name else address
    msg["Subject"] = filled_subject(rendered.subject, raw, subject_prefix)
    msg["Date"] = _aware(now)
    msg["Message-ID"] = message_id
    msg["MIME-Version"] = "1.0"
    msg["List-Id"] = _list_id(config)
    mailto = config.unsubscribe_mailto
    msg["List-Unsubscribe"] = f"<{url}>" + (f", <mailto:{mailto}>" if mailto else "")
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    if config.reply_to is not None:
        msg["Reply-To"] = Address(
            tidy_header_text(config.reply_to[0]), addr_spec=config.reply_to[1]
        )
    msg.set_content(_fill(rendered.text, raw, str))
    msg.add_alternative(_fill(rendered.html, raw, _html_escape), subtype="html")
    return msg.as_bytes()


def _fill(template: Template, raw: Mapping[Field, str], escape: Callable[[str], str]) -> str:
    """The template filled; a value's own line breaks stay its own (a trailing CR in a value
    does not merge with the LF after the field into one break)."""
    return "".join(
        escape(re.sub(r"\r\n?", "\n", raw[p])) if isinstance(p, Field) else p for p in template
    )


def field_value(fld: Field, subscriber: Subscriber, message_values: Mapping[str, str]) -> str:
    """The value filled into `fld` for this subscriber: the column unless missing or blank,
    else the field's default, else ""."""
    if fld.source == "message":
        value = message_values.get(fld.name, "")
    elif fld.name == "name":
        value = subscriber.name
    elif fld.name == "email":
        value = subscriber.email
    else:
        value = subscriber.fields.get(fld.name, "")
    return value if value and not value.isspace() else fld.default or ""


def filled_subject(
    subject: Template, raw: Mapping[Field, str], prefix: str = "", recipient: str = ""
) -> str:
    """Prefix + the subject template filled; every value checked before it nears a header."""
    parts = [prefix]
    for piece in subject:
        if isinstance(piece, Field):
            value = raw[piece]
            check_header_value(value, field=f"subject field {piece.name!r}", recipient=recipient)
            parts.append(value)
        else:
            parts.append(piece)
    return tidy_header_text("".join(parts))
