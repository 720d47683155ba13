"""Personalised ~40 KB messages per second on one core, with and without DKIM.

    python benchmarks/messages.py [--count N] [--repeat R] [--dkim-count N] [--workers W]

Builds a synthetic rendered issue (~40 KB of table-based HTML and its text, with merge fields
in the greeting, an attribute, the footer and the subject), then times `MessageFactory.build`
for N different subscribers per variant and prints the median of R runs. The machine is
shared and noisy: trust medians and ratios, not single figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the tests package: the reference builders live there

from newsletter.config import Config, Settings, SmtpSettings  # noqa: E402  # after the path set-up
from newsletter.dkim import DkimSigner, SigningPool  # noqa: E402
from newsletter.message import MessageFactory  # noqa: E402
from newsletter.models import Field, Rendered, Subscriber  # noqa: E402
from tests.message_reference import build_reference  # noqa: E402

SECRET = b"benchmark-secret"
NAME = Field("name", "reader")
FIRST = Field("first_name", "there")
CITY = Field("city")
UNSUB = Field("unsubscribe_url", source="message")

ARTICLE = (
    "<tr>\n"
    '<td align="left" style="font-size:0px;padding:10px 25px;word-break:break-word;">\n'
    '<div style="font-family:Helvetica, Arial, sans-serif;font-size:16px;line-height:1.5;'
    'text-align:left;color:#222222;">\n'
    '<h2 style="margin:0 0 8px;font-size:22px;color:#1a5276;">'
    "Section {n}: what happened this month</h2>\n"
    '<p style="margin:0 0 12px;">Lorem ipsum dolor sit amet, consectetur adipiscing elit. '
    "Integer nec odio.\nPraesent libero. Sed cursus ante dapibus diam. Sed nisi. Nulla quis "
    "sem at nibh elementum imperdiet.\nDuis sagittis ipsum. Praesent mauris. Fusce nec tellus "
    "sed augue semper porta. Mauris massa.</p>\n"
    '<p style="margin:0 0 12px;"><a href="https://example.org/articles/{n}?ref=newsletter" '
    'style="color:#1a5276;text-decoration:underline;">Read the whole story</a></p>\n'
    "</div>\n</td>\n</tr>\n"
)


def sample_rendered(target: int = 40_000) -> Rendered:
    """A rendered issue of about `target` octets: HTML ~32 KB, text ~8 KB, a few fields."""
    head = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n'
        "<title>Cohesion News</title></head>\n"
        '<body style="margin:0;padding:0;background:#f4f4f4;">\n'
        '<table role="presentation" width="100%" title="For '
    )
    html: list[str | Field] = [head, NAME, '">\n<tr><td><p>Dear ', FIRST, ",</p></td></tr>\n"]
    text: list[str | Field] = ["Dear ", FIRST, ",\n\n"]
    n = 0
    while sum(len(p) for p in html if isinstance(p, str)) < target * 0.66:
        n += 1
        html.append(ARTICLE.format(n=n))
        text.append(f"Section {n}: what happened this month\n\n" + "Lorem ipsum dolor sit " * 12)
        text.append(f"\nhttps://example.org/articles/{n}?ref=newsletter\n\n")
    html += ["<tr><td><p>You get this in ", CITY, '. <a href="', UNSUB, '">Unsubscribe</a>']
    html += ["</p></td></tr>\n</table>\n</body></html>\n"]
    text += ["You get this in ", CITY, ".\nUnsubscribe: ", UNSUB, "\n1 Example Street\n"]
    subject: tuple[str | Field, ...] = ("Cohesion News for ", FIRST, ": September")
    return Rendered("bench", subject, (), tuple(html), tuple(text), "digest")


def sample_config(root: Path, **settings: str) -> Config:
    values = {
        "name": "Cohesion News",
        "from_": "Cohesion News <news@example.org>",
        "base_url": "https://news.example.org",
        "unsubscribe_mailto": "leave@example.org",
        **settings,
    }
    return Config(root, root / "newsletter.toml", Settings(**values), SmtpSettings())  # type: ignore[arg-type]  # keys as given


def subscribers(count: int) -> list[Subscriber]:
    cities = ["Paris", "Zürich", "São Paulo", "Oslo", ".Dotville", "New\nYork"]
    people = []
    for i in range(count):
        name = f"Reader {i} Ångström" if i % 3 else f'"Q" O\'Neil, {i}'
        fields = {"first_name": name.split()[0], "city": cities[i % len(cities)]}
        people.append(Subscriber(email=f"reader{i}@example.net", name=name, fields=fields))
    return people


def rate(run: Callable[[], int], repeat: int) -> str:
    """Median messages per second over `repeat` runs of `run` (which returns its count): per
    CPU second of this process (one core, whatever else the machine runs) and per wall second."""
    cpu, wall = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        count = run()
        cpu.append(count / (time.process_time() - start_cpu))
        wall.append(count / (time.perf_counter() - start))
    return f"{statistics.median(cpu):,.0f}/s per CPU second ({statistics.median(wall):,.0f}/s wall)"


def bench_fast(factory: MessageFactory, people: list[Subscriber], repeat: int) -> None:
    size = len(factory.build(people[0]))
    print(f"message size: {size / 1000:.1f} KB")
    for label, eight_bit, stuffed in (
        ("8-bit", True, False),
        ("8-bit, dot-stuffed (SMTP wire)", True, True),
        ("base64 (no 8BITMIME)", False, True),
    ):
        count = len(people) if eight_bit else len(people) // 10

        def run(eight_bit: bool = eight_bit, stuffed: bool = stuffed, count: int = count) -> int:
            for person in people[:count]:
                factory.build(person, eight_bit=eight_bit, dot_stuffed=stuffed)
            return count

        print(f"fast path, {label}: {rate(run, repeat)}")


def bench_reference(config: Config, rendered: Rendered, people: list[Subscriber]) -> None:
    now = dt.datetime.now(dt.UTC)
    count = 100

    def run() -> int:
        for person in people[:count]:
            build_reference(rendered, config, SECRET, person, message_id="<x@example.org>", now=now)
        return count

    print(f"reference (EmailMessage): {rate(run, 3)}")


def bench_dkim(rendered: Rendered, people: list[Subscriber], count: int, workers: int) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "dkim.pem").write_bytes(pem)
        config = sample_config(
            root, dkim_domain="example.org", dkim_selector="s1", dkim_key_file="dkim.pem"
        )
        signer = DkimSigner.from_config(config)
        assert signer is not None
        factory = MessageFactory(rendered, config, SECRET)
        messages = [factory.build(p) for p in people[:count]]
        inline = count // 4

        def run_inline() -> int:
            for message in messages[:inline]:
                signer.sign(message)
            return inline

        print(f"DKIM RSA-2048, inline in this process: {rate(run_inline, 1)}")
        with SigningPool(signer, workers) as pool:
            pool.sign_many(messages[:workers])  # start the workers before timing

            start = time.perf_counter()
            pool.sign_many(messages, dot_stuffed=True)
            per_second = count / (time.perf_counter() - start)
            print(f"DKIM RSA-2048, pool of {workers} processes: {per_second:,.0f}/s wall")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dkim-count", type=int, default=400)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    rendered = sample_rendered()
    with tempfile.TemporaryDirectory() as folder:
        config = sample_config(Path(folder))
        people = subscribers(args.count)
        factory = MessageFactory(rendered, config, SECRET)
        bench_fast(factory, people, args.repeat)
        bench_reference(config, rendered, people)
    if args.dkim_count:
        bench_dkim(rendered, people, args.dkim_count, args.workers)


if __name__ == "__main__":
    main()
