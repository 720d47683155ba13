"""The fast path's bytes parse to the same message as the slow EmailMessage build."""

from __future__ import annotations

import base64
import datetime as dt
import quopri
import re
import unicodedata
from email.header import decode_header
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import compat32, default
from email.utils import parseaddr

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from newsletter.message import MAX_LINE, MessageFactory
from newsletter.models import Field, Rendered, Subscriber
from tests.message_reference import build_reference
from tests.message_samples import CITY, NAME, SECRET, UNSUB, make_config, make_rendered, subscriber

NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
MESSAGE_ID = "<fixed-id@example.org>"
HEADERS = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Reply-To",
)
CONFIG = make_config(reply_to="replies@example.org", unsubscribe_mailto="leave@example.org")

TRICKY = st.sampled_from(
    ['"', ",", "\\", "'", "<", ">", "&", ".", "\n.", "\r", "\r\n", "\n", "\x00", " ", "  ",
     "é", "Zoë", "😀", "中文", "=?utf-8?b?QQ==?=", "=?", "--", "\u00a0", "@", ";", "(x)"]
)  # fmt: skip
ANY_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
HEADER_TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\u2028\u2029"),
    max_size=40,
)
LONG = st.text(st.sampled_from("ab é😀."), min_size=200, max_size=700)  # lines past 998 octets
# Names long enough for many encoded words, split between UTF-8 sequences and folded; not
# longer, since the reference build folds a header in quadratic time (CPython's _fold_as_ew:
# 0.2 s for a 1,000-character name, 9 s for 5,600) and the fast path has no limit in between.
LONG_NAME = st.text(st.sampled_from("ab é😀."), min_size=100, max_size=250)


