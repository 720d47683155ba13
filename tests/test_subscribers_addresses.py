"""Addresses: the stored form, the comparison key, and what is refused."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.addresses import address_key, key_hash, normalise_address
from newsletter.errors import BadAddress, NewsletterError


def test_domain_is_lowercased_and_local_part_kept() -> None:
    """The stored form lowercases the domain and keeps the local part as written."""
    assert normalise_address("  Ann.Lee@Example.ORG \n") == ("Ann.Lee@example.org", False)


def test_idn_domain_stays_readable() -> None:
    """A punycode domain is stored in Unicode; punycode is only for the wire."""
    assert normalise_address("ann@xn--bcher-kva.example.org") == ("ann@bücher.example.org", False)


def test_non_ascii_local_part_needs_smtputf8() -> None:
    """A non-ASCII local part is accepted and flagged as needing SMTPUTF8."""
    stored, smtputf8 = normalise_address("żaneta@example.pl")
    assert (stored, smtputf8) == ("żaneta@example.pl", True)


def test_stored_form_is_nfc() -> None:
    """A decomposed accent (e + combining acute) is stored composed (NFC)."""
    decomposed = "re\u0301ka@example.org"
    stored, _ = normalise_address(decomposed)
    assert stored == unicodedata.normalize("NFC", decomposed)
    assert stored != decomposed


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("no-at-sign.example.org", "@-sign"),
        ("has space@example.org", "SPACE"),
        ("", "empty"),
        ("ann@", "after the @"),
    ],
)
def test_bad_addresses_are_refused_with_a_reason(raw: str, words: str) -> None:
    """A bad address raises a NewsletterError whose reason says what is wrong."""
    with pytest.raises(BadAddress) as caught:
        normalise_address(raw)
    assert isinstance(caught.value, NewsletterError)
    assert words in caught.value.reason


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("Ann@Example.org", "ann@example.ORG"),
        ("ann@xn--bcher-kva.example", "ANN@Bücher.example"),
        ("re\u0301ka@example.org", "RÉKA@example.org"),
        ("Straße@example.de", "STRASSE@example.de"),
    ],
)
def test_two_spellings_share_a_key(one: str, other: str) -> None:
    """Case (local part included), NFC and punycode spellings of one address share a key."""
    assert address_key(one) == address_key(other)
    assert key_hash(address_key(one)) == key_hash(address_key(other))


def test_different_addresses_have_different_keys() -> None:
    """Keys still tell different people apart."""
    assert address_key("ann@example.org") != address_key("anne@example.org")


@settings(max_examples=200)
@given(st.emails())
def test_normalisation_is_idempotent(raw: str) -> None:
    """Normalising a stored form gives it back, and its key is the key of the raw form."""
    try:
        stored, smtputf8 = normalise_address(raw)
    except BadAddress:
        return
    assert normalise_address(stored) == (stored, smtputf8)
    assert address_key(stored) == address_key(raw)


@given(st.text())
def test_address_key_is_idempotent_and_total(text: str) -> None:
    """address_key never raises, and keying a key changes nothing."""
    key = address_key(text)
    assert address_key(key) == key
