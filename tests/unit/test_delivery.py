"""The outbox: order per channel, retries, permanent failures, reconciliation after a crash."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot import delivery
from bot.clock import FixedClock
from bot.delivery import Outbox, retry_delay
from bot.domain.model import Alert, AlertId, ChannelName, Delivery
from bot.errors import DeliveryError, LeaseLost
from bot.metrics import Metrics
from bot.store.base import Changes, DeliveryUpdate
from bot.store.runner import AsyncStore
from bot.store.tinydb_store import TinyDBStore
from bot.transports.base import Capabilities, CommandHandler

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


class FakeTransport:
    name = "fake"
    capabilities = Capabilities(max_text=1000, rich=False)

    def __init__(self) -> None:
        self.posted: list[tuple[str, str]] = []
        self.fail: dict[str, list[DeliveryError]] = {}
        self.gates: dict[str, asyncio.Event] = {}
        self.platform_has: set[str] = set()
        self.posted_event = asyncio.Event()
        self.at_gate = asyncio.Event()

    async def start(self, on_command: CommandHandler) -> None:
        pass

    async def stop(self) -> None:
        pass

    def problem(self) -> str | None:
        return None

    def reaches(self, channel: ChannelName) -> bool:
        return channel != "nowhere"

    async def send(self, channel: ChannelName, alert: Alert, key: str) -> None:
        gate = self.gates.get(channel)
        if gate is not None:
            self.at_gate.set()  # the post is under way (marked "sending"), held by the platform
            await gate.wait()
        errors = self.fail.get(channel)
        if errors:
            raise errors.pop(0)
        self.posted.append((channel, alert.id))
        self.platform_has.add(key)
        self.posted_event.set()

    async def was_delivered(self, channel: ChannelName, alert: Alert, key: str) -> bool:
        return key in self.platform_has


def alert(n: int, *channels: str) -> Alert:
    return Alert(
        "news",
        AlertId(f"a{n}"),
        tuple(ChannelName(c) for c in channels),
        "src",
        f"T{n}",
        None,
        f"text {n}",
        NOW,
    )


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[AsyncStore, FakeTransport, FixedClock]]:
    store = AsyncStore(TinyDBStore(tmp_path / "state.json"))
    yield store, FakeTransport(), FixedClock(NOW)


async def queue(store: AsyncStore, outbox: Outbox, *alerts: Alert) -> list[Delivery]:
    rows = outbox.rows_for(alerts)
    await store.commit(Changes(enqueue=rows))
    return rows


async def test_rows_per_channel_in_order(
    setup: tuple[AsyncStore, FakeTransport, FixedClock],
) -> None:
    store, fake, clock = setup
    outbox = Outbox(store, {"fake": fake}, clock)
    rows = await queue(
        store, outbox, alert(1, "alerts", "ops"), alert(2, "alerts"), alert(3, "nowhere")
    )
    assert [(r.alert.id, r.channel) for r in rows] == [
        ("a1", "alerts"),
        ("a1", "ops"),
        ("a2", "alerts"),
    ]
    assert outbox.rows_for([alert(1, "alerts")]) == []  # already queued: never twice
    report = await outbox.deliver_due()
    assert report.sent == 3
    assert [p for p in fake.posted if p[0] == "alerts"] == [("alerts", "a1"), ("alerts", "a2")]
    assert await outbox.deliver_due() == type(report)()  # nothing left
    await store.close()


async def test_transient_failure_keeps_order_and_retries_later(
    setup: tuple[AsyncStore, FakeTransport, FixedClock],
) -> None:
    store, fake, clock = setup
    outbox = Outbox(store, {"fake": fake}, clock)
    await queue(store, outbox, alert(1, "alerts"), alert(2, "alerts"), alert(3, "ops"))
    fake.fail["alerts"] = [DeliveryError("HTTP 503")]
    report = await outbox.deliver_due()
    assert (report.sent, report.retrying) == (1, 1)
    assert fake.posted == [("ops", "a3")]  # the other channel is not held up
    first, _ = await store.deliveries()
    assert first.attempts == 1 and first.next_try is not None and first.next_try > NOW
    assert await outbox.deliver_due() == type(report)()  # not due yet
    clock.set(NOW + timedelta(minutes=1))
    await outbox.deliver_due()
    assert fake.posted[1:] == [("alerts", "a1"), ("alerts", "a2")]
    await store.close()


async def test_permanent_failure_is_kept_reported_and_retried_after_restart(
    setup: tuple[AsyncStore, FakeTransport, FixedClock],
) -> None:
    store, fake, clock = setup
    reported: list[tuple[str, str]] = []

    async def hook(row: Delivery, err: DeliveryError) -> None:
        reported.append((row.channel, str(err)))

    outbox = Outbox(store, {"fake": fake}, clock, on_permanent=hook)
    await queue(store, outbox, alert(1, "alerts"))
    fake.fail["alerts"] = [DeliveryError("channel_not_found", permanent=True)]
    report = await outbox.deliver_due()
    assert report.failed == 1 and reported == [("alerts", "delivery failed: channel_not_found")]
    [failed] = await store.deliveries(("failed",))
    assert failed.last_error == "delivery failed: channel_not_found"
    assert await outbox.retry_failed() == 1
    await outbox.deliver_due()
    assert fake.posted == [("alerts", "a1")]
    await store.close()


async def test_interrupted_send_is_reconciled_not_repeated(
    setup: tuple[AsyncStore, FakeTransport, FixedClock],
) -> None:
    store, fake, clock = setup
    outbox = Outbox(store, {"fake": fake}, clock)
    [row] = await queue(store, outbox, alert(1, "alerts"))
    # a crash after the platform accepted the post, before "sent" was recorded
    await store.commit(Changes(deliveries=[DeliveryUpdate(row.key, "sending", NOW)]))
    fake.platform_has.add(row.key)
    report = await outbox.deliver_due()
    assert report.sent == 1 and fake.posted == []
    assert await store.deliveries() == []
    # and one that never reached the platform is sent
    [row2] = await queue(store, outbox, alert(2, "alerts"))
    await store.commit(Changes(deliveries=[DeliveryUpdate(row2.key, "sending", NOW)]))
    await outbox.deliver_due()
    assert fake.posted == [("alerts", "a2")]
    await store.close()


async def test_a_blocked_channel_does_not_delay_others(
    setup: tuple[AsyncStore, FakeTransport, FixedClock],
) -> None:
    store, fake, clock = setup
    outbox = Outbox(store, {"fake": fake}, clock)
    await queue(store, outbox, alert(1, "alerts"), alert(2, "ops"))
    fake.gates["alerts"] = asyncio.Event()  # e.g. waiting out a rate limit
    delivering = asyncio.create_task(outbox.deliver_due())
    await fake.posted_event.wait()
    assert fake.posted == [("ops", "a2")]
    fake.gates["alerts"].set()
    await delivering
    assert fake.posted == [("ops", "a2"), ("alerts", "a1")]
    await store.close()


async def test_a_failed_post_that_reached_the_platform_is_not_posted_again(
    setup: tuple[AsyncStore, FakeTransport, FixedClock],
) -> None:
    store, fake, clock = setup
    outbox = Outbox(store, {"fake": fake}, clock)
    [row] = await queue(store, outbox, alert(1, "alerts"))
    fake.fail["alerts"] = [DeliveryError("connection reset after sending")]
    await outbox.deliver_due()
    fake.platform_has.add(row.key)  # the platform had taken it after all
    clock.set(NOW + timedelta(minutes=5))
    restarted = Outbox(store, {"fake": fake}, clock)  # as after a restart
    report = await restarted.deliver_due()
    assert report.sent == 1 and fake.posted == []
    await store.close()


def test_retry_delay_doubles_from_five_seconds_up_to_thirty_minutes_with_jitter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[tuple[float, float]] = []

    def middle(low: float, high: float) -> float:
        asked.append((low, high))
        return (low + high) / 2

    monkeypatch.setattr(delivery.random, "uniform", middle)
    delays = [retry_delay(n).total_seconds() for n in (0, 1, 2, 3, 9, 10, 100)]
    assert delays == pytest.approx([5, 5, 10, 20, 1280, 1800, 1800])
    assert set(asked) == {(0.8, 1.2)}  # up to a fifth earlier or later
    monkeypatch.setattr(delivery.random, "uniform", lambda low, high: low)
    assert retry_delay(2) == timedelta(seconds=8)
    monkeypatch.setattr(delivery.random, "uniform", lambda low, high: high)
    assert retry_delay(2) == timedelta(seconds=12)


class Recording(FakeTransport):
    """Also records what the outbox asks the platform about."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, str, str]] = []
        self.texts: list[str] = []

    async def send(self, channel: ChannelName, alert: Alert, key: str) -> None:
        await super().send(channel, alert, key)
        self.texts.append(alert.text)

    async def was_delivered(self, channel: ChannelName, alert: Alert, key: str) -> bool:
        self.asked.append((channel, alert.id, key))
        return await super().was_delivered(channel, alert, key)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_reports_and_metrics_count_every_row(tmp_path: Path) -> None:
    store = AsyncStore(TinyDBStore(tmp_path / "state.json"))
    fake, clock, metrics = Recording(), FixedClock(NOW), Metrics()
    outbox = Outbox(store, {"fake": fake}, clock, metrics)
    rows = await queue(
        store,
        outbox,
        alert(1, "alerts", "ops", "news", "later"),
        alert(2, "ops"),
        alert(3, "alerts"),
    )
    fake.fail["alerts"] = [DeliveryError("HTTP 503")]
    fake.fail["ops"] = [DeliveryError("HTTP 503")]
    fake.fail["news"] = [DeliveryError("channel_not_found", permanent=True)]
    fake.fail["later"] = [DeliveryError("is_archived", permanent=True)]
    report = await outbox.deliver_due()
    assert (report.sent, report.retrying, report.failed) == (0, 2, 2)
    assert fake.asked == []  # rows sent for the first time: nothing to ask the platform
    assert (
        sample(metrics, "treatybot_alerts_failed_total", transport="fake", permanent="false") == 2
    )
    assert sample(metrics, "treatybot_alerts_failed_total", transport="fake", permanent="true") == 2
    failed = {r.channel: r for r in await store.deliveries(("failed",))}
    assert set(failed) == {"news", "later"}
    assert failed["news"].attempts == 1 and failed["news"].last_error == (
        "delivery failed: channel_not_found"
    )
    waiting = {r.key: r for r in await store.deliveries(("sending",))}
    retried = waiting[rows[0].key]
    assert retried.attempts == 1 and retried.last_error == "delivery failed: HTTP 503"
    assert retried.next_try is not None
    assert timedelta(seconds=4) <= retried.next_try - NOW <= timedelta(seconds=6)
    assert waiting[rows[5].key].attempts == 0  # a3 waits behind a1, untried

    # rows marked "sending" are checked with the platform first, each in its own channel
    fake.platform_has.add(rows[0].key)  # a1 in alerts did arrive
    clock.set(NOW + timedelta(minutes=1))
    report = await outbox.deliver_due()
    assert (report.sent, report.retrying, report.failed) == (4, 0, 0)
    assert sorted(fake.asked) == [
        ("alerts", "a1", rows[0].key),
        ("alerts", "a3", rows[5].key),
        ("ops", "a1", rows[1].key),
        ("ops", "a2", rows[4].key),
    ]
    assert sorted(fake.posted) == [("alerts", "a3"), ("ops", "a1"), ("ops", "a2")]
    assert sample(metrics, "treatybot_alerts_sent_total", transport="fake") == 3
    assert sample(metrics, "treatybot_delivery_latency_seconds_count", transport="fake") == 3
    await store.close()


