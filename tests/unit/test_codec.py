"""The state as stored (``bot/store/codec.py``): each kind of record, written as JSON, against
``tests/data/state/<name>.json``, and read back to the same value.

The JSON is what a state file holds: a change here is a change of the file format, which the
next version must still read (and older files must still read, see the last test). After an
intended change, rewrite the expected files and read the diff:

    TREATY_BOT_WRITE_GOLDEN=1 python -m pytest tests/unit/test_codec.py
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from bot.domain.clauses import ClauseSnapshot
from bot.domain.follows import Follow, Person
from bot.domain.model import (
    Alert,
    AlertId,
    ChannelName,
    Delivery,
    FeedState,
    NewsRecord,
    SessionEvent,
    SourceHealth,
    SourceId,
    SourceRecord,
    Validators,
)
from bot.domain.sessions import ReminderState, Snapshot
from bot.domain.text import Bullets, Span, bold, link, para
from bot.domain.treaty import Participant, Statement, TreatySnapshot, TreatyStatus
from bot.store import codec
from bot.store.base import DeliveryUpdate
from tests.unit.test_golden_replies import check

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)

EVENT = SessionEvent(
    key="sessions:close",
    source="sessions",
    title="Close of signature",
    start=NOW + timedelta(days=30),
    end=NOW + timedelta(days=31),
    kind="deadline",
    all_day=True,
    timezone="America/New_York",
    location="UN Headquarters, New York",
    url="https://treaties.un.org/close",
    status="tentative",
    description="Last day to sign.",
    channels=(ChannelName("alerts"), ChannelName("ops")),
    lead_times=(timedelta(days=14), timedelta(0)),
)
PLAIN_EVENT = SessionEvent("cal:x", "cal", "Call", NOW)
ALERT = Alert(
    kind="session-reminder",
    id=AlertId("remind:sessions:close:0:abc"),
    channels=(ChannelName("alerts"),),
    source="sessions",
    title="Deadline starting now: Close of signature",
    url="https://treaties.un.org/close",
    text="plain text",
    at=NOW,
    body=(
        para(bold("Deadline: "), link("Close", "https://treaties.un.org/close")),
        Bullets(((Span("a"), Span("b", "italic")), (Span("c", "code"),))),
    ),
    event_start=EVENT.start,
)
NEWS = NewsRecord(
    SourceId("hrw"),
    "k1",
    "UN cybercrime treaty",
    "https://www.hrw.org/1",
    NOW - timedelta(hours=2),
    NOW,
    ("cybercrime", "treaty"),
)
ROW = Delivery("remind:x|alerts|slack", 7, ALERT, ChannelName("alerts"), "slack")
HELD = replace(
    ROW, key="remind:x|ops|slack", state="held", next_try=NOW, held_for="quiet", attempts=2
)
SOURCE = SourceRecord(
    "hrw",
    Validators('"etag"', "Sat, 28 Nov 2026 08:00:00 GMT", "abc"),
    FeedState(True, {"k1": NOW, "k2": NOW - timedelta(days=1)}, {"k1": "fp1"}),
    SourceHealth(
        failures=2,
        last_success=NOW - timedelta(days=1),
        last_error="HTTP 503",
        last_error_at=NOW,
        failing_since=NOW - timedelta(hours=1),
        alerted=True,
        not_before=NOW + timedelta(minutes=5),
    ),
)
ANN = Person("slack", "U0ANN")
FOLLOWS = (Follow("clause", "art-24", "24"), Follow("state", "Türkiye"), Follow("words", "a b"))

#: name -> (value, to_json, from_json)
CASES: dict[str, tuple[Any, Callable[[Any], Any], Callable[[Any], Any]]] = {
    "alert": (ALERT, codec.alert_to_json, codec.alert_from_json),
    "alert-plain": (
        replace(ALERT, event_start=None, url=None, body=()),
        codec.alert_to_json,
        codec.alert_from_json,
    ),
    "delivery": (ROW, codec.delivery_to_json, codec.delivery_from_json),
    "delivery-held": (HELD, codec.delivery_to_json, codec.delivery_from_json),
    "source": (SOURCE, codec.source_to_json, codec.source_from_json),
    "news": (NEWS, codec.news_to_json, codec.news_from_json),
    "event": (EVENT, codec.event_to_json, codec.event_from_json),
    "event-plain": (PLAIN_EVENT, codec.event_to_json, codec.event_from_json),
    "snapshot": (
        Snapshot(
            True,
            {EVENT.key: EVENT},
            {EVENT.key: NOW - timedelta(days=2)},
            {EVENT.key: 3},
            {EVENT.key: NOW - timedelta(days=1)},
        ),
        codec.snapshot_to_json,
        codec.snapshot_from_json,
    ),
    "snapshot-unchanged": (
        Snapshot(True, {PLAIN_EVENT.key: PLAIN_EVENT}, {PLAIN_EVENT.key: NOW}),
        codec.snapshot_to_json,
        codec.snapshot_from_json,
    ),
    "reminders": (
        ReminderState({EVENT.key: {1209600: "2026-12-28T09:00:00+00:00", 0: "x"}, "k#ops": {}}),
        codec.reminders_to_json,
        codec.reminders_from_json,
    ),
    "clauses": (
        ClauseSnapshot(True, {"art-4": "contested", "art-24": "open"}),
        codec.clauses_to_json,
        codec.clauses_from_json,
    ),
    "treaty": (
        TreatySnapshot(
            True,
            TreatyStatus(
                (
                    Participant("Türkiye", date(2026, 10, 25)),
                    Participant("Viet Nam", date(2026, 10, 25), date(2026, 11, 2), "ratification"),
                ),
                (Statement("Viet Nam", "declaration", "In accordance with article 47…"),),
            ),
        ),
        codec.treaty_to_json,
        codec.treaty_from_json,
    ),
    "follows": (
        (ANN, FOLLOWS),
        lambda pair: codec.follows_to_json(*pair),
        codec.follows_from_json,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_stored_form_is_stable_and_reads_back(name: str) -> None:
    value, to_json, from_json = CASES[name]
    stored = to_json(value)
    text = json.dumps(stored, indent=1, ensure_ascii=False, sort_keys=True) + "\n"
    check(name, text, "state", ".json")
    assert from_json(json.loads(text)) == value


def test_seen_keys_and_their_fingerprints_in_one_object() -> None:
    seen = {"a": NOW, "b": NOW - timedelta(days=1), "c": NOW}
    doc = codec.seen_to_json(seen, {"a": "fp-a", "c": "fp-c"})
    assert doc == {
        "a": NOW.isoformat(),
        "b": (NOW - timedelta(days=1)).isoformat(),
        "c": NOW.isoformat(),
        codec.FINGERPRINTS: ["fp-a", "", "fp-c"],
    }
    back = json.loads(json.dumps(doc))
    assert codec.seen_from_json(back) == seen
    assert codec.fingerprints_from_json(back) == {"a": "fp-a", "c": "fp-c"}
    # without fingerprints, the object is the keys alone (as a state written before them)
    assert (
        codec.seen_to_json(seen, {})
        == codec.seen_to_json(seen)
        == {
            "a": NOW.isoformat(),
            "b": (NOW - timedelta(days=1)).isoformat(),
            "c": NOW.isoformat(),
        }
    )
    assert codec.fingerprints_from_json({"a": NOW.isoformat(), codec.FINGERPRINTS: []}) == {}


def test_an_outbox_row_after_a_change() -> None:
    stored = codec.delivery_to_json(replace(ROW, attempts=2))
    retried = codec.delivery_updated(
        stored, DeliveryUpdate(ROW.key, "sending", NOW, "HTTP 503", NOW, count_attempt=True)
    )
    assert retried["attempts"] == 3 and retried["last_error"] == "HTTP 503"
    assert retried["next_try"] == NOW.isoformat() and retried.get("sent_at") is None
    assert retried["alert"] == stored["alert"]
    sent = codec.delivery_updated(retried, DeliveryUpdate(ROW.key, "sent", NOW))
    assert (sent["state"], sent["sent_at"], sent["attempts"]) == ("sent", NOW.isoformat(), 3)
    assert sent["alert"] == {k: stored["alert"][k] for k in codec.SENT_ALERT_FIELDS}
    first = codec.delivery_updated(
        {"key": ROW.key}, DeliveryUpdate(ROW.key, "sending", NOW, count_attempt=True)
    )
    assert first["attempts"] == 1


def test_records_written_before_a_field_existed_read_with_its_default() -> None:
    assert codec.snapshot_from_json({}) == Snapshot()
    assert codec.reminders_from_json({}) == ReminderState()
    assert codec.clauses_from_json({}) == ClauseSnapshot()
    assert codec.treaty_from_json({}) == TreatySnapshot()
    assert codec.treaty_from_json({"initialized": True}) == TreatySnapshot(True)
    assert codec.follows_from_json({"platform": "slack", "user": "U0ANN"}) == (ANN, ())
    assert codec.follows_from_json(
        {"platform": "slack", "user": "U0ANN", "follows": [{"kind": "words", "value": "x"}]}
    ) == (ANN, (Follow("words", "x"),))
    news = codec.news_from_json(
        {"source": "hrw", "key": "k", "title": "T", "seen_at": NOW.isoformat()}
    )
    assert news == NewsRecord(SourceId("hrw"), "k", "T", None, None, NOW, ())
    event = codec.event_from_json(
        {"key": "cal:x", "source": "cal", "title": "Call", "start": NOW.isoformat()}
    )
    assert event == PLAIN_EVENT
    row = codec.delivery_to_json(ROW)
    del row["attempts"]
    assert codec.delivery_from_json(row).attempts == 0
