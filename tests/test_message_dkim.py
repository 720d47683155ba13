"""DKIM: messages signed with the configured key verify with dkimpy's own verifier."""

from __future__ import annotations

import asyncio
import base64
import re
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from newsletter.config import Config
from newsletter.dkim import DkimSigner, InlineSigner, SigningPool, dot_stuff, wire_message
from newsletter.errors import ConfigError
from newsletter.message import MessageFactory
from tests.message_samples import SECRET, make_config, make_rendered, subscriber

SELECTOR = "news2024"
DOMAIN = "example.org"


@pytest.fixture(scope="module")
def key_pair() -> tuple[bytes, bytes]:
    """(private key PEM, DNS TXT record) for a fresh RSA-2048 key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


@pytest.fixture
def config(tmp_path: Path, key_pair: tuple[bytes, bytes]) -> Config:
    (tmp_path / "dkim.pem").write_bytes(key_pair[0])
    return make_config(
        tmp_path,
        dkim_domain=DOMAIN,
        dkim_selector=SELECTOR,
        dkim_key_file="dkim.pem",
        reply_to="replies@example.org",
    )


def stub_dns(record: bytes) -> object:
    """A DNS lookup that knows only our selector's TXT record."""

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode() else None

    return lookup


def signed_message(config: Config) -> bytes:
    signer = DkimSigner.from_config(config)
    assert signer is not None
    factory = MessageFactory(make_rendered(), config, SECRET)
    return signer.sign(factory.build(subscriber(name="Zoë", city="Paris")))


def test_signature_verifies(config: Config, key_pair: tuple[bytes, bytes]) -> None:
    """A signed message verifies against the published key."""
    assert dkim.verify(signed_message(config), dnsfunc=stub_dns(key_pair[1]))


def test_signature_covers_required_headers(config: Config) -> None:
    """h= lists From, To, Subject, Date, Message-ID and the List-* headers."""
    header = signed_message(config).split(b"\r\n\r\n")[0].decode()
    tags = re.search(r"\bh=([^;]+);", header.replace("\r\n", ""))
    assert tags is not None
    covered = {name.strip().lower() for name in tags.group(1).split(":")}
    required = {"from", "to", "subject", "date", "message-id", "list-id", "list-unsubscribe"}
    assert required | {"list-unsubscribe-post"} <= covered


def test_altered_subject_fails(config: Config, key_pair: tuple[bytes, bytes]) -> None:
    """Changing a signed header after signing breaks the signature."""
    tampered = re.sub(rb"Subject: [^\r]*", b"Subject: You won", signed_message(config), count=1)
    assert not dkim.verify(tampered, dnsfunc=stub_dns(key_pair[1]))


def test_added_list_unsubscribe_fails(config: Config, key_pair: tuple[bytes, bytes]) -> None:
    """A second List-Unsubscribe added in transit breaks the signature (oversigned)."""
    data = signed_message(config)
    head, body = data.split(b"\r\n\r\n", 1)
    tampered = head + b"\r\nList-Unsubscribe: <https://evil.example/>\r\n\r\n" + body
    assert not dkim.verify(tampered, dnsfunc=stub_dns(key_pair[1]))


def test_pool_signs_off_the_loop(config: Config, key_pair: tuple[bytes, bytes]) -> None:
    """The pool's dot-stuffed result unstuffs to a message that verifies."""
    signer = DkimSigner.from_config(config)
    assert signer is not None
    factory = MessageFactory(make_rendered(), config, SECRET)
    message = factory.build(subscriber(city=".dot\n.line"))

    async def sign() -> bytes:
        with SigningPool(signer, workers=1) as pool:
            return await pool.sign(message, dot_stuffed=True)

    stuffed = asyncio.run(sign())
    assert b"\r\n..dot" in stuffed
    unstuffed = re.sub(rb"(?m)^\.", b"", stuffed)
    assert dkim.verify(unstuffed, dnsfunc=stub_dns(key_pair[1]))


def test_wire_message_unsigned_is_built_in_the_wire_form() -> None:
    """Without a signer the message is built at once in the form the connection asked for."""
    asked: list[tuple[bool, bool]] = []

    def build(eight_bit: bool, dot_stuffed: bool) -> bytes:
        asked.append((eight_bit, dot_stuffed))
        return b"m"

    assert asyncio.run(wire_message(build, eight_bit=False, dot_stuffed=True)) == b"m"
    assert asked == [(False, True)]


