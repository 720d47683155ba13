"""Sign-up by double opt-in, apart from the web: the confirmation message, and sending it.

The web form (serve_signup.py) has the store hold a sign-up (`SubscriberStore.request_signup`)
and, when the store says a confirmation may go, calls `send_confirmation`: one plain-text message
through the configured transport (the outbox by default, as `newsletter test` sends), signed with
DKIM when that is configured.
"""

from __future__ import annotations

import datetime as dt
import secrets
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8
from email.utils import format_datetime

from newsletter.config import Config
from newsletter.dispatch import send_test
from newsletter.dkim import DkimSigner, InlineSigner, dot_stuff
from newsletter.headers import check_header_value, tidy_header_text
from newsletter.transport import Accepted, open_transport


def confirmation_text(config: Config, link: str, list_label: str) -> str:
    """The body: what was asked, the link, how long it works, and what ignoring it does."""
    name = config.newsletter.name
    which = f" (the list {list_label!r})" if list_label else ""
    days = config.signup.expires_days
    return (
        f"Someone, hopefully you, asked to subscribe this address to {name}{which}.\n\n"
        f"To confirm, open this link and press the button on the page:\n\n{link}\n\n"
        f"The link works for {days} day{'s' * (days != 1)}. You agreed to this:\n"
        f'"{config.signup.consent}"\n\n'
        "If it was not you, ignore this message: you will not be subscribed, and you will get "
        "nothing more from us.\n"
    )


def confirmation_message(
    config: Config,
    to: str,
    link: str,
    *,
    list_label: str = "",
    eight_bit: bool = True,
    now: dt.datetime | None = None,
) -> bytes:
    """The whole message, CRLF line endings, not dot-stuffed.

    No List-Unsubscribe or List-Id: this is not list mail. The person is on no list until they
    confirm, and ignoring the message is the way out; a one-click unsubscribe here would only
    suppress an address that someone else may have typed."""
    name = tidy_header_text(check_header_value(config.from_name, field="newsletter.from"))
    user, _, domain = config.from_address.rpartition("@")
    message = EmailMessage(policy=SMTPUTF8 if not to.isascii() else SMTP)
    message["From"] = Address(display_name=name, username=user, domain=domain)
    message["To"] = to
    if config.reply_to is not None:
        reply_name, reply_address = config.reply_to
        reply_user, _, reply_domain = reply_address.rpartition("@")
        message["Reply-To"] = Address(reply_name, reply_user, reply_domain)
    message["Subject"] = f"Confirm your subscription to {config.newsletter.name}"
    message["Date"] = format_datetime(now or dt.datetime.now(dt.UTC))
    message["Message-ID"] = f"<{secrets.token_urlsafe(18)}@{_ascii(domain)}>"
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to it
    text = confirmation_text(config, link, list_label)
    message.set_content(text, cte="8bit" if eight_bit else "quoted-printable")
    return message.as_bytes()


def _ascii(domain: str) -> str:
    return domain.encode("idna").decode("ascii") if not domain.isascii() else domain


async def send_confirmation(config: Config, to: str, link: str, list_label: str = "") -> Accepted:
    """Send the confirmation to `to` over a fresh connection of the configured transport."""
    transport = open_transport(config)
    signer = DkimSigner.from_config(config)

    def build(eight_bit: bool, dot_stuffed: bool) -> bytes:
        data = confirmation_message(config, to, link, list_label=list_label, eight_bit=eight_bit)
        return dot_stuff(data) if dot_stuffed else data

    inline = InlineSigner(signer) if signer else None
    return await send_test(transport, build, config.envelope_sender, to, signer=inline)
