"""An address with a plain local part has only its domain checked, once per domain: the
result (or the refusal) must be exactly what the full check gives, for any input."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from newsletter import addresses
from newsletter.errors import BadAddress

LOCAL = st.text(
    alphabet=st.sampled_from("abcXYZ019.!#$%&'*+/=?^_`{|}~-\"() ,:;<>@[\\]é\t"), max_size=70
)
DOMAINS = st.sampled_from(
    [
        "example.org", "EXAMPLE.org", "example.org.", "sub.example.co.uk", "x.test", "x.TEST.",
        "localhost", "x.invalid", "x.example", "x.localhost", "a", "a.b", "-x.org", "x-.org",
        "x..org", ".x.org", "x.org..", "1.2.3.4", "[1.2.3.4]", "xn--bcher-kva.example.org",
        "XN--BCHER-KVA.org", "bücher.org", "x_y.org", "x.123", "a" * 64 + ".org",
        "a" * 63 + ".org", "x.onion", "x.local", "x.arpa", "", "x.o", "ex ample.org",
    ]
)  # fmt: skip
RANDOM_DOMAIN = st.from_regex(r"[a-zA-Z0-9.-]{1,30}", fullmatch=True)


def outcome(text: str, allow: bool) -> object:
    try:
        return addresses.normalise_address(text, allow_reserved=allow)
    except BadAddress as exc:
        return (type(exc), str(exc))


def full(text: str, allow: bool) -> object:
    stripped = text.strip()
    if not stripped:
        return outcome(text, allow)
    try:
        return addresses._checked(stripped, allow)
    except BadAddress as exc:
        return (type(exc), str(exc))


@given(LOCAL, st.one_of(DOMAINS, RANDOM_DOMAIN), st.booleans())
@example("ann", "example.org", False)
@example("a" * 64, "example.org", False)
@example("a" * 65, "example.org", False)
@example("ann", "a" * 250 + ".org", False)
@example("ann.", "example.org", False)
@example("ann", "x.test", True)
def test_the_domain_shortcut_gives_what_the_full_check_gives(
    local: str, domain: str, allow: bool
) -> None:
    text = f"{local}@{domain}"
    assert outcome(text, allow) == full(text, allow)


def test_a_list_of_one_domain_checks_it_once() -> None:
    """20,000 readers at one domain: the domain's check runs once (the plan's cost)."""
    addresses._domain_check.cache_clear()
    for i in range(2000):
        addresses.normalise_address(f"reader{i}@Example.ORG")
    assert addresses._domain_check.cache_info().misses == 1
