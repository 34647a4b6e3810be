"""A database URL never shows its password (``bot/store/urls.py``), however the password is
written: with the characters that separate a URL's parts, empty, or in the query."""

from __future__ import annotations

import pytest

from bot.store.urls import masked, scrub, secrets_in


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://bot:p:w@db/t", "postgresql://bot:***@db/t"),
        ("postgresql://bot:p@ss@db/t", "postgresql://bot:***@db/t"),
        ("postgresql://Xavier:pw@db/t", "postgresql://Xavier:***@db/t"),
        ("postgresql://bot:pw@db/t?options=a@b/c", "postgresql://bot:***@db/t?options=a@b/c"),
        ("postgresql://bot:pw@db/t?next=x://y", "postgresql://bot:***@db/t?next=x://y"),
        ("postgresql:///t?password=&host=/tmp", "postgresql:///t?password=&host=/tmp"),
        ("postgresql:///t?sslpassword=k#frag", "postgresql:///t?sslpassword=***#frag"),
    ],
)
def test_the_password_is_masked_wherever_it_is(url: str, shown: str) -> None:
    assert masked(url) == shown


def test_the_secrets_of_a_url_come_longest_first_as_written_and_decoded() -> None:
    url = "postgresql://bot:p%40ss@db/t?password=x%21%21&sslpassword="
    assert secrets_in(url) == ["x%21%21", "p%40ss", "p@ss", "x!!"]
    assert secrets_in("postgresql://bot@db/t") == []
    assert secrets_in("postgresql://bot:pw@[::1/t") == ["pw"]  # even a URL urlsplit cannot read
    text = f"connection to {url} failed: password x!! refused"
    assert scrub(text, url) == (
        "connection to postgresql://bot:***@db/t?password=***&sslpassword= failed: "
        "password *** refused"
    )


@pytest.mark.parametrize(
    ("url", "shown", "secret"),
    [
        # libpq reads the user part up to the "@": a password may hold "#", "?" and ":" as is
        ("postgresql://bot:s3cr3t#1@db/t", "postgresql://bot:***@db/t", "s3cr3t#1"),
        ("postgresql://bot:a?b:c@db:5432/t?ssl=1", "postgresql://bot:***@db:5432/t?ssl=1", "a?b:c"),
        ("postgres://bot:x&y=z#@h/t", "postgres://bot:***@h/t", "x&y=z#"),
        # a raw "@" in it: masked whole, whichever "@" ends it
        ("postgresql://bot:p@ss@db/t", "postgresql://bot:***@db/t", "p@ss"),
    ],
)  # fmt: skip
def test_a_password_with_url_delimiters_in_it_is_never_shown(
    url: str, shown: str, secret: str
) -> None:
    assert masked(url) == shown
    assert secret in secrets_in(url)
    said = scrub(f"connection to {url} failed: password {secret} refused", url)
    assert secret not in said


def test_a_url_ending_at_its_user_part_is_masked() -> None:
    assert masked("postgresql://bot:pw@") == "postgresql://bot:***@"
    assert secrets_in("postgresql://bot:pw@") == ["pw"]


def test_the_password_is_found_whatever_the_query_holds() -> None:
    url = "postgresql://bot:pw@db/t?application_name=a://b"
    assert secrets_in(url) == ["pw"]
    assert "pw" not in scrub(f"{url} refused pw", url)


def test_a_password_with_raw_at_signs_is_found_as_libpq_reads_it_too() -> None:
    # libpq's user part ends at the first "@": its password is "a"; written whole, "a@b@c"
    assert secrets_in("postgresql://bot:a@b@c@db/t") == ["a@b@c", "a"]
