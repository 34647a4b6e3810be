"""The pure decisions: which items are new, what is announced, what is remembered."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from bot.domain.matching import Matcher
from bot.domain.model import Alert, ChannelName, FeedItem, FeedState, SourceHealth, SourceId
from bot.domain.planner import (
    GROUP_MAX_CHARS,
    GROUP_MAX_ITEMS,
    REISSUE_GRACE,
    SEEN_AT_LEAST,
    SEEN_PER_ITEM,
    SEEN_RETENTION,
    FeedRule,
    HealthRule,
    fingerprint,
    next_poll_delay,
    plan_feed,
    plan_health,
)
from bot.domain.text import Bullets, render_plain

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
    assert plan.changed and plan.new_items == 0  # what a feed lists at first is not new


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
    assert plan.new_items == 2  # matching or not: the feed changed
    again = plan_feed(rule(), plan.state, [item(2), item(1), item(3, "unrelated")], NOW, TZ)
    assert again.alerts == () and not again.changed and again.new_items == 0


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


def test_more_than_max_new_items_become_one_message_listing_every_item() -> None:
    state = plan_feed(rule(), FeedState(), [], NOW, TZ).state
    plan = plan_feed(rule(max_new_items=3), state, [item(n) for n in range(10)], NOW, TZ)
    assert len(plan.alerts) == 1
    assert plan.alerts[0].title == "Human Rights Watch: 10 new items"
    assert listed(plan.alerts) == [f"https://e.org/{n}" for n in reversed(range(10))]
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


# ------------------------------------------------------------------ bursts and re-issues

LAST = NOW - timedelta(minutes=15)  # the feed's last successful poll


def dated(
    n: int, when: datetime | None, title: str = "cybercrime news", prefix: str = "id"
) -> FeedItem:
    return FeedItem(f"{prefix}-{n}", f"{title} {n}", f"https://e.org/{n}", "summary", when)


def listed(alerts: tuple[Alert, ...] | list[Alert]) -> list[str]:
    """The links that grouped alerts list, in order."""
    links: list[str] = []
    for alert in alerts:
        for block in alert.body:
            if isinstance(block, Bullets):
                links.extend(str(entry[0].href) for entry in block.items)
    return links


def known_feed(count: int = 20) -> FeedState:
    """A feed polled before: it listed ``count`` items, now all seen (with fingerprints)."""
    return plan_feed(rule(), FeedState(), [earlier(n) for n in range(count)], LAST, TZ).state


def earlier(n: int) -> FeedItem:
    """Item ``n`` of ``known_feed``."""
    return FeedItem(
        f"old-{n}",
        f"cybercrime background {n}",
        f"https://e.org/old/{n}",
        "",
        LAST - timedelta(days=3, hours=n),
    )


def test_a_burst_of_30_new_items_is_posted_whole_in_grouped_parts() -> None:
    burst = [dated(100 + n, LAST + timedelta(minutes=n % 14)) for n in range(30)]
    plan = plan_feed(rule(), known_feed(), burst, NOW, TZ, last_success=LAST)

    assert [a.id.split(":")[0] for a in plan.alerts] == ["news-group", "news-group"]
    assert [a.title for a in plan.alerts] == [
        "Human Rights Watch: 30 new items (part 1 of 2)",
        "Human Rights Watch: 30 new items (part 2 of 2)",
    ]
    oldest_first = sorted(burst, key=lambda i: (i.published, -burst.index(i)))
    assert listed(plan.alerts) == [i.link for i in oldest_first]  # every item, once, in order
    for alert in plan.alerts:
        assert len(listed([alert])) <= GROUP_MAX_ITEMS
        assert len(alert.text) <= GROUP_MAX_CHARS and alert.text == render_plain(alert.body)
        assert alert.kind == "news" and alert.channels == ("alerts",)
    # as few parts as the bounds allow, of even sizes
    assert "Part 1 of 2: items 1 to 15, oldest first." in plan.alerts[0].text
    assert "Part 2 of 2: items 16 to 30, oldest first." in plan.alerts[1].text
    assert len(plan.news) == 30
    replay = plan_feed(rule(), known_feed(), burst, NOW, TZ, last_success=LAST)
    assert [a.id for a in replay.alerts] == [a.id for a in plan.alerts]
    assert len({a.id for a in plan.alerts}) == 2


def test_grouped_parts_stay_within_the_character_bound() -> None:
    long = "cybercrime " + "very long headline words " * 20
    burst = [
        FeedItem(
            f"k{n}", f"{long}{n}", f"https://e.org/{'x' * 150}/{n}", "", LAST + timedelta(seconds=n)
        )
        for n in range(40)
    ]
    plan = plan_feed(rule(), known_feed(), burst, NOW, TZ, last_success=LAST)
    assert len(plan.alerts) > 40 // GROUP_MAX_ITEMS  # the characters, not the count, bound it
    assert all(len(a.text) <= GROUP_MAX_CHARS for a in plan.alerts)
    assert sorted(listed(plan.alerts)) == sorted(str(i.link) for i in burst)
    assert f"(part {len(plan.alerts)} of {len(plan.alerts)})" in plan.alerts[-1].title


def test_a_hostile_title_in_a_group_stays_plain_text() -> None:
    hostile = [
        dated(n, LAST + timedelta(minutes=1), title="<!channel> @room *cybercrime*")
        for n in range(12)
    ]
    plan = plan_feed(rule(), known_feed(), hostile, NOW, TZ, last_success=LAST)
    [alert] = plan.alerts
    [bullets] = [b for b in alert.body if isinstance(b, Bullets)]
    title = bullets.items[0][0]
    assert title.text == "<!channel> @room *cybercrime* 11" and title.style == "plain"
    assert title.href == "https://e.org/11"  # same dates: the document's last is the oldest


def test_a_reissue_of_200_old_items_under_new_ids_is_one_summary() -> None:
    # never seen before under these ids or titles, but dated long before the last poll
    old = [dated(500 + n, LAST - timedelta(days=2, hours=n), prefix="new-id") for n in range(200)]
    plan = plan_feed(rule(), known_feed(), old, NOW, TZ, last_success=LAST)

    [summary] = plan.alerts
    assert summary.id.startswith("news-reissue:hrw:") and summary.kind == "news"
    assert summary.title == "Human Rights Watch re-issued 200 items: not posted again"
    assert summary.text == (
        "Human Rights Watch re-issued 200 items older than its last successful poll "
        "(Sat 28 Nov 2026, 09:45 CET) under new ids. They are not posted again."
    )
    assert plan.news == ()
    assert {i.key for i in old} <= set(plan.state.seen)  # and never posted later
    again = plan_feed(rule(), plan.state, old, NOW + timedelta(minutes=15), TZ, last_success=NOW)
    assert again.alerts == ()


def test_the_same_titles_and_links_under_new_ids_without_dates_are_one_summary() -> None:
    listing = [dated(n, None, prefix="a") for n in range(200)]
    first = plan_feed(rule(), FeedState(), listing, LAST, TZ)
    # the publisher moves to a new system: new ids, no dates, the same stories (one link now
    # with https://www. and a trailing slash, one title in capitals)
    moved = [dated(n, None, prefix="b") for n in range(200)]
    moved[0] = FeedItem("b-0", "CYBERCRIME news 0", "http://www.e.org/0/", "", None)
    plan = plan_feed(rule(), first.state, moved, NOW, TZ, last_success=LAST)

    [summary] = plan.alerts
    assert summary.text == (
        "Human Rights Watch re-issued 200 items already shown (the same title and link) under "
        "new ids. They are not posted again."
    )
    assert plan.news == ()


def test_a_few_new_items_that_repeat_a_title_and_link_are_not_posted_again() -> None:
    state = plan_feed(rule(), FeedState(), [dated(1, LAST)], LAST, TZ).state
    plan = plan_feed(
        rule(), state, [dated(1, NOW, prefix="new"), dated(2, NOW)], NOW, TZ, last_success=LAST
    )
    assert [a.title for a in plan.alerts] == [
        "Human Rights Watch re-issued 1 item: not posted again",
        "cybercrime news 2",
    ]
    assert "1 item that came with them is new: it is posted as usual." in plan.alerts[0].text


def test_genuine_items_that_come_with_a_reissue_are_still_posted() -> None:
    reissued = [dated(n, LAST - timedelta(days=1, minutes=n), prefix="new-id") for n in range(200)]
    genuine = [
        dated(900 + n, LAST + timedelta(minutes=n), title="cybercrime fresh") for n in range(5)
    ]
    plan = plan_feed(rule(), known_feed(), genuine + reissued, NOW, TZ, last_success=LAST)

    summary, *posted = plan.alerts
    assert summary.title == "Human Rights Watch re-issued 200 items: not posted again"
    assert "5 items that came with them are new: they are posted as usual." in summary.text
    assert [a.title for a in posted] == [f"cybercrime fresh {900 + n}" for n in range(5)]
    assert [n.key for n in plan.news] == [f"id-{900 + n}" for n in range(5)]


def test_many_genuine_items_with_a_reissue_are_grouped_after_the_summary() -> None:
    state = known_feed()
    reissued = [replace_key(earlier(n), f"moved-{n}") for n in range(20)]
    older = [dated(600 + n, LAST - timedelta(days=9), prefix="x") for n in range(40)]
    genuine = [
        dated(900 + n, LAST + timedelta(minutes=n), title="cybercrime fresh") for n in range(25)
    ]
    plan = plan_feed(rule(), state, genuine + reissued + older, NOW, TZ, last_success=LAST)

    summary, *groups = plan.alerts
    assert summary.text.startswith(
        "Human Rights Watch re-issued 60 items under new ids: 20 already shown (the same title "
        "and link) and 40 older than its last successful poll (Sat 28 Nov 2026, 09:45 CET)."
    )
    assert listed(groups) == [i.link for i in genuine]


def replace_key(item: FeedItem, key: str) -> FeedItem:
    return FeedItem(key, item.title, item.link, item.summary, item.published)


def test_a_burst_with_a_minority_of_backdated_items_is_posted_whole() -> None:
    backdated = [dated(n, LAST - timedelta(days=1)) for n in range(14)]  # late publications
    fresh = [dated(100 + n, LAST + timedelta(minutes=5)) for n in range(16)]
    plan = plan_feed(rule(), known_feed(), fresh + backdated, NOW, TZ, last_success=LAST)
    assert all(a.id.startswith("news-group:") for a in plan.alerts)
    assert sorted(listed(plan.alerts)) == sorted(str(i.link) for i in fresh + backdated)


def test_a_few_items_dated_before_the_last_poll_are_posted_one_by_one() -> None:
    late = [dated(n, LAST - timedelta(days=1)) for n in range(3)]  # the publisher backdates
    plan = plan_feed(rule(), known_feed(), late, NOW, TZ, last_success=LAST)
    assert [a.title for a in plan.alerts] == [f"cybercrime news {n}" for n in (2, 1, 0)]


def test_the_grace_lets_items_dated_just_before_the_last_poll_through() -> None:
    cached = [dated(n, LAST - REISSUE_GRACE + timedelta(minutes=1)) for n in range(30)]
    plan = plan_feed(rule(), known_feed(), cached, NOW, TZ, last_success=LAST)
    assert sorted(listed(plan.alerts)) == sorted(str(i.link) for i in cached)


def test_a_state_without_fingerprints_uses_dates_and_fills_them_from_the_listing() -> None:
    listing = [dated(n, LAST - timedelta(days=2)) for n in range(20)]
    old_state = FeedState(True, {i.key: LAST for i in listing})  # written before fingerprints
    # the same stories under new ids, undated: nothing tells them apart yet
    undated = [dated(n, None, prefix="b") for n in range(20)]
    plan = plan_feed(rule(), old_state, listing, NOW, TZ, last_success=LAST)
    assert plan.alerts == () and plan.changed  # nothing new; the fingerprints are filled
    assert set(plan.state.fingerprints) == {i.key for i in listing}
    again = plan_feed(rule(), plan.state, undated, NOW, TZ, last_success=NOW)
    assert [a.id.split(":")[0] for a in again.alerts] == ["news-reissue"]
    # a dated re-issue is told by its dates alone, fingerprints or not
    redated = [replace_key(i, f"c-{i.key}") for i in listing]
    by_dates = plan_feed(rule(), old_state, redated, NOW, TZ, last_success=LAST)
    assert [a.id.split(":")[0] for a in by_dates.alerts] == ["news-reissue"]


def test_fingerprints_stay_bounded_like_the_seen_keys() -> None:
    state = FeedState()
    for poll in range(40):
        listing = [dated(poll * 20 + i, None) for i in range(20)]
        state = plan_feed(rule(), state, listing, NOW + timedelta(minutes=poll), TZ).state
        assert set(state.fingerprints) <= set(state.seen)
    assert len(state.fingerprints) == len(state.seen) == SEEN_PER_ITEM * 20


def test_fingerprints_ignore_case_spacing_scheme_www_and_trailing_slash() -> None:
    a = FeedItem("1", "Cybercrime  convention", "https://www.e.org/a/", "", None)
    b = FeedItem("2", "cybercrime convention", "http://E.org/a#top", "", None)
    c = FeedItem("3", "cybercrime convention", "https://e.org/b", "", None)
    assert fingerprint(a) == fingerprint(b) != fingerprint(c)
    assert fingerprint(FeedItem("4", "no link", None, "", None)) is None


def test_backfill_above_max_new_items_is_grouped_too() -> None:
    items = [dated(n, NOW - timedelta(hours=n)) for n in range(30)]
    plan = plan_feed(rule(backfill=15, max_new_items=10), FeedState(), items, NOW, TZ)
    assert listed(plan.alerts) == [f"https://e.org/{n}" for n in reversed(range(15))]
