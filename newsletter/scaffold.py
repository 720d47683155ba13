"""`newsletter init` and `newsletter new`: start a folder or an issue; never overwrite."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import unicodedata
from pathlib import Path

from newsletter.config import INIT_BASE_URL, INIT_FROM, default_templates_dir
from newsletter.errors import AlreadyExists, BadTitle
from newsletter.fileio import make_folder, open_private, reporting
from newsletter.models import HEADER_CONTROL

SCAFFOLD = Path(__file__).parent / "scaffold"


def slugify(title: str) -> str:
    return _own_slug(title) or "issue"


def _own_slug(title: str) -> str:
    """The title's Latin letters and digits, joined by '-'; '' when it has none."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")[:60].strip("-")


def issue_text(title: str, day: dt.date) -> str:
    skeleton = (SCAFFOLD / "issue.toml").read_text(encoding="utf-8")
    return skeleton.format(title=json.dumps(title, ensure_ascii=False), date=day.isoformat())


def new_issue(folder: Path, title: str, day: dt.date) -> Path:
    """Write issues/<YYYY-MM>-<slug>.toml in `folder`; refuse if it exists."""
    if bad := HEADER_CONTROL.search(title):
        raise BadTitle(title, bad.group())
    if not title.strip():  # Unicode spaces too
        raise BadTitle(title, "")
    path = folder / "issues" / f"{day:%Y-%m}-{slugify(title)}.toml"
    number = 1
    while path.exists() and not _own_slug(title):  # no Latin letters or digits: number them
        number += 1
        path = path.with_name(f"{day:%Y-%m}-issue-{number}.toml")
    if path.exists():
        raise AlreadyExists(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("x", encoding="utf-8") as handle:
        handle.write(issue_text(title, day))
    return path


def config_text(folder: Path) -> str:
    """The scaffold's newsletter.toml with a list_id fixed now, from the folder's name and the
    sender's domain: a derived one would change (and void every sent link) with `from`."""
    skeleton = (SCAFFOLD / "newsletter.toml").read_text(encoding="utf-8")
    domain = INIT_FROM.rpartition("@")[2]
    return skeleton.format(
        list_id=f"{slugify(folder.resolve().name)}.{domain}",
        init_from=INIT_FROM,  # placeholders that lint knows (a send to a server refuses them)
        init_base_url=INIT_BASE_URL,
    )


def init(folder: Path, day: dt.date) -> list[tuple[Path, bool]]:
    """Scaffold a newsletter folder; returns (path, created) for each file, skipping existing."""
    plan: list[tuple[Path, str | Path]] = [
        (folder / "newsletter.toml", config_text(folder)),
        (folder / ".gitignore", SCAFFOLD / "gitignore"),
        (folder / "issues" / f"{day:%Y-%m}-first-issue.toml", issue_text("First issue", day)),
        (
            folder / "subscribers" / "subscribers.csv",
            "email,name,status,tags,subscribed_at,unsubscribed_at,source\n",
        ),
    ]
    templates = default_templates_dir()
    for source in sorted(templates.rglob("*.j2")):
        plan.append((folder / "templates" / source.relative_to(templates), source))
    created = []
    for target, content in plan:
        with reporting(target, "cannot create"):
            created.append((target, _create(target, content)))
    return created


def _create(target: Path, source: str | Path) -> bool:
    if target.exists():
        return False
    content = source.read_text(encoding="utf-8") if isinstance(source, Path) else source
    if target.parent.name == "subscribers":  # lists hold personal data: owner only
        make_folder(target.parent)
        fd = open_private(target, os.O_WRONLY, exclusive=True)
        handle = os.fdopen(fd, "w", encoding="utf-8")
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle = target.open("x", encoding="utf-8")
    with handle:
        handle.write(content)
    return True