def test_wire_message_signs_unstuffed_then_stuffs(
    config: Config, key_pair: tuple[bytes, bytes]
) -> None:
    """With a signer the message is built unstuffed, signed, then dot-stuffed for the wire."""
    signer = DkimSigner.from_config(config)
    assert signer is not None
    factory = MessageFactory(make_rendered(), config, SECRET)
    asked: list[tuple[bool, bool]] = []

    def build(eight_bit: bool, dot_stuffed: bool) -> bytes:
        asked.append((eight_bit, dot_stuffed))
        person = subscriber(city=".dot\n.line")
        return factory.build(person, eight_bit=eight_bit, dot_stuffed=dot_stuffed)

    inline = InlineSigner(signer)
    stuffed = asyncio.run(wire_message(build, eight_bit=True, dot_stuffed=True, signer=inline))
    assert asked == [(True, False)]
    assert b"\r\n..dot" in stuffed
    unstuffed = re.sub(rb"(?m)^\.", b"", stuffed)
    assert dkim.verify(unstuffed, dnsfunc=stub_dns(key_pair[1]))


def test_dot_stuff_doubles_leading_dots() -> None:
    """Lines starting with '.' get a second one; others are unchanged."""
    assert dot_stuff(b".a\r\nb\r\n.\r\n") == b"..a\r\nb\r\n..\r\n"


def test_dkim_off_without_keys(tmp_path: Path) -> None:
    """No dkim_* key set: no signer."""
    assert DkimSigner.from_config(make_config(tmp_path)) is None


def test_half_configured_names_missing_keys(tmp_path: Path) -> None:
    """A domain without selector and key file is an error naming both keys."""
    with pytest.raises(ConfigError) as caught:
        DkimSigner.from_config(make_config(tmp_path, dkim_domain=DOMAIN))
    fields = {p.field for p in caught.value.problems}
    assert fields == {"newsletter.dkim_selector", "newsletter.dkim_key_file"}


def test_missing_key_file_is_config_error(tmp_path: Path) -> None:
    """A key file that is not there is reported with its path and key."""
    config = make_config(
        tmp_path, dkim_domain=DOMAIN, dkim_selector=SELECTOR, dkim_key_file="nope.pem"
    )
    with pytest.raises(ConfigError, match=r"newsletter\.dkim_key_file: cannot read .*nope\.pem"):
        DkimSigner.from_config(config)


OVERSIGNED = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "MIME-Version",
)


def insert_above(data: bytes, name: str, *, at_top: bool) -> bytes:
    """`data` with a second `name:` header, at the very top or just above the original."""
    added = f"{name}: forged@evil.example\r\n".encode()
    if at_top:
        return added + data
    original = re.search(rb"(?im)^" + re.escape(name.encode()) + rb":", data)
    assert original is not None, f"the message has no {name} header"
    return data[: original.start()] + added + data[original.start() :]


@pytest.mark.parametrize("at_top", [True, False], ids=["top", "above-original"])
@pytest.mark.parametrize("name", OVERSIGNED)
def test_inserted_second_header_fails(
    config: Config, key_pair: tuple[bytes, bytes], name: str, at_top: bool
) -> None:
    """A second copy of any covered header inserted above the original breaks the signature."""
    data = signed_message(config)
    assert dkim.verify(data, dnsfunc=stub_dns(key_pair[1]))
    tampered = insert_above(data, name, at_top=at_top)
    assert not dkim.verify(tampered, dnsfunc=stub_dns(key_pair[1]))


