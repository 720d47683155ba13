"""docs/report.schema.json holds every `send --json` and `status --json` report, and only
reports that have every key of today's (with its type)."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from newsletter.sends import SendLock
from tests.compose_helpers import ROOT, run, sample_folder
from tests.report_schema import SCHEMA, validate_report
from tests.send_helpers import ISSUE, smtp_env, write_list
from tests.smtpd import SmtpServer, drop_after_data, no_such_user, temporary

SLUG = "2021-09-cohes3ion"


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The sample newsletter with a list of five readers, as the working directory."""
    sample_folder(tmp_path)
    write_list(tmp_path, "news", [f"reader{i}@example.org" for i in range(5)])
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _send(*options: str, code: int = 0) -> dict[str, Any]:
    result = run("send", ISSUE, "--yes", "--json", *options)
    assert result.exit_code == code, result.output
    return validate_report(result.stdout)


def _status() -> dict[str, Any]:
    result = run("status", ISSUE, "--json")
    assert result.exit_code == 0, result.output
    return validate_report(result.stdout)


def test_outbox_send_and_status(folder: Path) -> None:
    """A whole send into the outbox, and its status, print valid reports."""
    sent = _send()
    assert sent["destination"] == "outbox" and sent["counts"]["sent"] == 5
    assert _status() == sent


def test_limited_send_leaves_pending(folder: Path) -> None:
    """A send stopped by --limit (exit 3) reports its pending readers; so does status."""
    sent = _send("--limit", "2", code=3)
    assert sent["counts"]["pending"] == 3
    assert _status()["counts"]["pending"] == 3


def test_status_while_a_send_runs(folder: Path) -> None:
    """status while another process holds the send lock (the live counts) is valid too."""
    _send("--limit", "1", code=3)
    with SendLock(folder / ".newsletter", SLUG):
        assert _status()["counts"]["pending"] == 4


@pytest.fixture
def smtp(
    folder: Path, make_smtp_server: Callable[..., SmtpServer], monkeypatch: pytest.MonkeyPatch
) -> SmtpServer:
    """A plain test server that refuses reader1, drops after reader2's data and keeps
    deferring reader3; the CLI is pointed at it."""
    server = make_smtp_server()
    server.add_fault(no_such_user(), recipient="reader1@example.org")
    server.add_fault(drop_after_data(), recipient="reader2@example.org")
    server.add_fault(temporary(times=0), recipient="reader3@example.org")
    for name, value in smtp_env(server.port).items():
        monkeypatch.setenv(name, value)
    return server


def test_smtp_send_with_every_outcome(smtp: SmtpServer) -> None:
    """Over SMTP with a refusal, a drop and a deferral: every list in the report is filled."""
    sent = _send(code=3)  # the deferred reader remains
    assert sent["destination"] == f"smtp://127.0.0.1:{smtp.port}"
    assert sent["failed"] == [
        {"email": "reader1@example.org", "code": 550, "reply": "5.1.1 No such user here"}
    ]
    assert sent["unknown"] == ["reader2@example.org"]
    assert sent["deferred"] == ["reader3@example.org"]
    assert sent["counts"]["sent"] == 2
    assert _status() == sent


# ---------------------------------------------------------------------------------------------
# The schema is not vacuous: it refuses what today's report never is

GOOD: dict[str, Any] = {
    "issue": SLUG,
    "destination": "smtp://mail.example.org:587",
    "counts": {
        "pending": 0,
        "sent": 3,
        "deferred": 1,
        "failed": 1,
        "unknown": 1,
        "left_out": 2,
        "bounced": 1,
        "complained": 0,
    },
    "unknown": ["someone@example.net"],
    "failed": [{"email": "gone@example.com", "code": 550, "reply": "5.1.1 No such user"}],
    "deferred": ["busy@example.org"],
    "duration_s": 1.5,
    "messages_per_second": 4.0,
    "workers": [
        {"id": "a.example:41:20260101T120000", "sent": 2, "failed": 1, "deferred": 0,
         "unknown": 1, "sending": 0, "live": False},
        {"id": "b.example:7:20260101T120003", "sent": 1, "failed": 0, "deferred": 1,
         "unknown": 0, "sending": 0, "live": False},
    ],
}  # fmt: skip


def _without(path: tuple[str | int, ...]) -> dict[str, Any]:
    doc = copy.deepcopy(GOOD)
    parent: Any = doc
    for step in path[:-1]:
        parent = parent[step]
    del parent[path[-1]]
    return doc


def test_example_is_valid() -> None:
    """The hand-written report below is valid: the refusals that follow are about one key."""
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    validate_report(GOOD)


REQUIRED = [
    *[(key,) for key in GOOD],
    *[("counts", key) for key in GOOD["counts"]],
    *[("failed", 0, key) for key in GOOD["failed"][0]],
    *[("workers", 0, key) for key in GOOD["workers"][0]],
]


@pytest.mark.parametrize("path", REQUIRED, ids=lambda p: ".".join(map(str, p)))
def test_missing_key_is_refused(path: tuple[str | int, ...]) -> None:
    """A report without any one of today's keys is refused."""
    with pytest.raises(jsonschema.ValidationError, match="is a required property"):
        validate_report(_without(path))


WRONG_TYPES = {
    "issue": None,
    "destination": 587,
    "counts": [],
    "unknown": "someone@example.net",
    "failed": {},
    "deferred": [1],
    "duration_s": "1.5",
    "messages_per_second": None,
}


@pytest.mark.parametrize(("key", "value"), WRONG_TYPES.items(), ids=list(WRONG_TYPES))
def test_wrong_type_is_refused(key: str, value: object) -> None:
    """A key of today's report holding another type is refused."""
    with pytest.raises(jsonschema.ValidationError):
        validate_report({**GOOD, key: value})


@pytest.mark.parametrize(
    ("where", "value"),
    [("counts", {**GOOD["counts"], "sent": 1.5}), ("counts", {**GOOD["counts"], "sent": -1}),
     ("failed", [{**GOOD["failed"][0], "code": "550"}])],
    ids=["fractional count", "negative count", "code as text"],
)  # fmt: skip
def test_wrong_nested_value_is_refused(where: str, value: object) -> None:
    """Counts are whole numbers from 0; a failure's code is a number (or null)."""
    with pytest.raises(jsonschema.ValidationError):
        validate_report({**GOOD, where: value})


def test_keys_added_later_are_allowed() -> None:
    """A later feature may add keys, at the top, in counts and in failures."""
    doc = copy.deepcopy(GOOD)
    doc["batch"] = {"id": 7}
    doc["counts"]["queued"] = 0
    doc["failed"][0]["at"] = 1700000000.0
    assert validate_report(doc) == doc


def test_failure_without_a_server_code() -> None:
    """A failure no server answered (the message could not be built) has code null."""
    doc = {**GOOD, "failed": [{"email": "x@example.org", "code": None, "reply": "bad subject"}]}
    validate_report(doc)


def test_documented_example_is_valid() -> None:
    """The example report in docs/sending.md is valid against the schema it points to."""
    text = (ROOT / "docs" / "sending.md").read_text(encoding="utf-8")
    section = text.split("## The report", 1)[1].split("\n## ", 1)[0]
    [example] = re.findall(r"```json\n(.*?)```", section, re.S)
    validate_report(example)
    assert "(report.schema.json)" in section
