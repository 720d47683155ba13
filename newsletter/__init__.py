"""Write a newsletter as TOML in git; render it with MJML; send it over SMTP.

The library: `Newsletter.open(".")`, then render, check, plan, send, test and status
(docs/api.md). `newsletter.api` is imported on first use, so `import newsletter` stays cheap
and loads no command-line or web stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from newsletter.api import (
        Counts,
        Erased,
        FailedRecipient,
        Finding,
        Newsletter,
        Person,
        Plan,
        SendReport,
        SendSummary,
        TestResult,
    )
    from newsletter.errors import InvalidInput, LedgerMissing, NewsletterError, Severity

__all__ = [
    "Counts",
    "Erased",
    "FailedRecipient",
    "Finding",
    "InvalidInput",
    "LedgerMissing",
    "Newsletter",
    "NewsletterError",
    "Person",
    "Plan",
    "SendReport",
    "SendSummary",
    "Severity",
    "TestResult",
    "__version__",
]


_FROM_ERRORS = {"InvalidInput", "LedgerMissing", "NewsletterError", "Severity"}


def __getattr__(name: str) -> Any:
    if name in _FROM_ERRORS:
        from newsletter import errors

        return getattr(errors, name)
    if name in __all__:
        from newsletter import api

        return getattr(api, name)
    raise AttributeError(f"module 'newsletter' has no attribute {name!r}")