async def test_rows_after_an_interrupted_or_refused_one_still_go(tmp_path: Path) -> None:
    store = AsyncStore(TinyDBStore(tmp_path / "state.json"))
    fake, clock = Recording(), FixedClock(NOW)
    outbox = Outbox(store, {"fake": fake}, clock)
    first, second, third = await queue(
        store, outbox, alert(1, "alerts"), alert(2, "alerts"), alert(3, "alerts")
    )
    assert outbox.depth == 0
    interrupted = [DeliveryUpdate(r.key, "sending", NOW) for r in (first, second)]
    await store.commit(Changes(deliveries=interrupted))
    fake.platform_has.update({first.key, second.key})
    fake.fail["alerts"] = [DeliveryError("msg_too_long", permanent=True)]
    report = await outbox.deliver_due()
    # both interrupted rows were on the platform already; the third is refused for good
    assert (report.sent, report.failed) == (2, 1)
    assert [(r.key, r.sent_at) for r in await store.deliveries(("sent",))] == [
        (first.key, NOW),
        (second.key, NOW),
    ]
    fourth, fifth, _ = await queue(
        store, outbox, alert(4, "alerts"), alert(5, "alerts"), alert(6, "alerts")
    )
    fake.fail["alerts"] = [DeliveryError("msg_too_long", permanent=True)] * 2
    report = await outbox.deliver_due()
    assert (report.sent, report.failed) == (1, 2)
    assert fake.posted == [("alerts", "a6")]  # a refused row does not hold up the next
    failed = [r.key for r in await store.deliveries(("failed",))]
    assert failed == [third.key, fourth.key, fifth.key]
    await store.close()