def mixed(base: st.SearchStrategy[str], *extra: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.lists(st.one_of(base, TRICKY, *extra), max_size=8).map("".join)


def header_safe(value: str) -> str:
    return re.sub("[\x00-\x1f\x7f-\x9f\u2028\u2029]", "", value)


body_values = mixed(ANY_TEXT, LONG)
names = mixed(HEADER_TEXT, LONG_NAME).map(header_safe)
local_parts = st.from_regex(r"[a-z0-9_+-]{1,10}(\.[a-z0-9_+-]{1,10}){0,2}", fullmatch=True)
emails = local_parts.map(lambda local: f"{local}@example.org")


@st.composite
def subscribers(draw: st.DrawFn, name: st.SearchStrategy[str] | None = None) -> Subscriber:
    """Subscribers whose names EmailMessage can carry: not like an encoded word ("=?"), which
    its header parser decodes on assignment (the fast path's own test covers those names)."""
    if name is None:
        name = names.filter(lambda text: "=?" not in text)
    return subscriber(draw(emails), draw(name), city=draw(body_values))


LITERAL = st.text(st.sampled_from("ab <>.\n\né&;"), max_size=30)
FIELDS = st.sampled_from([NAME, CITY, UNSUB, Field("city", "nowhere"), Field("missing")])


@st.composite
def templates(draw: st.DrawFn) -> tuple[str | Field, ...]:
    return tuple(draw(st.lists(st.one_of(LITERAL, FIELDS), max_size=12)))


@st.composite
def rendered_issues(draw: st.DrawFn) -> Rendered:
    literal = HEADER_TEXT.map(header_safe).filter(lambda text: "=?" not in text)
    header_fields = st.sampled_from([NAME, UNSUB, Field("missing", "you")])  # no control chars
    subject = tuple(draw(st.lists(st.one_of(literal, header_fields), max_size=4)))
    return make_rendered(subject=subject, html=draw(templates()), text=draw(templates()))


ENCODED_WORD = rb"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?="
WORD = re.compile(rb"=\?utf-8\?([bBqQ])\?([^?\s]*)\?=", re.IGNORECASE)
ADJACENT_WORDS = re.compile(rb"%s(?:(?:\r\n)?[ \t]+%s)+" % (ENCODED_WORD, ENCODED_WORD))


def decode_word(word: re.Match[bytes]) -> bytes:
    """The octets of one UTF-8 encoded word (both builds use only UTF-8)."""
    kind, text = word.groups()
    if kind in b"bB":
        return base64.b64decode(text)
    return quopri.decodestring(text, header=True)


def join_adjacent_words(data: bytes) -> bytes:
    """Merge runs of adjacent encoded words into one, as RFC 2047 6.2 reads them.

    Python's policy.default parser wrongly keeps the space between adjacent encoded words in a
    display name (CPython gh-128110; unstructured headers are read right). Both builds fold long
    names into several words, so the test reads them the RFC's way before parsing.
    """
    head, sep, body = data.partition(b"\r\n\r\n")

    def merge(run: re.Match[bytes]) -> bytes:
        data = b"".join(decode_word(word) for word in WORD.finditer(run.group()))
        return b"=?utf-8?b?" + base64.b64encode(data) + b"?="

    return ADJACENT_WORDS.sub(merge, head) + sep + body


def parse(data: bytes) -> EmailMessage:
    message = BytesParser(policy=default).parsebytes(join_adjacent_words(data))
    assert isinstance(message, EmailMessage)
    return message


def unstuff(data: bytes) -> bytes:
    """What an SMTP server stores: the first '.' of each line removed (RFC 5321 4.5.2)."""
    return re.sub(rb"(?m)^\.", b"", data)


def summary(message: EmailMessage) -> tuple[object, ...]:
    headers = tuple(str(message.get(name, "")) for name in HEADERS)
    parts = [
        (part.get_content_type(), part.get_content().replace("\r\n", "\n"))
        for part in message.iter_parts()
    ]
    return (*headers, message.get_content_type(), sorted(set(message.keys())), parts)


def fast_and_slow(
    rendered: Rendered, person: Subscriber, to: str | None = None
) -> tuple[EmailMessage, EmailMessage]:
    factory = MessageFactory(rendered, CONFIG, SECRET, now=NOW)
    fast = factory.build(person, message_id=MESSAGE_ID, to=to)
    slow = build_reference(rendered, CONFIG, SECRET, person, message_id=MESSAGE_ID, now=NOW, to=to)
    return parse(fast), parse(slow)


CHECKS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@CHECKS
@given(subscribers(), st.none() | emails)
def test_fast_path_parses_like_reference(person: Subscriber, to: str | None) -> None:
    """For generated subscribers (and test sends to another address) the 8-bit message parses
    to the reference's headers and parts."""
    fast, slow = fast_and_slow(make_rendered(), person, to=to)
    assert summary(fast) == summary(slow)


@CHECKS
@given(rendered_issues(), subscribers())
def test_generated_templates_parse_like_reference(rendered: Rendered, person: Subscriber) -> None:
    """For generated templates too (fields at line starts, side by side, at the very end)."""
    fast, slow = fast_and_slow(rendered, person)
    assert summary(fast) == summary(slow)


@CHECKS
@given(rendered_issues(), subscribers())
def test_dot_stuffed_unstuffs_to_plain(rendered: Rendered, person: Subscriber) -> None:
    """Removing the leading dot of each line of the wire form gives the unstuffed message."""
    factory = MessageFactory(rendered, CONFIG, SECRET, now=NOW)
    plain = factory.build(person, message_id=MESSAGE_ID)
    stuffed = factory.build(person, message_id=MESSAGE_ID, dot_stuffed=True)
    assert unstuff(stuffed) == plain


@CHECKS
@given(rendered_issues(), subscribers(), st.booleans(), st.booleans())
def test_lines_are_crlf_and_short(
    rendered: Rendered, person: Subscriber, eight_bit: bool, stuffed: bool
) -> None:
    """Every line ends in CRLF and holds at most 998 octets, whatever the values."""
    factory = MessageFactory(rendered, CONFIG, SECRET, now=NOW)
    data = factory.build(person, eight_bit=eight_bit, dot_stuffed=stuffed)
    data = unstuff(data) if stuffed else data
    assert data.endswith(b"\r\n")
    lines = data[:-2].split(b"\r\n")
    assert not any(b"\r" in line or b"\n" in line for line in lines)
    assert max(len(line) for line in lines) <= MAX_LINE


@CHECKS
@given(rendered_issues(), subscribers())
def test_base64_equals_8bit_decoded(rendered: Rendered, person: Subscriber) -> None:
    """The base64 variant decodes to the same message as the 8-bit variant."""
    factory = MessageFactory(rendered, CONFIG, SECRET, now=NOW)
    eight = parse(factory.build(person, message_id=MESSAGE_ID))
    b64 = factory.build(person, message_id=MESSAGE_ID, eight_bit=False)
    assert b"Content-Transfer-Encoding: 8bit" not in b64
    assert summary(parse(b64)) == summary(eight)


# Unicode's space separators other than U+0020 (no-break, ideographic, thin, ...): text, not
# folding whitespace, so a header must carry them as they are inside a name; at its ends they
# are blank like ASCII spaces (a name of only no-break spaces is no name, as in the subject).
SPACES = [c for c in map(chr, range(0x80, 0x3001)) if unicodedata.category(c) == "Zs"]


def decoded(text: str) -> str:
    """`text` with its RFC 2047 encoded words decoded by the stdlib's decode_header."""
    return "".join(
        part.decode(charset or "ascii") if isinstance(part, bytes) else part
        for part, charset in decode_header(text)
    )


def name_and_subject(data: bytes) -> tuple[str, str, str]:
    """(To display name, To address, Subject) as a correct RFC 2047 reader sees them.

    Not policy.default's address parser: it reads the text inside an encoded word with
    str.lstrip (email._header_value_parser.get_fws), which takes Unicode spaces for folding
    whitespace, so the name '0 \xa0' came back as '0 ' from a header that carried it whole.
    """
    message = parse(data)
    (address,) = message["To"].addresses  # the structure, from the modern parser
    head = BytesParser(policy=compat32).parsebytes(data, headersonly=True)
    name, addr_spec = parseaddr(head["To"])
    assert addr_spec == address.addr_spec
    return decoded(name), addr_spec, decoded(head["Subject"])


def assert_name_round_trips(person: Subscriber) -> None:
    """The name reads back as sent (single ASCII spaces, no whitespace at the ends) in To and
    Subject."""
    factory = MessageFactory(make_rendered(), CONFIG, SECRET, now=NOW)

    def tidy(text: str) -> str:
        return re.sub(" +", " ", text).strip()

    name, address, subject = name_and_subject(factory.build(person))
    assert (name, address) == (tidy(person.name), person.email)
    blank = not person.name or person.name.isspace()
    assert subject == tidy(f"Issue 7 for {'reader' if blank else person.name}")


@CHECKS
@given(subscribers(name=names))
@example(subscriber(name="0 \xa0"))  # found by hypothesis: the no-break space read back lost
@example(subscriber(name="\u3000a \u2003"))
@example(subscriber(name="a \u2009\u200a b"))
@example(subscriber(name=" \u202f"))
@example(subscriber(name="\xa0"))
@example(subscriber(name='"Ann \\ \u2007"'))
def test_header_values_round_trip(person: Subscriber) -> None:
    """Any name, even one like an encoded word, reads back as the name and in the subject."""
    assert_name_round_trips(person)


@pytest.mark.parametrize("space", SPACES, ids=[f"U+{ord(c):04X}" for c in SPACES])
def test_unicode_spaces_in_names_round_trip(space: str) -> None:
    """Every Unicode space separator inside a name is kept; leading, trailing or alone it is
    blank, in To as in the subject."""
    for name in (f"0 {space}", f"{space} a {space}b", space, f"{space} "):
        assert_name_round_trips(subscriber(name=name))
