"""Configs, rendered issues and subscribers shared by the message tests."""

from __future__ import annotations

from pathlib import Path

from newsletter.config import Config, Settings, SmtpSettings
from newsletter.models import Field, Rendered, Subscriber

SECRET = b"test-secret-not-for-production"


def make_config(root: Path = Path("/nonexistent"), **settings: str) -> Config:
    values = {
        "name": "Cohesion News",
        "from_": "Cohesion News <news@example.org>",
        "base_url": "https://news.example.org",
        "postal_address": "1 Example Street, Exampleton",
    }
    values.update(settings)
    return Config(
        root=root,
        path=root / "newsletter.toml",
        newsletter=Settings(**values),  # type: ignore[arg-type]  # test helper, keys as given
        smtp=SmtpSettings(),
    )


NAME = Field("name", "reader")
CITY = Field("city")
UNSUB = Field("unsubscribe_url", source="message")


def make_rendered(
    subject: tuple[str | Field, ...] = ("Issue 7 for ", NAME),
    html: tuple[str | Field, ...] | None = None,
    text: tuple[str | Field, ...] | None = None,
) -> Rendered:
    if html is None:
        html = (
            '<!doctype html>\n<html><body>\n<p title="',
            NAME,
            '">Hello ',
            NAME,
            ",</p>\n<p>From ",
            CITY,
            '</p>\n.a line starting with a dot\n<a href="',
            UNSUB,
            '">Unsubscribe</a>\n</body></html>\n',
        )
    if text is None:
        text = (
            "Hello ",
            NAME,
            ",\n\n",
            CITY,
            "\n.dot line\nUnsubscribe: ",
            UNSUB,
            "\n1 Example Street\n",
        )
    return Rendered("2021-09-cohesion", subject, (), html, text, "digest")


def subscriber(email: str = "ann@example.org", name: str = "Ann", **fields: str) -> Subscriber:
    return Subscriber(email=email, name=name, fields={"email": email, "name": name, **fields})