class Elsewhere(FakeTransport):
    """A second platform that reaches only some channels."""

    name = "elsewhere"

    def __init__(self, *channels: str) -> None:
        super().__init__()
        self.channels = set(channels)

    def reaches(self, channel: ChannelName) -> bool:
        return channel in self.channels


async def test_each_platform_that_reaches_a_channel_gets_its_row(tmp_path: Path) -> None:
    from bot.domain.follows import Follow, Person

    store = AsyncStore(TinyDBStore(tmp_path / "state.json"))
    first, second = Elsewhere("ops"), Elsewhere("alerts", "ops", "dm:U1", "dm:U2")
    outbox = Outbox(store, {"first": first, "second": second}, FixedClock(NOW))
    rows = await queue(store, outbox, alert(1, "alerts", "nowhere"))
    assert [r.key for r in rows] == ["a1|alerts|second"]
    assert outbox.warned_unreachable == {"nowhere"}  # said once, for that channel only
    again = outbox.rows_for([alert(1, "alerts", "ops")])  # a1 in alerts is queued already
    assert [r.key for r in again] == ["a1|ops|first", "a1|ops|second"]
    await store.commit(Changes(enqueue=again[:1]))
    assert [r.key for r in outbox.rows_for([alert(1, "ops")])] == ["a1|ops|second"]
    follows = {
        Person("gone", "U0"): (Follow("words", "T2"),),  # a platform not running
        Person("second", "U1"): (Follow("words", "T2"),),
        Person("second", "U2"): (Follow("words", "T2"),),
    }
    people = outbox.rows_for_people([alert(2, "alerts"), alert(2, "alerts")], follows)
    assert [r.key for r in people] == ["a2|dm:U1|second", "a2|dm:U2|second"]
    await store.close()


