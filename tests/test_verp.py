"""verp.ReturnPaths: every return path reads back to its row, in any case, within 64 octets;
any other id (changed, cut, of another address or send, under another secret) verifies for
nobody."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from newsletter.verp import MAX_LOCAL, ReturnPaths

SECRET = b"a-return-path-secret-of-32-chars!"
PATHS = ReturnPaths("bounces-with-a-long-name.x@example.org", SECRET)
rows = st.integers(min_value=1, max_value=10**10 - 1)
emails = st.emails()
slugs = st.text(min_size=1, max_size=60)


@given(rows, emails, slugs)
def test_a_return_path_reads_back_in_any_case(row: int, email: str, slug: str) -> None:
    """Made, then read back (also upper-cased by a relay): the same row, and it verifies."""
    address = PATHS.for_send(slug, "smtp://mail.example.org:587")(row, email)
    assert len(address.partition("@")[0].encode()) <= MAX_LOCAL
    for seen in (address, address.upper(), f"<{address}>"):
        verp = PATHS.read(seen)
        assert verp is not None and verp.row == row and PATHS.verifies(verp, email)


@given(rows, emails, st.integers(min_value=0, max_value=40), st.characters(codec="ascii"))
def test_a_changed_return_path_verifies_for_nobody(
    row: int, email: str, where: int, new: str
) -> None:
    """One character of the id changed: either not read as ours, or it does not verify."""
    address = PATHS.for_send("2021-09-x", "outbox")(row, email)
    local, _, domain = address.partition("@")
    start = len("bounces-with-a-long-name.x+")
    at = start + where % (len(local) - start)
    if local[at].lower() == new.lower():
        return
    changed = f"{local[:at]}{new}{local[at + 1 :]}@{domain}"
    verp = PATHS.read(changed)
    assert verp is None or not PATHS.verifies(verp, email)


@given(rows, emails, emails)
def test_an_id_is_bound_to_its_address_send_and_secret(row: int, email: str, other: str) -> None:
    """The id of one address does not verify for another, nor under another secret or send."""
    verp = PATHS.read(PATHS.for_send("2021-09-x", "outbox")(row, email))
    assert verp is not None
    if other != email:
        assert not PATHS.verifies(verp, other)
    assert not ReturnPaths("bounces-with-a-long-name.x@example.org", b"x" * 32).verifies(
        verp, email
    )
    elsewhere = PATHS.read(PATHS.for_send("2021-09-x", "smtp://a:25")(row, email))
    assert elsewhere is not None and elsewhere.send != verp.send
