"""docs/report.schema.json as a test helper: the CLI's `--json` report and the API's
SendReport.to_json() are checked against the same schema with `validate_report(doc)`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

PATH = Path(__file__).resolve().parent.parent / "docs" / "report.schema.json"
SCHEMA: dict[str, Any] = json.loads(PATH.read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def validate_report(doc: str | dict[str, Any]) -> dict[str, Any]:
    """Raise jsonschema.ValidationError unless `doc` (the printed text, or the object before
    printing) is a valid report; return the object as JSON reads it back."""
    text = doc if isinstance(doc, str) else json.dumps(doc, ensure_ascii=False)
    parsed: dict[str, Any] = json.loads(text)  # what a reader of the output sees
    VALIDATOR.validate(parsed)
    return parsed