async def test_a_row_waits_for_its_time_and_the_depth_counts_what_is_left(
    tmp_path: Path,
) -> None:
    store = AsyncStore(TinyDBStore(tmp_path / "state.json"))
    fake, clock, metrics = Recording(), FixedClock(NOW), Metrics()
    outbox = Outbox(store, {"fake": fake}, clock, metrics)
    first, second, third = await queue(
        store, outbox, alert(1, "alerts"), alert(2, "alerts"), alert(3, "ops")
    )
    retry = DeliveryUpdate(first.key, "pending", NOW, "HTTP 503", NOW + timedelta(seconds=30))
    await store.commit(Changes(deliveries=[retry]))
    report = await outbox.deliver_due()
    # alerts waits behind its first row; ops is not held up by it
    assert (report.sent, outbox.depth) == (1, 2) and fake.posted == [("ops", "a3")]
    assert sample(metrics, "treatybot_outbox_depth") == 2
    clock.set(NOW + timedelta(seconds=30))  # due at exactly this time
    fake.fail["alerts"] = [DeliveryError("HTTP 503"), DeliveryError("HTTP 503")]
    await outbox.deliver_due()
    [retried, _] = await store.deliveries()
    assert retried.attempts == 1
    assert timedelta(seconds=4) <= retried.next_try - clock.now() <= timedelta(seconds=6)  # type: ignore[operator]
    clock.set(clock.now() + timedelta(seconds=6))
    await outbox.deliver_due()
    [retried, _] = await store.deliveries()
    assert retried.attempts == 2  # the second failure waits about twice as long
    assert timedelta(seconds=8) <= retried.next_try - clock.now() <= timedelta(seconds=12)  # type: ignore[operator]
    clock.set(clock.now() + timedelta(seconds=12))
    report = await outbox.deliver_due()
    assert (report.sent, outbox.depth) == (2, 0)
    sent = {r.key: r for r in await store.deliveries(("sent",))}
    assert set(sent) == {first.key, second.key, third.key}
    # latency: a3 at once, a1 and a2 48 s after their alert
    assert sample(metrics, "treatybot_delivery_latency_seconds_sum", transport="fake") == 96
    await store.close()


