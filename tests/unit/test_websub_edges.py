"""WebSub decisions at their edges (``bot/domain/websub.py``): retry times, what a verification
keeps, when a subscription needs attention, and which secrets sign a delivery."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.websub import (
    DEFAULT_LEASE,
    UNSUBSCRIBE_ATTEMPTS,
    VERIFY_WITHIN,
    Hub,
    Request,
    Subscription,
    Verification,
    backoff,
    given_up,
    next_request,
    removal,
    renew_at,
    secrets_for,
    verify,
    wake_at,
)

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
HUB = Hub("https://hub.example.org/", "https://e.org/feed.xml")
SUB = Subscription("hrw", HUB)


@pytest.mark.parametrize(
    ("failures", "wait"),
    [
        (-1, timedelta(0)),
        (0, timedelta(0)),
        (1, timedelta(minutes=1)),
        (2, timedelta(minutes=2)),
        (9, timedelta(minutes=256)),
        (10, timedelta(hours=6)),
        (1000, timedelta(hours=6)),
    ],
)
def test_a_hub_is_left_alone_longer_after_each_failure(failures: int, wait: timedelta) -> None:
    assert backoff(failures) == wait


def test_an_unsubscription_is_given_up_after_its_last_attempt() -> None:
    removed = replace(SUB, removed=True)
    assert not given_up(replace(removed, failures=UNSUBSCRIBE_ATTEMPTS - 1))
    assert given_up(replace(removed, failures=UNSUBSCRIBE_ATTEMPTS))
    assert not given_up(replace(SUB, failures=UNSUBSCRIBE_ATTEMPTS))  # still wanted


def test_a_retry_is_sent_at_its_time_not_before() -> None:
    waiting = replace(SUB, failures=1, retry_at=NOW)
    assert next_request(waiting, NOW - timedelta(seconds=1)) is None
    assert next_request(waiting, NOW) == "subscribe"
    assert next_request(replace(waiting, removed=True), NOW) == "unsubscribe"


def test_a_removed_feed_forgets_its_failures_and_what_it_waited_on() -> None:
    busy = replace(
        SUB,
        secret="s1",
        expires=NOW + timedelta(days=1),
        pending=Request("subscribe", "s2", NOW),
        failures=3,
        retry_at=NOW + timedelta(minutes=4),
    )
    assert removal(busy) == replace(busy, removed=True, pending=None, failures=0, retry_at=None)
    assert removal(SUB) is None  # never verified, nothing in flight: nothing to end


def test_verifications_keep_or_end_exactly_what_they_say() -> None:
    asked = replace(SUB, pending=Request("subscribe", "s2", NOW), failures=2, retry_at=NOW)
    # another topic, another mode, nothing asked: refused, the subscription kept as it is
    assert verify(asked, "subscribe", "https://other/", "60", NOW) == Verification(False, asked)
    assert verify(asked, "unsubscribe", HUB.topic, None, NOW) == Verification(False, asked)
    assert verify(SUB, "subscribe", HUB.topic, None, NOW) == Verification(False, SUB)
    confirmed = verify(asked, "subscribe", HUB.topic, "9" * 15, NOW)
    lease = timedelta(days=10 * 365)  # at most ten years, whatever the hub says
    assert confirmed == Verification(
        True,
        replace(
            asked,
            secret="s2",
            expires=NOW + lease,
            lease=lease,
            pending=None,
            failures=0,
            retry_at=None,
        ),
    )
    plain = verify(asked, "subscribe", HUB.topic, "soon", NOW)
    assert plain.subscription is not None and plain.subscription.lease == DEFAULT_LEASE
    leaving = replace(SUB, removed=True, pending=Request("unsubscribe", "s3", NOW))
    assert verify(leaving, "unsubscribe", HUB.topic, None, NOW) == Verification(True, None)


def test_a_subscription_wakes_for_its_verification_its_retry_or_its_renewal() -> None:
    verified = replace(SUB, secret="s1", expires=NOW + timedelta(days=7), lease=timedelta(days=7))
    assert (
        wake_at(verified) == renew_at(verified) == NOW + timedelta(days=7) - timedelta(hours=16.8)
    )
    assert wake_at(replace(verified, retry_at=NOW)) == NOW
    pending = replace(verified, retry_at=NOW, pending=Request("subscribe", "s2", NOW))
    assert wake_at(pending) == NOW + VERIFY_WITHIN
    assert verified.active(NOW) and not verified.active(NOW + timedelta(days=7))


def test_a_delivery_may_be_signed_with_the_secrets_in_use() -> None:
    verified = replace(SUB, secret="s1")
    assert secrets_for(verified) == ("s1",)
    renewing = replace(verified, pending=Request("subscribe", "s2", NOW))
    assert secrets_for(renewing) == ("s1", "s2")
    assert secrets_for(replace(verified, pending=Request("unsubscribe", "s3", NOW))) == ("s1",)
    assert secrets_for(replace(renewing, removed=True)) == ()
    assert secrets_for(None) == ()
