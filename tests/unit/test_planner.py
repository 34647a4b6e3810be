"""The pure decisions: which items are new, what is announced, what is remembered."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from bot.domain.matching import Matcher
from bot.domain.model import ChannelName, FeedItem, FeedState, SourceHealth, SourceId
from bot.domain.planner import (
    SEEN_AT_LEAST,
    SEEN_PER_ITEM,
    SEEN_RETENTION,
    FeedRule,
    HealthRule,
    next_poll_delay,
    plan_feed,
    plan_health,
)

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
TZ = ZoneInfo("Europe/Vienna")


def rule(**kw: object) -> FeedRule:
    base: dict[str, object] = {
        "source": SourceId("hrw"),
        "name": "Human Rights Watch",
        "channels": (ChannelName("alerts"),),
        "matcher": Matcher.build(["cybercrime"], []),
    }
    base.update(kw)
    return FeedRule(**base)  # type: ignore[arg-type]


def item(n: int, title: str = "cybercrime news", hours: int = 0) -> FeedItem:
    return FeedItem(
        f"id-{n}", f"{title} {n}", f"https://e.org/{n}", "summary", NOW - timedelta(hours=hours)
    )


def test_first_poll_announces_nothing_but_remembers_everything() -> None:
    plan = plan_feed(rule(), FeedState(), [item(1), item(2)], NOW, TZ)
    assert plan.alerts == ()
    assert plan.state.initialized and set(plan.state.seen) == {"id-1", "id-2"}
    assert plan.changed


def test_empty_first_poll_still_counts_as_first() -> None:
    first = plan_feed(rule(), FeedState(), [], NOW, TZ)
    assert first.state.initialized and first.changed
    second = plan_feed(rule(), first.state, [item(1)], NOW, TZ)
    assert [a.title for a in second.alerts] == ["cybercrime news 1"]


def test_backfill_posts_the_newest_matching() -> None:
    items = [item(1, hours=1), item(2, "other", hours=2), item(3, hours=3), item(4, hours=4)]
    plan = plan_feed(rule(backfill=2), FeedState(), items, NOW, TZ)
    assert [a.title for a in plan.alerts] == ["cybercrime news 3", "cybercrime news 1"]


def test_new_matching_item_is_announced_once() -> None:
    state = plan_feed(rule(), FeedState(), [item(1)], NOW, TZ).state
    plan = plan_feed(rule(), state, [item(2), item(1), item(3, "unrelated")], NOW, TZ)
    assert [a.title for a in plan.alerts] == ["cybercrime news 2"]
    again = plan_feed(rule(), plan.state, [item(2), item(1), item(3, "unrelated")], NOW, TZ)
    assert again.alerts == () and not again.changed


def test_edited_item_is_not_new() -> None:
    state = plan_feed(rule(), FeedState(), [item(1)], NOW, TZ).state
    edited = FeedItem("id-1", "cybercrime: corrected title", "https://e.org/1-new", "", None)
    plan = plan_feed(rule(), state, [edited], NOW, TZ)
    assert plan.alerts == () and not plan.changed


def test_duplicates_in_one_document_give_one_alert() -> None:
    state = plan_feed(rule(), FeedState(), [], NOW, TZ).state
    plan = plan_feed(rule(), state, [item(1), item(1)], NOW, TZ)
    assert len(plan.alerts) == 1


def test_alerts_are_oldest_first_with_stable_ids() -> None:
    state = plan_feed(rule(), FeedState(), [], NOW, TZ).state
    plan = plan_feed(rule(), state, [item(1, hours=1), item(2, hours=5)], NOW, TZ)
    assert [a.title for a in plan.alerts] == ["cybercrime news 2", "cybercrime news 1"]
    replay = plan_feed(rule(), state, [item(1, hours=1), item(2, hours=5)], NOW, TZ)
    assert [a.id for a in plan.alerts] == [a.id for a in replay.alerts]
    assert plan.alerts[0].kind == "news" and plan.alerts[0].channels == ("alerts",)


def test_a_flood_collapses_into_one_summary() -> None:
    state = plan_feed(rule(), FeedState(), [], NOW, TZ).state
    plan = plan_feed(rule(max_new_items=3), state, [item(n) for n in range(10)], NOW, TZ)
    assert len(plan.alerts) == 1
    assert "10 new items" in plan.alerts[0].title
    assert len(plan.news) == 10 and len(plan.state.seen) == 10


def test_news_text_is_plain_and_carries_the_match() -> None:
    state = plan_feed(rule(), FeedState(), [], NOW, TZ).state
    hostile = FeedItem("x", "<!channel> cybercrime @room", "https://e.org/x", "<b>hi</b>", NOW)
    alert = plan_feed(rule(), state, [hostile], NOW, TZ).alerts[0]
    assert alert.title == "<!channel> cybercrime @room"
    assert "matched: cybercrime" in alert.text
    assert "Published Sat 28 Nov 2026, 10:00 CET" in alert.text


def test_old_keys_are_forgotten_only_when_gone_and_old() -> None:
    old = NOW - SEEN_RETENTION - timedelta(days=1)
    state = FeedState(True, {"gone-old": old, "gone-new": NOW - timedelta(days=1), "id-1": old})
    plan = plan_feed(rule(), state, [item(1)], NOW, TZ)
    assert set(plan.state.seen) == {"gone-new", "id-1"}
    assert plan.changed


def test_seen_keys_stay_bounded_by_the_feed_length_keeping_the_listed_ones() -> None:
    # a feed of 20 items that replaces its whole listing every poll, for 40 polls
    state = FeedState()
    for poll in range(40):
        listing = [item(poll * 20 + i) for i in range(20)]
        plan = plan_feed(rule(), state, listing, NOW + timedelta(minutes=poll), TZ)
        state = plan.state
        assert {i.key for i in listing} <= set(state.seen)
        assert len(state.seen) <= max(SEEN_AT_LEAST, SEEN_PER_ITEM * 20)
    assert len(state.seen) == SEEN_PER_ITEM * 20
    # the newest keys no longer listed are those kept: the oldest went first
    assert "id-799" in state.seen and "id-0" not in state.seen
    assert min(state.seen.values()) == NOW + timedelta(minutes=30)


def test_an_empty_listing_forgets_nothing_of_a_long_feed() -> None:
    seen = {f"id-{n}": NOW - timedelta(days=1, minutes=n) for n in range(SEEN_AT_LEAST * 3)}
    plan = plan_feed(rule(), FeedState(True, seen), [], NOW, TZ)
    assert plan.state.seen == seen and not plan.changed


def test_a_first_poll_without_backfill_matches_nothing() -> None:
    class Counting(Matcher):
        calls = 0

        def matches(self, title: str, summary: str) -> tuple[str, ...] | None:
            Counting.calls += 1
            return super().matches(title, summary)

    matcher = Matcher.build(["cybercrime"], [])
    counting = Counting(matcher.match, matcher.exclude)
    first = plan_feed(rule(matcher=counting), FeedState(), [item(1), item(2)], NOW, TZ)
    assert Counting.calls == 0 and first.alerts == ()
    plan_feed(rule(matcher=counting), first.state, [item(3), item(1), item(2)], NOW, TZ)
    assert Counting.calls == 1


HEALTH = HealthRule("hrw", "Human Rights Watch", "feed", 3, (ChannelName("ops"),))


def test_health_alerts_once_when_failing_and_once_on_recovery() -> None:
    h = SourceHealth()
    sent = []
    for _ in range(6):
        plan = plan_health(HEALTH, h, "HTTP 503 Service Unavailable", NOW)
        h = plan.health
        sent.extend(plan.alerts)
    assert len(sent) == 1
    assert sent[0].kind == "source-health" and sent[0].channels == ("ops",)
    assert "HTTP 503" in sent[0].text and "6" not in sent[0].title
    recovered = plan_health(HEALTH, h, None, NOW)
    assert len(recovered.alerts) == 1 and "recovered" in recovered.alerts[0].title
    assert recovered.health.failures == 0 and not recovered.health.alerted
    quiet = plan_health(HEALTH, recovered.health, None, NOW)
    assert quiet.alerts == () and not quiet.changed


def test_short_failures_do_not_alert() -> None:
    h = plan_health(HEALTH, SourceHealth(), "timeout", NOW).health
    h = plan_health(HEALTH, h, "timeout", NOW).health
    plan = plan_health(HEALTH, h, None, NOW)
    assert plan.alerts == () and plan.changed  # the failure count is reset and kept


def test_backoff_grows_to_a_cap() -> None:
    every = timedelta(minutes=15)
    cap = timedelta(hours=6)
    delays = [next_poll_delay(every, n, cap) for n in range(0, 8)]
    assert delays[0] == every and delays[1] == every and delays[2] == 2 * every
    assert delays[-1] == cap
    assert all(a <= b for a, b in itertools.pairwise(delays))
