"""Speed and memory of reading subscriber lists at scale.

Generates a list of N rows (default 1,000,000) in a temp folder, then measures, each in a fresh
process so peak RSS is its own:
  validator  email-validator alone on the same addresses (the floor: ~25-40 µs each)
  check      `check_lists`: every row parsed and validated, repeated addresses found
  select     the send selection: suppression pre-pass, dedupe, validation, Subscriber per row
  import     `subscribers import` of the list into a new one (checked, merged, written, and
             each new row's status recorded in .newsletter/people.sqlite)
and prints rows/s, the ratio to the validator-alone rate (target >= 0.67) and peak RSS (target
<= 150 MB). The temp folder is deleted afterwards. `select` validates only the rows it would
send (about 95% here: the others are left out by status or as duplicates before validation), so
its rate per row read can beat the validator-alone rate.

    python benchmarks/subscribers.py [--rows N] [--repeat R]
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NAMES = ["Ann Lee", "Zofia Wójcik", "Jürgen Groß", "Niccolò Rossi", "Siân Llŷr", 'Hopper, "G"']
DOMAINS = ["example.org", "example.com", "example.net", "bücher.example.org", "mail.example.org"]


def generate(path: Path, rows: int) -> None:
    """Mostly subscribed; ~3% unsubscribed, 1% bounced, 1% repeated addresses in another case."""
    rng = random.Random(42)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", "status", "tags", "subscribed_at", "source", "city"])
        for i in range(rows):
            roll = rng.random()
            status = "unsubscribed" if roll < 0.03 else "bounced" if roll < 0.04 else "subscribed"
            number = rng.randrange(i) if roll > 0.99 and i else i
            email = f"person.{number}@{DOMAINS[number % len(DOMAINS)]}"
            email = email.upper() if number != i else email
            tags = "news;events" if i % 3 else "news"
            name = NAMES[i % len(NAMES)]
            writer.writerow([email, name, status, tags, "2024-01-01T10:00:00Z", "import", "Kraków"])


def measure(kind: str, folder: Path) -> dict[str, float]:
    from newsletter import subscribers

    path = folder / "subscribers" / "list.csv"
    if kind == "validator":
        from email_validator import validate_email

        with path.open(encoding="utf-8", newline="") as handle:
            addresses = [row[0] for row in csv.reader(handle)][1:]
        gc.freeze()  # keep the collector from walking a million strings: a fair floor
        start = time.perf_counter()
        for address in addresses:
            validate_email(address, check_deliverability=False)
        rows = len(addresses)
    elif kind == "check":
        start = time.perf_counter()
        report = subscribers.check_lists([path])
        rows = report.rows
        assert not report.errors, report.errors[:3]
    elif kind == "import":
        into = Path(tempfile.mkdtemp(dir=folder))  # a fresh folder: every run adds every row
        start = time.perf_counter()
        imported = subscribers.import_list(into, path, into / "subscribers" / "imported.csv")
        rows = imported.added + len(imported.merged)
    else:
        start = time.perf_counter()
        selection = subscribers.select(folder)
        sent = sum(1 for _ in selection)
        rows = sent + sum(selection.left_out.values())
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rows": rows, "seconds": seconds, "rate": rows / seconds, "peak_mb": peak_mb}


def run(kind: str, folder: Path) -> dict[str, float]:
    command = [sys.executable, __file__, "--measure", kind, str(folder)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(output))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--measure", nargs=2, metavar=("KIND", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], Path(args.measure[1]))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        generate(folder / "subscribers" / "list.csv", args.rows)
        results = {kind: [run(kind, folder) for _ in range(args.repeat)] for kind in KINDS}
    report(args.rows, results)


KINDS = ("validator", "check", "select", "import")


def report(rows: int, results: dict[str, list[dict[str, float]]]) -> None:
    floor = statistics.median(r["rate"] for r in results["validator"])
    print(f"{rows:,} rows; medians of {len(results['validator'])} runs")
    print(f"{'':10} {'rows/s':>9} {'µs/row':>7} {'vs validator':>12} {'peak RSS':>9}")
    for kind, runs in results.items():
        rate = statistics.median(r["rate"] for r in runs)
        peak = statistics.median(r["peak_mb"] for r in runs)
        print(f"{kind:10} {rate:9,.0f} {1e6 / rate:7.1f} {rate / floor:12.2f} {peak:7.0f} MB")


if __name__ == "__main__":
    main()
