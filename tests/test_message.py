"""Messages per recipient: headers, unsubscribe links, escaping, fallbacks, header injection."""

from __future__ import annotations

import datetime as dt
import re
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default

import pytest
from hypothesis import given
from hypothesis import strategies as st

from newsletter.errors import ConfigError, MessageError
from newsletter.headers import check_header_value
from newsletter.message import MAX_LINE, MessageFactory
from newsletter.models import Field
from newsletter.tokens import verify_token
from tests.message_samples import CITY, NAME, SECRET, UNSUB, make_config, make_rendered, subscriber

CONFIG = make_config(unsubscribe_mailto="leave@example.org", reply_to="replies@example.org")
NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def factory(**kwargs: object) -> MessageFactory:
    rendered = kwargs.pop("rendered", None) or make_rendered()
    config = kwargs.pop("config", None) or CONFIG
    return MessageFactory(rendered, config, SECRET, now=NOW, **kwargs)  # type: ignore[arg-type]  # test helper


def parse(data: bytes) -> EmailMessage:
    message = BytesParser(policy=default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


def part(message: EmailMessage, subtype: str) -> EmailMessage:
    found = [p for p in message.iter_parts() if p.get_content_subtype() == subtype]
    assert len(found) == 1
    assert isinstance(found[0], EmailMessage)
    return found[0]


def content(message: EmailMessage, subtype: str) -> str:
    """A part's decoded text with plain newlines."""
    return str(part(message, subtype).get_content()).replace("\r\n", "\n")


def token_of(message: EmailMessage) -> str:
    match = re.match(
        r"<https://news\.example\.org/unsubscribe/([A-Za-z0-9_-]+)>", message["List-Unsubscribe"]
    )
    assert match is not None
    return match.group(1)


def test_list_unsubscribe_has_url_and_mailto() -> None:
    """List-Unsubscribe: the token URL (no query, no trailing slash) then the mailto."""
    message = parse(factory().build(subscriber()))
    value = str(message["List-Unsubscribe"])
    assert re.fullmatch(
        r"<https://news\.example\.org/unsubscribe/[\w-]+>, <mailto:leave@example\.org>", value
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_list_unsubscribe_without_mailto() -> None:
    """Without unsubscribe_mailto only the URL is offered."""
    message = parse(factory(config=make_config()).build(subscriber()))
    assert "mailto" not in message["List-Unsubscribe"]
    assert "Reply-To" not in message


def test_token_is_for_the_recipient() -> None:
    """The token in the header verifies to the subscriber's address."""
    message = parse(factory().build(subscriber("ann@example.org")))
    assert verify_token(SECRET, CONFIG.list_id, token_of(message)) == "ann@example.org"


def test_test_send_token_is_for_to_address() -> None:
    """With `to`, the token and To are for `to`; merge fields still come from the subscriber."""
    message = parse(factory().build(subscriber("ann@example.org", "Ann"), to="me@example.net"))
    assert verify_token(SECRET, CONFIG.list_id, token_of(message)) == "me@example.net"
    assert message["To"] == "me@example.net"
    assert "Hello Ann," in content(message, "plain")
    assert "ann@example.org" not in content(message, "html")


def test_body_shows_the_same_unsubscribe_link() -> None:
    """The text and HTML parts carry the URL given in List-Unsubscribe."""
    message = parse(factory().build(subscriber()))
    url = f"https://news.example.org/unsubscribe/{token_of(message)}"
    assert url in content(message, "plain")
    assert f'href="{url}"' in content(message, "html")


def test_headers_present_once() -> None:
    """Every required header is there exactly once, and List-Id follows RFC 2919."""
    message = parse(factory().build(subscriber()))
    for name in ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "List-Id",
                 "List-Unsubscribe", "List-Unsubscribe-Post", "Reply-To"):  # fmt: skip
        assert len(message.get_all(name) or []) == 1, name
    assert message["List-Id"] == "Cohesion News <example.org>"
    assert message["Date"] == "Wed, 01 May 2024 12:00:00 +0000"
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]


def test_message_ids_unique_on_sender_domain() -> None:
    """Each message gets its own Message-ID on the From domain."""
    build = factory()
    ids = {parse(build.build(subscriber()))["Message-ID"] for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"<[\w-]+@example\.org>", i) for i in ids)


def test_given_message_id_is_used() -> None:
    """A retry can reuse the Message-ID of its first attempt."""
    message = parse(factory().build(subscriber(), message_id="<again@example.org>"))
    assert message["Message-ID"] == "<again@example.org>"


