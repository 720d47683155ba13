"""What the web endpoints of `serve` share (the unsubscribe link, the sign-up form): the page
every answer is, with the headers every answer carries; a POST form read within bounds; and
log text with the addresses taken out.
"""

from __future__ import annotations

import html
import re
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import default as email_policy
from urllib.parse import parse_qsl

from starlette.responses import HTMLResponse, Response

from newsletter.errors import BadForm

MAX_FIELDS = 16  # fields or parts in one POST form

_PAGE = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>{title}</title></head>
<body style="font-family: Helvetica, Arial, sans-serif; max-width: 32em; margin: 3em auto;
padding: 0 1em; color: #222">
<h1 style="font-size: 1.4em">{title}</h1>
{body}
</body></html>
"""
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token is in the URL: never pass it on
    "X-Robots-Tag": "noindex",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}


def page(lang: str, title: str, body: str, status: int, *, retry_after: bool = False) -> Response:
    """An answer: `body` (HTML, already escaped) under `title`, never cached nor indexed."""
    headers = dict(_HEADERS, **({"Retry-After": "60"} if retry_after else {}))
    text = _PAGE.format(lang=html.escape(lang), title=html.escape(title), body=body)
    return HTMLResponse(text, status_code=status, headers=headers)


_ADDRESS = re.compile(r"[^\s,;:'\"<>()]+@[^\s,;:'\"<>()]+")


def scrub(text: str) -> str:
    """An error message without any address in it (a header or cell may quote one)."""
    return _ADDRESS.sub("<address>", text)


def form_fields(body: bytes) -> list[tuple[str, str]]:
    """The fields of a form-urlencoded body (UTF-8); BadForm past MAX_FIELDS."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        return parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except ValueError:
        raise BadForm(f"more than {MAX_FIELDS} fields") from None


def multipart_fields(content_type: str, body: bytes) -> list[tuple[str, str]]:
    """multipart/form-data one level deep (RFC 7578), split by hand in one linear pass.

    The stdlib MIME parser recurses into nested multiparts: a 54 KB body nested a thousand deep
    cost 0.5 s of CPU and a RecursionError (a 500). A form needs none of that: a part that is
    itself multipart is refused, and so is a form of more than MAX_FIELDS parts.
    """
    delimiter = b"\r\n--" + _boundary(content_type)
    if (b"\r\n" + body).count(delimiter) > MAX_FIELDS + 1:  # + 1: the closing delimiter
        raise BadForm(f"more than {MAX_FIELDS} parts")
    pieces = (b"\r\n" + body).split(delimiter)[1:]  # [0] is the preamble
    closing = next((n for n, piece in enumerate(pieces) if piece.startswith(b"--")), None)
    if closing is None:
        raise BadForm("no closing boundary")
    fields = [_part_field(piece) for piece in pieces[:closing]]
    return [found for found in fields if found is not None]


def _boundary(content_type: str) -> bytes:
    header = _headers(f"Content-Type: {content_type}".encode("latin-1", "replace"))
    boundary = header.get_boundary()
    if header.get_content_type() != "multipart/form-data" or not boundary:
        raise BadForm("not multipart/form-data with a boundary")
    if len(boundary) > 70:  # RFC 2046's limit
        raise BadForm("boundary over 70 characters")
    return boundary.encode("latin-1", "replace")


def _part_field(piece: bytes) -> tuple[str, str] | None:
    """(name, value) of one part; None for a part without a name."""
    padding, _newline, rest = piece.partition(b"\r\n")
    if padding.strip(b" \t"):
        raise BadForm("text after a boundary")
    if rest.startswith(b"\r\n"):  # no headers at all
        return None
    head, blank, value = rest.partition(b"\r\n\r\n")
    if not blank:
        raise BadForm("a part without a blank line after its headers")
    headers = _headers(head)
    if headers.get_content_maintype() == "multipart":
        raise BadForm("a part that is itself multipart")
    name = headers.get_param("name", header="content-disposition")
    if not isinstance(name, str):
        return None
    return name, value.decode("utf-8", errors="replace").strip()


def _headers(head: bytes) -> Message:
    """Header lines only (BytesHeaderParser never reads a body, so it never recurses)."""
    return BytesHeaderParser(policy=email_policy).parsebytes(head + b"\r\n\r\n")
