"""The secrets a send needs, never from a file the user writes: the SMTP password and the
unsubscribe-token secret, from the environment (the password also from the system keyring).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from newsletter.errors import SecretMissing

if TYPE_CHECKING:
    from newsletter.config.settings import Config, SmtpSettings

PASSWORD_ENV = "NEWSLETTER_SMTP_PASSWORD"  # noqa: S105  # a variable name, not a password
SECRET_ENV = "NEWSLETTER_SECRET"  # noqa: S105  # a variable name, not a secret
MIN_SECRET_CHARS = 32
MAKE_SECRET = 'python3 -c "import secrets; print(secrets.token_urlsafe(32))"'  # noqa: S105  # a command, not a secret
KEYRING_SERVICE = "newsletter"


def smtp_password(
    smtp: SmtpSettings | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The SMTP password: NEWSLETTER_SMTP_PASSWORD, else the system keyring when one is installed
    (service "newsletter", user "<username>@<host>"); never a file."""
    env = os.environ if environ is None else environ
    if PASSWORD_ENV in env:
        return env[PASSWORD_ENV]
    if smtp is None or not smtp.username:
        return None
    return _keyring_password(f"{smtp.username}@{smtp.host}")


def _keyring_password(user: str) -> str | None:
    try:
        import keyring  # type: ignore[import-not-found, unused-ignore]  # optional: not a dependency
        from keyring.errors import KeyringError  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    try:
        found = keyring.get_password(KEYRING_SERVICE, user)
    except KeyringError:
        return None  # no usable backend (a server without a desktop session)
    return found if isinstance(found, str) else None


def secret(config: Config, *, create: bool, environ: Mapping[str, str] | None = None) -> bytes:
    """The unsubscribe-token secret: NEWSLETTER_SECRET, at least MIN_SECRET_CHARS characters.

    Only an outbox send (`create`) may fall back to .newsletter/secret (made once): links
    signed with a key that exists only on this machine cannot be checked by `serve`."""
    env = os.environ if environ is None else environ
    value = env.get(SECRET_ENV, "")
    if value:
        _long_enough(value, SECRET_ENV)
        return value.encode()
    if not create:
        raise SecretMissing(
            f"{SECRET_ENV} is not set: SMTP sends, `newsletter test` over SMTP and `serve` sign "
            f"and check unsubscribe links with it. Make one with `{MAKE_SECRET}` and set the "
            "same value wherever you send and serve"
        )
    return _stored_secret(config.state_dir / "secret")


def _long_enough(value: str, where: str) -> None:
    """A short secret can be recovered from a single token (3 characters: in 0.12 s).

    White space around it adds no secrecy (a value of 40 spaces is one guess): not counted."""
    count = len(value.strip())
    besides = "" if count == len(value) else " besides white space"
    if count < MIN_SECRET_CHARS:
        raise SecretMissing(
            f"{where} is too short ({count} characters{besides}; at least {MIN_SECRET_CHARS}): "
            f"a short secret can be guessed from one unsubscribe link. Make one with "
            f"`{MAKE_SECRET}`"
        )


def _stored_secret(stored: Path) -> bytes:
    if stored.is_file():
        value = stored.read_bytes().strip()
        _long_enough(value.decode(errors="replace"), str(stored))
        return value
    import secrets as _secrets

    from newsletter.fileio import make_folder, open_private

    make_folder(stored.parent)
    value = _secrets.token_urlsafe(32).encode()
    fd = open_private(stored, os.O_WRONLY, exclusive=True)
    with os.fdopen(fd, "wb") as handle:
        handle.write(value + b"\n")
    return value