def test_html_values_escaped_text_values_not() -> None:
    """A value is HTML-escaped in the HTML part (also in attributes) and as-is in text."""
    message = parse(factory().build(subscriber(name='<b>"Al" & Co</b>')))
    html = content(message, "html")
    assert 'title="&lt;b&gt;&quot;Al&quot; &amp; Co&lt;/b&gt;"' in html
    assert '<b>"Al" & Co</b>' in content(message, "plain")


def test_missing_field_uses_default() -> None:
    """An empty or missing column falls back to the field's default, else to nothing."""
    message = parse(factory().build(subscriber(name="")))
    text = content(message, "plain")
    assert text.startswith("Hello reader,\n\n\n")  # CITY has no default: empty
    assert message["Subject"] == "Issue 7 for reader"


def test_non_ascii_display_name_and_subject() -> None:
    """Non-ASCII names travel RFC 2047-encoded and read back unchanged."""
    data = factory().build(subscriber(name="Zoë Ångström 😀"))
    assert data.split(b"\r\n\r\n")[0].isascii()
    message = parse(data)
    assert message["To"].addresses[0].display_name == "Zoë Ångström 😀"
    assert message["Subject"] == "Issue 7 for Zoë Ångström 😀"


def test_display_name_with_comma_stays_one_address() -> None:
    """A name with a comma and quotes is quoted: still one recipient."""
    message = parse(factory().build(subscriber(name='Lee, "Ann" \\ Jr.')))
    (address,) = message["To"].addresses
    assert (address.display_name, address.addr_spec) == ('Lee, "Ann" \\ Jr.', "ann@example.org")


def test_smtputf8_address_in_to() -> None:
    """A non-ASCII local part goes into To as UTF-8 and reads back."""
    head = factory().build(subscriber("zoë@example.org", "Zoë")).split(b"\r\n\r\n")[0]
    assert "\r\nTo: =?utf-8?b?Wm/Dqw==?= <zoë@example.org>\r\n".encode() in head


def test_subject_prefix() -> None:
    """A test send's subject starts with the prefix."""
    message = parse(factory(subject_prefix="[TEST] ").build(subscriber()))
    assert message["Subject"] == "[TEST] Issue 7 for Ann"


@pytest.mark.parametrize(
    "name", ["Ann\r\nBcc: victim@example.net", "Ann\nX: y", "Ann\rB", "A\x00", "A\u2028B", "A\tB"]
)
def test_injection_in_name_refused(name: str) -> None:
    """A CR, LF or other control character in a name is refused, naming recipient and field."""
    with pytest.raises(MessageError) as caught:
        factory().build(subscriber("ann@example.org", name))
    assert (caught.value.recipient, caught.value.field) == ("ann@example.org", "name")
    assert "ann@example.org: name: contains control character" in str(caught.value)


def test_injection_through_subject_field_refused() -> None:
    """A merge field going into the subject is checked too."""
    rendered = make_rendered(subject=("News for ", CITY))
    with pytest.raises(MessageError, match="subject field 'city'"):
        factory(rendered=rendered).build(subscriber(city="Paris\r\nBcc: x@example.net"))


def test_same_value_in_body_is_fine() -> None:
    """Line breaks in a body field are normalised, not refused."""
    message = parse(factory().build(subscriber(city="Paris\r\nBcc: x@example.net")))
    assert "Bcc" not in message
    assert "Paris\nBcc: x@example.net" in content(message, "plain")


def test_injection_in_to_refused() -> None:
    """A `to` address with a line break is refused."""
    with pytest.raises(MessageError, match="to"):
        factory().build(subscriber(), to="me@example.net\r\nBcc: x@example.net")


@pytest.mark.parametrize("to", ["me", "Me <me@example.net>", "a@b.c, d@e.f"])
def test_to_must_be_a_plain_address(to: str) -> None:
    """`to` takes one plain address."""
    with pytest.raises(MessageError, match="not a plain email address"):
        factory().build(subscriber(), to=to)


def test_injection_in_config_name_refused() -> None:
    """A control character in the configured sender name stops the factory."""
    with pytest.raises(MessageError, match="newsletter"):
        factory(config=make_config(name="News\nBcc: x@example.net"))


def test_injection_in_subject_prefix_refused() -> None:
    """The subject prefix is checked like any header value."""
    with pytest.raises(MessageError, match="subject prefix"):
        factory(subject_prefix="[TEST]\r\n")