async def test_held_rows_go_out_grouped_at_the_earliest_release(tmp_path: Path) -> None:
    from datetime import time

    from bot.domain.holding import ChannelRules, DigestRule, QuietRule

    vienna = ZoneInfo("Europe/Vienna")
    rules = {
        ChannelName("alerts"): ChannelRules(
            digest=DigestRule(time(12, 0), frozenset(range(7)), vienna)
        ),
        ChannelName("ops"): ChannelRules(quiet=QuietRule(time(9, 0), time(11, 0), vienna)),
    }
    store = AsyncStore(TinyDBStore(tmp_path / "state.json"))
    fake, clock = Recording(), FixedClock(NOW)  # 10:00 in Vienna
    outbox = Outbox(store, {"fake": fake}, clock, rules=lambda: rules)
    rows = await queue(store, outbox, alert(1, "alerts", "ops"), alert(2, "alerts", "ops"))
    assert {r.state for r in rows} == {"held"}
    report = await outbox.deliver_due()
    assert report.next_release == datetime(2026, 11, 28, 11, 0, tzinfo=vienna)  # the earliest
    assert fake.posted == []
    clock.set(datetime(2026, 11, 28, 11, 0, tzinfo=vienna))
    report = await outbox.deliver_due()
    assert report.next_release == datetime(2026, 11, 28, 12, 0, tzinfo=vienna)
    assert len(fake.posted) == 1 and fake.posted[0][0] == "ops"
    clock.set(datetime(2026, 11, 28, 12, 0, tzinfo=vienna))
    await outbox.deliver_due()
    assert [c for c, _ in fake.posted] == ["ops", "alerts"]
    grouped = await store.deliveries(("grouped",))
    assert sorted(r.key for r in grouped) == sorted(r.key for r in rows)
    assert "(Sat 28 Nov 2026, 09:00 UTC)" in fake.texts[-1]  # times in the default zone
    await store.close()


# -- replicas: channels claimed under leases -------------------------------------------------


class FencedStore(TinyDBStore):
    """A store that notes the fences of each commit and refuses those of ``revoked`` leases,
    as a database shared by replicas does once a lease moved on."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.fences: list[dict[str, int]] = []
        self.revoked: set[str] = set()

    def commit(self, changes: Changes) -> None:
        lost = frozenset(changes.fences) & self.revoked
        if lost:
            raise LeaseLost(lost)
        if changes:
            self.fences.append(dict(changes.fences))
        super().commit(changes)


class Claims:
    """This replica's claims: the channels it may deliver, each under a lease of its own."""

    def __init__(self, *channels: str) -> None:
        self.channels = {("fake", c): {f"out:fake:{c}": n + 1} for n, c in enumerate(channels)}
        self.is_valid = True
        self.planner: dict[str, int] | None = None
        self.lost_names: list[str] = []
        self.asked: list[list[tuple[str, str]]] = []

    def valid(self) -> bool:
        return self.is_valid

    async def take_channels(
        self, groups: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], dict[str, int]]:
        self.asked.append(sorted(groups))
        return {g: f for g, f in self.channels.items() if g in groups}

    def planner_fences(self) -> dict[str, int] | None:
        return self.planner

    def lost(self, names: Iterable[str]) -> None:
        self.lost_names.extend(sorted(names))


