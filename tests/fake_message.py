"""TEST ONLY: a stand-in for newsletter.message.MessageFactory while branch `messages` is not
merged here. Same constructor and `build` signature; simple, valid bytes.

Like the real builder, it puts the body in wire form once (CRLF, dot-stuffed or not) and joins
per-recipient values into it, so a benchmark run with it measures sending, not this stand-in.
Values that could change the wire form around them (empty, or with CR, LF, or a leading dot)
take the slow, obvious path instead."""

from __future__ import annotations

from typing import Any

from newsletter.models import Field, Subscriber

_MARK = "\x00"  # stands for a field while the body is put in wire form


class MessageFactory:
    def __init__(self, rendered: Any, config: Any, secret: bytes, **_: Any) -> None:
        self.rendered = rendered
        self.domain = config.from_address.rpartition("@")[2]
        self.sender = config.from_address
        self.fields = [p for p in rendered.text if isinstance(p, Field)]
        text = "".join(p if isinstance(p, str) else _MARK for p in rendered.text)
        self.wire = {stuffed: _pieces(text, stuffed) for stuffed in (False, True)}

    def build(
        self,
        subscriber: Subscriber,
        *,
        to: str | None = None,
        eight_bit: bool = True,
        dot_stuffed: bool = False,
        message_id: str | None = None,
    ) -> bytes:
        extra = {"unsubscribe_url": f"https://{self.domain}/unsubscribe/{subscriber.email}"}
        values = [
            subscriber.fields.get(f.name, extra.get(f.name, f.default or "")) for f in self.fields
        ]
        head = (
            f"From: {self.sender}\nTo: {to or subscriber.email}\n"
            f"Subject: {self.rendered.slug}\nMessage-ID: {message_id or '<x@y>'}\n"
            "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
            "Content-Transfer-Encoding: 8bit\n\n"
        )
        if all(v and not v.startswith(".") and "\r" not in v and "\n" not in v for v in values):
            pieces = self.wire[dot_stuffed]
            body = [pieces[0]]
            for value, piece in zip(values, pieces[1:], strict=True):
                body += (value.encode(), piece)
            return _wire(head, dot_stuffed) + b"".join(body)
        text = iter(values)
        body_text = "".join(p if isinstance(p, str) else next(text) for p in self.rendered.text
                            if isinstance(p, str | Field))  # fmt: skip
        return _wire(head, dot_stuffed) + _wire(body_text, dot_stuffed)


def _pieces(text: str, dot_stuffed: bool) -> list[bytes]:
    """The body's wire form, split where the fields go."""
    return _wire(text, dot_stuffed).split(_MARK.encode())


def _wire(text: str, dot_stuffed: bool) -> bytes:
    """CRLF line endings, ending in CRLF, leading dots doubled when asked; `text` is taken to
    start at the beginning of a line."""
    data = ("\n" + text).encode().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if dot_stuffed:
        data = data.replace(b"\r\n.", b"\r\n..")
    data = data[2:]
    return data if data.endswith(b"\r\n") else data + b"\r\n"
