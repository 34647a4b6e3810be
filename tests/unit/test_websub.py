"""WebSub: the pure decisions, hub discovery and signature checks."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime, timedelta

import pytest

from bot.domain import websub as decide
from bot.domain.websub import Hub, Subscription
from bot.sources.websub import discover, new_secret, signature_valid

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
HUB = Hub("https://hub.example/", "https://news.example/feed.xml")


def verified(lease: int = 3600) -> Subscription:
    sub = decide.requested(Subscription("f", HUB), "subscribe", "s1", NOW)
    result = decide.verify(sub, "subscribe", HUB.topic, str(lease), NOW)
    assert result.confirmed and result.subscription is not None
    return result.subscription


def test_a_new_subscription_is_requested_then_waits_for_its_verification() -> None:
    sub = Subscription("f", HUB)
    assert decide.next_request(sub, NOW) == "subscribe"
    waiting = decide.requested(sub, "subscribe", "s1", NOW)
    assert decide.next_request(waiting, NOW) is None
    assert decide.secrets_for(waiting) == ("s1",)


def test_only_the_awaited_mode_and_topic_are_confirmed() -> None:
    sub = decide.requested(Subscription("f", HUB), "subscribe", "s1", NOW)
    assert not decide.verify(None, "subscribe", HUB.topic, "60", NOW).confirmed
    assert not decide.verify(sub, "unsubscribe", HUB.topic, "60", NOW).confirmed
    assert not decide.verify(sub, "subscribe", "https://other/", "60", NOW).confirmed
    assert not decide.verify(Subscription("f", HUB), "subscribe", HUB.topic, "60", NOW).confirmed
    active = verified()
    assert not decide.verify(active, "subscribe", HUB.topic, "60", NOW).confirmed
    assert active.active(NOW) and active.secret == "s1"
    assert active.expires == NOW + timedelta(seconds=3600)


def test_renewal_comes_a_tenth_of_the_lease_before_its_end() -> None:
    active = verified(lease=36000)
    assert decide.renew_at(active) == NOW + timedelta(seconds=36000 - 3600)
    assert decide.next_request(active, NOW + timedelta(seconds=32000)) is None
    assert decide.next_request(active, NOW + timedelta(seconds=32400)) == "subscribe"
    short = verified(lease=60)  # a short lease: renewed at least five minutes before
    assert decide.next_request(short, NOW) == "subscribe"


def test_a_refusing_hub_is_retried_with_a_doubling_backoff() -> None:
    sub = Subscription("f", HUB)
    for failures, wait in [(1, 1), (2, 2), (3, 4), (4, 8)]:
        sub = decide.refused(decide.requested(sub, "subscribe", "s", NOW), NOW)
        assert sub.failures == failures and sub.retry_at == NOW + timedelta(minutes=wait)
        assert decide.next_request(sub, NOW) is None
    assert decide.backoff(30) == decide.RETRY_CAP


def test_a_verification_that_never_comes_is_a_failure() -> None:
    sub = decide.requested(Subscription("f", HUB), "subscribe", "s", NOW)
    assert decide.lapse(sub, NOW + timedelta(minutes=1)) == sub
    late = decide.lapse(sub, NOW + decide.VERIFY_WITHIN)
    assert late.pending is None and late.failures == 1


def test_a_removed_feed_is_unsubscribed_and_a_denial_is_a_refusal() -> None:
    assert decide.removal(Subscription("f", HUB)) is None  # never asked for: forgotten
    ending = decide.removal(verified())
    assert ending is not None and not ending.active(NOW)
    assert decide.next_request(ending, NOW) == "unsubscribe"
    assert decide.secrets_for(ending) == ()
    waiting = decide.requested(ending, "unsubscribe", "x", NOW)
    assert decide.verify(waiting, "unsubscribe", HUB.topic, None, NOW).subscription is None
    sub = decide.requested(Subscription("f", HUB), "subscribe", "s1", NOW)
    denied = decide.verify(sub, "denied", HUB.topic, None, NOW)
    assert denied.confirmed and denied.subscription is not None
    assert denied.subscription.failures == 1


def test_discovery_prefers_link_headers_then_the_document() -> None:
    url = "https://news.example/feed.xml"
    headers = ['<https://hub.example/>; rel="hub", </self.xml>; rel=self']
    assert discover(b"", headers, url) == Hub(
        "https://hub.example/", "https://news.example/self.xml"
    )
    atom = (
        b'<feed xmlns="http://www.w3.org/2005/Atom"><link rel="self" href="https://n.example/a"/>'
        b"<link href='https://hub.example/?a=1&amp;b=2' rel='hub'/></feed>"
    )
    assert discover(atom, [], url) == Hub("https://hub.example/?a=1&b=2", "https://n.example/a")
    rss = b'<rss><channel><atom:link rel="hub" href="https://h.example/"/></channel></rss>'
    assert discover(rss, [], url) == Hub("https://h.example/", url)
    assert discover(b"<rss><channel><link>https://x/</link></channel></rss>", [], url) is None
    assert discover(b'<link rel="hub" href="javascript:x"/>', [], url) is None


@pytest.mark.parametrize("method", ["sha1", "sha256", "sha384", "sha512"])
def test_signatures_of_every_listed_method(method: str) -> None:
    secret, body = new_secret(), b"<feed/>"
    assert len(secret.encode()) < 200
    good = f"{method}=" + hmac.new(secret.encode(), body, method).hexdigest()
    assert signature_valid(good, [secret], body)
    assert signature_valid(good.upper().replace(method.upper(), method), ["x", secret], body)
    assert not signature_valid(good, ["other"], body)
    assert not signature_valid(good, [secret], body + b" ")
    assert not signature_valid(good, [], body)


@pytest.mark.parametrize("header", [None, "", "sha256", "md5=abc", "sha256=zz", "=abc"])
def test_missing_or_malformed_signatures_are_invalid(header: str | None) -> None:
    assert not signature_valid(header, ["s"], b"body")
