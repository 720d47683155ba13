"""The outbox Maildir, and open_transport's choice between it and SMTP."""

from __future__ import annotations

import asyncio
import email.policy
import mailbox
from email.message import EmailMessage
from pathlib import Path

import pytest

from newsletter.config import Config, Settings, SmtpSettings
from newsletter.errors import TransportError
from newsletter.smtp import SmtpTransport
from newsletter.transport import Accepted, Envelope, OutboxTransport, destination, open_transport

SENDER = "bounces@example.org"


def message(to: str, body: str = "Hello.\n") -> bytes:
    """Wire-form message bytes (CRLF), 8-bit when the body is."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = "news@example.org"
    msg["To"] = to
    msg["Subject"] = "Issue 1"
    msg.set_content(body, cte="7bit" if body.isascii() else "8bit")
    return msg.as_bytes()


async def deliver(outbox: OutboxTransport, *items: tuple[Envelope, bytes]) -> list[Accepted]:
    connection = await outbox.connect()
    try:
        return list(await asyncio.gather(*(connection.send(e, d) for e, d in items)))
    finally:
        await connection.close()


def test_outbox_round_trip_with_mailbox(tmp_path: Path) -> None:
    """A message written to the outbox reads back with mailbox.Maildir, 8-bit body intact."""
    outbox = OutboxTransport(tmp_path / "outbox")
    envelope = Envelope(SENDER, "zoe@example.org")
    asyncio.run(deliver(outbox, (envelope, message("Zoë <zoe@example.org>", "Grüße\n"))))
    [stored] = list(mailbox.Maildir(tmp_path / "outbox", create=False))
    parsed = email.message_from_bytes(stored.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed["To"].addresses[0].display_name == "Zoë"
    assert parsed.get_content() == "Grüße\n"
    assert parsed["Return-Path"] == f"<{SENDER}>"
    assert parsed["Delivered-To"] == "zoe@example.org"


def test_accepted_names_the_file_in_new(tmp_path: Path) -> None:
    """Accepted.reply is the file written, in new/, and tmp/ is left empty."""
    outbox = OutboxTransport(tmp_path / "outbox")
    [accepted] = asyncio.run(deliver(outbox, (Envelope(SENDER, "a@example.org"), message("a"))))
    path = Path(accepted.reply)
    assert path.parent == tmp_path / "outbox" / "new"
    assert path.is_file()
    assert not any((tmp_path / "outbox" / "tmp").iterdir())
    assert (tmp_path / "outbox" / "cur").is_dir()


def test_concurrent_sends_write_distinct_files(tmp_path: Path) -> None:
    """Many messages at once: one file each, none overwritten."""
    outbox = OutboxTransport(tmp_path / "outbox")
    items = [
        (Envelope(SENDER, f"r{i}@example.org"), message(f"r{i}@example.org")) for i in range(40)
    ]
    accepted = asyncio.run(deliver(outbox, *items))
    assert len({a.reply for a in accepted}) == 40
    assert len(mailbox.Maildir(tmp_path / "outbox", create=False)) == 40


def test_outbox_connection_wants_raw_bytes(tmp_path: Path) -> None:
    """The outbox takes 8-bit data and no dot-stuffing: a leading dot stays single."""
    outbox = OutboxTransport(tmp_path / "outbox")

    async def check() -> Path:
        connection = await outbox.connect()
        assert (connection.eight_bit, connection.dot_stuffed) == (True, False)
        data = b"Subject: x\r\n\r\n.one dot\r\n"
        return Path((await connection.send(Envelope(SENDER, "a@example.org"), data)).reply)

    assert asyncio.run(check()).read_bytes().endswith(b"\n\n.one dot\n")


def test_outbox_description_and_destination(tmp_path: Path) -> None:
    """One line saying where messages go and how to read them; "outbox" for the ledger."""
    outbox = OutboxTransport(tmp_path / "outbox")
    assert (
        outbox.description == f"outbox {tmp_path}/outbox (a Maildir; open it with any mail client)"
    )
    assert outbox.destination == "outbox"


def test_outbox_that_cannot_be_created_is_a_clear_error(tmp_path: Path) -> None:
    """An outbox path that is a file gives one line naming it."""
    (tmp_path / "outbox").write_text("not a folder")
    with pytest.raises(TransportError, match="cannot create the Maildir"):
        asyncio.run(OutboxTransport(tmp_path / "outbox").connect())


def _config(tmp_path: Path, smtp: SmtpSettings) -> Config:
    settings = Settings(name="News", from_="news@example.org")
    return Config(root=tmp_path, path=tmp_path / "newsletter.toml", newsletter=settings, smtp=smtp)


def test_open_transport_without_host_is_the_outbox(tmp_path: Path) -> None:
    """No [smtp] host: messages go to outbox/ in the newsletter folder."""
    chosen = open_transport(_config(tmp_path, SmtpSettings()))
    assert isinstance(chosen, OutboxTransport)
    assert chosen.folder == tmp_path / "outbox"


def test_open_transport_with_host_is_smtp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """[smtp] host set: SMTP, with the password from NEWSLETTER_SMTP_PASSWORD."""
    monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", "from-the-environment")
    smtp = SmtpSettings(host="smtp.example.org", port=2525, username="me")
    chosen = open_transport(_config(tmp_path, smtp))
    assert isinstance(chosen, SmtpTransport)
    assert chosen.description == "SMTP smtp.example.org:2525 (STARTTLS, as me)"
    assert chosen._password == "from-the-environment"  # noqa: S105  # a test value


@pytest.mark.parametrize(
    ("smtp", "key"),
    [
        (SmtpSettings(), "outbox"),
        (SmtpSettings(host="Mail.Example.org.", security="tls"), "smtp://mail.example.org:465"),
        (SmtpSettings(host="smtp.example.org", port=2525), "smtp://smtp.example.org:2525"),
    ],
)
def test_destination_is_the_key_of_the_transport_opened(
    tmp_path: Path, smtp: SmtpSettings, key: str
) -> None:
    """destination(settings) names the ledger of the transport open_transport picks, unopened."""
    assert destination(smtp) == key
    assert open_transport(_config(tmp_path, smtp)).destination == key
