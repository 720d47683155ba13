"""The fixtures of tests/fixtures/bounces as a newsletter folder: the lists and the ledger of the
send their return paths point into (scenario.json, written by make_postfix_bounces.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from newsletter.addresses import address_key
from newsletter.sends import LedgerFolder
from newsletter.store import Entry
from tests.compose_helpers import sample_folder
from tests.send_helpers import write_list

FIXTURES = Path(__file__).parent / "fixtures" / "bounces"
SCENARIO: dict[str, Any] = json.loads((FIXTURES / "scenario.json").read_text(encoding="utf-8"))
SLUG = SCENARIO["slug"]
DESTINATION = SCENARIO["destination"]
# Rows after the three the Postfix run sent: the readers of the hand-written samples
EXTRA = [
    "old.address@mail.example.net",  # 4: exim-unknown-user.eml
    "no.such.person@gmail.com",  # 5: gmail-no-such-user.eml
    "j.smith@contoso.com",  # 6: exchange-recipient-not-found.eml
    "reader@yahoo.com",  # 7: arf-complaint.eml
    "quota@mail.example.net",  # 8: exim-retry-timeout.eml
]
READERS = [row["email"] for row in SCENARIO["rows"]] + EXTRA
EXPECTED = {  # fixture: (reader, result, status)
    "postfix-unknown-user.eml": ("nosuchuser@local.test", "hard", "5.1.1"),
    "postfix-refused.eml": ("someone@refuse.test", "hard", "5.1.1"),
    "postfix-soft.eml": ("full@tempfail.test", "soft", "4.2.2"),
    "exim-unknown-user.eml": ("old.address@mail.example.net", "hard", "5.1.1"),
    "gmail-no-such-user.eml": ("no.such.person@gmail.com", "hard", "5.1.1"),
    "exchange-recipient-not-found.eml": ("j.smith@contoso.com", "hard", "5.1.10"),
    "arf-complaint.eml": ("reader@yahoo.com", "complaint", ""),
    "exim-retry-timeout.eml": ("quota@mail.example.net", "soft", "4.2.2"),
}


def bounce_folder(tmp: Path) -> Path:
    """The sample newsletter with bounce_address set, a list of READERS and the ledger of the
    send (every one sent) that the fixtures bounced from."""
    tmp.mkdir(parents=True, exist_ok=True)
    folder = sample_folder(tmp)
    with (folder / "newsletter.toml").open("a", encoding="utf-8") as handle:
        handle.write(f'bounce_address = "{SCENARIO["bounce_address"]}"\n')
        handle.write("allow_reserved_domains = true\n")
    write_list(folder, "news", READERS)
    sent_ledger(folder, SLUG, DESTINATION, READERS)
    return folder


def sent_ledger(folder: Path, slug: str, destination: str, emails: list[str]) -> None:
    """A ledger of `slug` to `destination` in which `emails` (rows 1, 2, ...) were sent."""
    ledger, _ = LedgerFolder(folder / ".newsletter").open(slug, destination, f"digest-{slug}")
    ledger.add(Entry(address_key(e), e) for e in emails)
    ledger.put("slug", slug)
    ledger.put("destination", destination)
    ledger.save()
    for row_id in range(1, len(emails) + 1):
        ledger.start(row_id)
        ledger.sent(row_id, 250, "2.0.0 Ok")
    ledger.close()


def maildir(
    tmp: Path, names: list[str] | None = None, texts: dict[str, bytes] | None = None
) -> Path:
    """A Maildir holding the fixtures `names` (default: all) and `texts`, in new/."""
    box = tmp / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (box / sub).mkdir(parents=True, exist_ok=True)
    for name in EXPECTED if names is None else names:
        shutil.copy(FIXTURES / name, box / "new" / name)
    for name, data in (texts or {}).items():
        (box / "new" / name).write_bytes(data)
    return box


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def statuses(folder: Path) -> dict[str, str]:
    lines = (folder / "subscribers" / "news.csv").read_text(encoding="utf-8").splitlines()[1:]
    return {line.split(",")[0]: line.split(",")[2] for line in lines}