@pytest.mark.parametrize("reply_to", ["replies@example.org", ""])
def test_h_names_each_header_once_more_than_present(
    tmp_path: Path, key_pair: tuple[bytes, bytes], reply_to: str
) -> None:
    """h= lists every oversigned name one time more than the message carries it."""
    (tmp_path / "dkim.pem").write_bytes(key_pair[0])
    config = make_config(
        tmp_path,
        dkim_domain=DOMAIN,
        dkim_selector=SELECTOR,
        dkim_key_file="dkim.pem",
        reply_to=reply_to,
    )
    signature, head = signed_message(config).split(b"\r\n\r\n")[0].split(b"\r\n", 1)
    while head[:1] in (b" ", b"\t"):  # the rest of the folded DKIM-Signature
        signature, head = signature + head.split(b"\r\n", 1)[0], head.split(b"\r\n", 1)[1]
    tags = re.search(r"\bh=([^;]+);", re.sub(r"\s+", "", signature.decode()))
    assert tags is not None
    names = [n.lower() for n in tags.group(1).split(":")]
    for name in OVERSIGNED:
        present = len(re.findall(rf"(?im)^{re.escape(name)}:", head.decode()))
        assert names.count(name.lower()) == present + 1, name


def insert_below(data: bytes, name: str) -> bytes:
    """`data` with a `name:` header added as the last header (below any original)."""
    end = data.index(b"\r\n\r\n")
    return data[:end] + f"\r\n{name}: forged@evil.example".encode() + data[end:]


# Headers the message does not carry but mail clients show or act on if one is added in
# transit: who it is "on behalf of", more recipients, the thread it joins, how the body decodes.
ABSENT_BUT_SHOWN = ("Sender", "Cc", "In-Reply-To", "References", "Content-Transfer-Encoding")


@pytest.mark.parametrize("where", ["top", "bottom"])
@pytest.mark.parametrize("name", OVERSIGNED + ABSENT_BUT_SHOWN)
def test_any_added_header_that_readers_see_fails(
    config: Config, key_pair: tuple[bytes, bytes], name: str, where: str
) -> None:
    """A covered header added at the top or at the bottom of the header block (below the
    original, where a verifier looks first) breaks the signature; also one the message lacks."""
    data = signed_message(config)
    tampered = insert_above(data, name, at_top=True) if where == "top" else insert_below(data, name)
    assert not dkim.verify(tampered, dnsfunc=stub_dns(key_pair[1]))


NOT_A_DNS_NAME = {
    "a tag after the selector": ("dkim_selector", "sel; d=evil.example"),
    "a line break in the selector": ("dkim_selector", "sel\nBcc: victim@example.net"),
    "a space in the domain": ("dkim_domain", "exa mple.org"),
    "a lone dot as domain": ("dkim_domain", "."),
    "an at sign in the selector": ("dkim_selector", "s@l"),
    "a domain with no dot": ("dkim_domain", "localhost"),
}


@pytest.mark.parametrize(("key", "value"), NOT_A_DNS_NAME.values(), ids=NOT_A_DNS_NAME.keys())
def test_dkim_names_that_are_not_dns_names_are_config_errors(
    tmp_path: Path, key: str, value: str
) -> None:
    """d= and s= go into the DKIM-Signature header and a DNS query: anything but a DNS name is
    an error naming the key (a selector `sel; d=evil.example` or one with a line break was
    written into every message)."""
    from newsletter.config import load_config
    from tests.compose_helpers import MINIMAL_CONFIG, write

    (tmp_path / "dkim.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
    write(tmp_path / "newsletter.toml", MINIMAL_CONFIG)
    env = {
        "NEWSLETTER_DKIM_DOMAIN": DOMAIN,
        "NEWSLETTER_DKIM_SELECTOR": SELECTOR,
        "NEWSLETTER_DKIM_KEY_FILE": "dkim.pem",
        f"NEWSLETTER_{key.upper()}": value,
    }
    with pytest.raises(ConfigError, match=f"NEWSLETTER_{key.upper()}: "):
        load_config(explicit=tmp_path, environ=env)


def test_an_idn_dkim_domain_is_signed_in_ascii(
    tmp_path: Path, key_pair: tuple[bytes, bytes]
) -> None:
    """d= of an IDN domain is its ASCII (IDNA) form: a header of a message without SMTPUTF8."""
    (tmp_path / "dkim.pem").write_bytes(key_pair[0])
    config = make_config(
        tmp_path, dkim_domain="exämple.org", dkim_selector=SELECTOR, dkim_key_file="dkim.pem"
    )
    signer = DkimSigner.from_config(config)
    assert signer is not None
    assert signer.domain == "xn--exmple-cua.org"
