"""TEST ONLY: a stand-in for newsletter.message.MessageFactory while branch `messages` is not
merged here. Same constructor and `build` signature; simple, valid bytes."""

from __future__ import annotations

from typing import Any

from newsletter.models import Field, Subscriber


class MessageFactory:
    def __init__(self, rendered: Any, config: Any, secret: bytes, **_: Any) -> None:
        self.rendered = rendered
        self.domain = config.from_address.rpartition("@")[2]
        self.sender = config.from_address

    def build(
        self,
        subscriber: Subscriber,
        *,
        to: str | None = None,
        eight_bit: bool = True,
        dot_stuffed: bool = False,
        message_id: str | None = None,
    ) -> bytes:
        text = "".join(
            p if isinstance(p, str) else subscriber.fields.get(p.name, p.default or "")
            for p in self.rendered.text
            if isinstance(p, str | Field)
        )
        body = text.replace("\r\n", "\n").replace("\n", "\r\n")
        if dot_stuffed:
            body = body.replace("\r\n.", "\r\n..")
        head = (
            f"From: {self.sender}\r\nTo: {to or subscriber.email}\r\n"
            f"Subject: {self.rendered.slug}\r\nMessage-ID: {message_id or '<x@y>'}\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n"
        )
        data = (head + body).encode()
        return data if data.endswith(b"\r\n") else data + b"\r\n"
