"""Unsubscribe tokens: URL-safe, carry the address, and verify only when untouched."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.errors import InvalidToken, SecretMissing
from newsletter.tokens import (
    ConfirmClaim,
    make_confirm_token,
    make_token,
    normalise_address,
    verify_confirm_token,
    verify_token,
)

SECRET = b"token-test-secret"
LIST = "news.example.org"
URL_SAFE = re.compile(r"[A-Za-z0-9_-]+")
TOKEN_CHARS = st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
addresses = st.builds(
    lambda local, domain: f"{local}@{domain}",
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30),
    st.from_regex(r"[A-Za-z0-9-]{1,20}\.[A-Za-z]{2,6}", fullmatch=True),
)


def test_round_trip_returns_normalised_address() -> None:
    """A token verifies to the address with its domain lowercased."""
    token = make_token(SECRET, LIST, "Ann.Lee@Example.ORG")
    assert verify_token(SECRET, LIST, token) == "Ann.Lee@example.org"


def test_normalisation_is_nfc() -> None:
    """Decomposed and composed spellings of an address give the same token."""
    composed, decomposed = "zo\u00eb@example.org", "zoe\u0308@example.org"
    assert normalise_address(decomposed) == composed
    assert make_token(SECRET, LIST, decomposed) == make_token(SECRET, LIST, composed)


@given(addresses)
def test_tokens_are_url_safe(address: str) -> None:
    """Tokens use only URL-safe characters, whatever the address."""
    assert URL_SAFE.fullmatch(make_token(SECRET, LIST, address))


def test_other_list_does_not_verify() -> None:
    """A token for one list is refused by another."""
    token = make_token(SECRET, LIST, "ann@example.org")
    with pytest.raises(InvalidToken):
        verify_token(SECRET, "other.example.org", token)


def test_other_secret_does_not_verify() -> None:
    """A token made under another secret is refused."""
    token = make_token(b"another secret", LIST, "ann@example.org")
    with pytest.raises(InvalidToken):
        verify_token(SECRET, LIST, token)


def test_empty_secret_is_refused() -> None:
    """Tokens are never made without a secret."""
    with pytest.raises(SecretMissing):
        make_token(b"", LIST, "ann@example.org")


@settings(max_examples=300)
@given(addresses, st.data())
def test_altered_token_never_verifies(address: str, data: st.DataObject) -> None:
    """Changing any one character of a token makes it invalid."""
    token = make_token(SECRET, LIST, address)
    index = data.draw(st.integers(0, len(token) - 1))
    char = data.draw(TOKEN_CHARS.filter(lambda c: c != token[index]))
    with pytest.raises(InvalidToken):
        verify_token(SECRET, LIST, token[:index] + char + token[index + 1 :])


@settings(max_examples=300)
@given(addresses, st.data())
def test_truncated_or_extended_token_never_verifies(address: str, data: st.DataObject) -> None:
    """A token cut short or with characters added is invalid."""
    token = make_token(SECRET, LIST, address)
    cut = token[: data.draw(st.integers(0, len(token) - 1))]
    extra = token + data.draw(st.text(TOKEN_CHARS, min_size=1, max_size=4))
    for bad in (cut, extra):
        with pytest.raises(InvalidToken):
            verify_token(SECRET, LIST, bad)


@settings(max_examples=300)
@given(st.text(max_size=120))
def test_forged_token_never_verifies(forged: str) -> None:
    """Arbitrary strings, URL-safe or not, are refused with InvalidToken (never another error)."""
    with pytest.raises(InvalidToken):
        verify_token(SECRET, LIST, forged)


@given(addresses, st.binary(min_size=32, max_size=32))
def test_address_with_guessed_mac_never_verifies(address: str, mac: bytes) -> None:
    """A well-formed token for a real address with a made-up MAC is refused."""
    raw = b"\x01" + mac + normalise_address(address).encode()
    forged = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    with pytest.raises(InvalidToken):
        verify_token(SECRET, LIST, forged)


def test_confirmation_tokens_carry_address_list_and_time() -> None:
    """A confirmation token verifies to what it was made for, the domain lowercased."""
    token = make_confirm_token(SECRET, LIST, "Ann@Example.ORG", "events", 1_700_000_000)
    assert URL_SAFE.fullmatch(token)
    claim = verify_confirm_token(SECRET, LIST, token)
    assert claim == ConfirmClaim("Ann@example.org", "events", 1_700_000_000)


def test_a_token_of_one_purpose_never_verifies_as_the_other() -> None:
    """Unsubscribe and confirmation tokens are made under different labels and versions."""
    unsubscribe = make_token(SECRET, LIST, "ann@example.org")
    confirm = make_confirm_token(SECRET, LIST, "ann@example.org", "", 0)
    with pytest.raises(InvalidToken):
        verify_confirm_token(SECRET, LIST, unsubscribe)
    with pytest.raises(InvalidToken):
        verify_token(SECRET, LIST, confirm)


@given(st.integers(min_value=0, max_value=200))
@settings(max_examples=60)
def test_any_changed_byte_of_a_confirmation_token_fails(position: int) -> None:
    """Changing the list, the time or the address inside the token breaks its MAC."""
    raw = bytearray(
        base64.urlsafe_b64decode(make_confirm_token(SECRET, LIST, "a@b.org", "news", 5) + "==")
    )
    raw[position % len(raw)] ^= 0x01
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(InvalidToken):
        verify_confirm_token(SECRET, LIST, forged)


def test_a_confirmation_token_is_bound_to_the_list_id() -> None:
    token = make_confirm_token(SECRET, LIST, "ann@example.org", "", 0)
    with pytest.raises(InvalidToken):
        verify_confirm_token(SECRET, "other.example.org", token)