async def test_a_replica_delivers_only_the_channels_it_holds_under_their_leases(
    tmp_path: Path,
) -> None:
    raw = FencedStore(tmp_path / "state.json")
    store, fake, claims = AsyncStore(raw), FakeTransport(), Claims("alerts")
    outbox = Outbox(store, {"fake": fake}, FixedClock(NOW), claims=claims)
    await queue(store, outbox, alert(1, "alerts", "ops"), alert(2, "alerts"))
    raw.fences.clear()
    report = await outbox.deliver_due()
    assert claims.asked == [[("fake", "alerts"), ("fake", "ops")]]
    assert report.sent == 2 and fake.posted == [("alerts", "a1"), ("alerts", "a2")]
    # "sending" then "sent", both under the channel's lease
    assert raw.fences == [{"out:fake:alerts": 1}, {"out:fake:alerts": 1}]
    # the channel another replica holds is left to it
    [left] = await store.deliveries()
    assert (left.channel, left.state) == ("ops", "pending")
    await store.close()


async def test_a_channel_whose_lease_moved_on_is_not_sent_to(tmp_path: Path) -> None:
    raw = FencedStore(tmp_path / "state.json")
    store, fake, claims = AsyncStore(raw), FakeTransport(), Claims("alerts")
    outbox = Outbox(store, {"fake": fake}, FixedClock(NOW), claims=claims)
    await queue(store, outbox, alert(1, "alerts"))
    raw.revoked.add("out:fake:alerts")  # refused by the database: another holds it now
    report = await outbox.deliver_due()
    assert report.sent == 0 and fake.posted == []
    assert claims.lost_names == ["out:fake:alerts"]
    [row] = await store.deliveries()
    assert row.state == "pending"  # its next holder sends it
    await store.close()


async def test_a_replica_that_may_have_lost_its_leases_stops_sending(tmp_path: Path) -> None:
    raw = FencedStore(tmp_path / "state.json")
    store, fake, claims = AsyncStore(raw), FakeTransport(), Claims("alerts")
    outbox = Outbox(store, {"fake": fake}, FixedClock(NOW), claims=claims)
    await queue(store, outbox, alert(1, "alerts"), alert(2, "alerts"))
    fake.gates["alerts"] = asyncio.Event()
    delivering = asyncio.create_task(outbox.deliver_due())
    await fake.at_gate.wait()
    claims.is_valid = False  # no heartbeat for too long: the leases may be another's
    fake.gates["alerts"].set()
    report = await delivering
    assert fake.posted == [("alerts", "a1")] and report.sent == 1
    rows = await store.deliveries()
    assert [(r.alert.id, r.state) for r in rows] == [("a2", "sending")]  # checked before a resend
    await store.close()


async def test_a_refused_sent_mark_leaves_the_rows_to_be_checked(tmp_path: Path) -> None:
    raw = FencedStore(tmp_path / "state.json")
    store, fake, claims = AsyncStore(raw), FakeTransport(), Claims("alerts")
    outbox = Outbox(store, {"fake": fake}, FixedClock(NOW), claims=claims)
    await queue(store, outbox, alert(1, "alerts"))
    fake.gates["alerts"] = asyncio.Event()
    delivering = asyncio.create_task(outbox.deliver_due())
    await fake.at_gate.wait()
    raw.revoked.add("out:fake:alerts")  # the lease moves on while the post is under way
    fake.gates["alerts"].set()
    await delivering
    assert fake.posted == [("alerts", "a1")] and claims.lost_names == ["out:fake:alerts"]
    [row] = await store.deliveries()
    assert row.state == "sending"  # the next holder asks the platform, which has it
    await store.close()


async def test_only_the_planning_replica_releases_held_alerts(tmp_path: Path) -> None:
    raw = FencedStore(tmp_path / "state.json")
    store, claims = AsyncStore(raw), Claims("alerts")
    outbox = Outbox(store, {"fake": FakeTransport()}, FixedClock(NOW), claims=claims)
    [row] = outbox.rows_for([alert(1, "alerts")])
    held = Delivery(row.key, row.seq, row.alert, row.channel, row.transport, "held")
    await store.commit(Changes(enqueue=[held]))
    assert await outbox.release_held() is None
    assert [r.state for r in await store.deliveries(("held",))] == ["held"]
    claims.planner = {"job:planner": 7}
    raw.fences.clear()
    await outbox.release_held()
    assert await store.deliveries(("held",)) == []
    assert raw.fences == [{"job:planner": 7}]
    await store.close()