def test_check_header_value_passes_clean_text() -> None:
    """Printable text, non-ASCII included, passes unchanged."""
    assert check_header_value('Zoë 😀 "x"', field="name") == 'Zoë 😀 "x"'


def test_unknown_message_field_refused() -> None:
    """A template asking for a message value this module does not know fails early."""
    rendered = make_rendered(text=("x", Field("tracking_pixel", source="message")))
    with pytest.raises(MessageError, match="tracking_pixel"):
        factory(rendered=rendered)


def transfer_encodings(data: bytes) -> list[str]:
    return [p["Content-Transfer-Encoding"] for p in parse(data).iter_parts()]


def test_long_value_falls_back_to_base64_for_that_message() -> None:
    """A value making a line longer than 998 octets turns that message's part into base64."""
    build = factory()
    long_city = "x" * 1200
    data = build.build(subscriber(city=long_city))
    assert transfer_encodings(data) == ["base64", "base64"]
    assert long_city in content(parse(data), "plain")
    assert max(len(line) for line in data.split(b"\r\n")) <= MAX_LINE
    assert transfer_encodings(build.build(subscriber(city="Paris"))) == ["8bit", "8bit"]


def test_value_lines_adding_up_past_limit() -> None:
    """Two fields on one line that together pass 998 octets also fall back."""
    rendered = make_rendered(text=(NAME, " and ", CITY, "\n"))
    data = factory(rendered=rendered).build(subscriber(name="a" * 500, city="b" * 500))
    assert transfer_encodings(data)[0] == "base64"


def test_nul_in_value_falls_back_to_base64() -> None:
    """8-bit MIME may not carry NUL: such a value makes the part base64."""
    data = factory().build(subscriber(city="a\x00b"))
    assert transfer_encodings(data) == ["base64", "base64"]
    assert "a\x00b" in content(parse(data), "plain")


def test_long_literal_line_makes_part_base64() -> None:
    """A rendered line over 998 octets (a renderer bug) still gives a valid message."""
    rendered = make_rendered(html=("<p>" + "y" * 2000 + "</p>\n", UNSUB, "\n"))
    data = factory(rendered=rendered).build(subscriber())
    assert transfer_encodings(data) == ["8bit", "base64"]
    assert max(len(line) for line in data.split(b"\r\n")) <= MAX_LINE


def test_base64_variant_when_not_eight_bit() -> None:
    """eight_bit=False gives base64 parts with lines of 76 characters."""
    data = factory().build(subscriber(name="Zoë"), eight_bit=False)
    assert transfer_encodings(data) == ["base64", "base64"]
    body = data.split(b"\r\n\r\n", 1)[1]
    assert body.isascii()
    assert max(len(line) for line in body.split(b"\r\n")) <= 76


def test_dot_stuffing_inside_values() -> None:
    """A value line starting with '.' is doubled on the wire, also the value's first line."""
    data = factory().build(subscriber(city=".start\n.second"), dot_stuffed=True)
    assert b"\r\n..start\r\n..second\r\n" in data
    assert b"\r\n..dot line\r\n" in data


def test_live_date_is_current() -> None:
    """Without `now`, Date is the time of building."""
    build = MessageFactory(make_rendered(), CONFIG, SECRET)
    sent = parse(build.build(subscriber()))["Date"].datetime
    assert abs((dt.datetime.now(dt.UTC) - sent).total_seconds()) < 5


@pytest.mark.parametrize(("city", "wire"), [("", b"a\r\n..b\r\n"), ("x", b"a\r\nx.b\r\n")])
def test_dot_after_empty_value_at_line_start(city: str, wire: bytes) -> None:
    """A literal '.' after a field at line start is stuffed only when the field is empty."""
    rendered = make_rendered(text=("a\n", CITY, ".b\n"))
    data = factory(rendered=rendered).build(subscriber(city=city), dot_stuffed=True)
    assert b"8bit\r\n\r\n" + wire + b"\r\n--" in data


CONTROL = st.characters(codec="utf-8", categories=("Cc",)) | st.sampled_from("\u2028\u2029")


@given(st.text(max_size=10), CONTROL, st.text(max_size=10))
def test_any_control_character_in_name_refused(before: str, control: str, after: str) -> None:
    """Wherever a control character sits in a name, the message is refused."""
    with pytest.raises(MessageError):
        factory().build(subscriber(name=before + control + after))


def test_base_url_required() -> None:
    """Without base_url there is no unsubscribe link: the factory says which key to set."""
    with pytest.raises(ConfigError, match=r"newsletter\.base_url: missing"):
        factory(config=make_config(base_url=""))
