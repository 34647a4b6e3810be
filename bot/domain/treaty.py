"""Pure decisions about the treaty's status as the depositary records it.

The depositary (the UN Secretary-General) lists, for each participant, its signature and its
consent to be bound (ratification, acceptance, approval, accession, succession), and, in
sections of their own, the declarations and reservations made. A poll reads that record into a
``TreatyStatus``; ``plan_treaty`` compares it with the last one:

- each new signature, each new consent and each declaration or reservation added or withdrawn
  is one ``treaty-action`` alert naming the state, the action, its date and where the count
  toward entry into force stands;
- the first poll only remembers;
- a record whose participants table lost more than ``MAX_ROWS_LOST`` rows since the last one
  is refused (it changes nothing and counts as a failed poll): a truncated or half-published
  document must not read as states leaving the treaty.

Entry into force is computed, never typed: article 65(1) of the Convention (A/RES/79/243,
annex) puts it on the 90th day after the deposit of the 40th instrument of ratification,
acceptance, approval or accession, and does not count an instrument of a regional economic
integration organisation as additional to those of its member States. Article 57(2) has the
Secretary-General convene the Conference of the States Parties not later than one year after
entry into force. ``projection`` turns both dates into timeline events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from dateutil.relativedelta import relativedelta

from bot.domain import messages
from bot.domain.countries import name_key
from bot.domain.model import Alert, AlertId, ChannelName, SessionEvent
from bot.domain.planner import digest
from bot.domain.text import render_plain

ConsentKind = Literal["ratification", "acceptance", "approval", "accession", "succession"]
StatementKind = Literal["declaration", "reservation", "objection", "notification"]
ActionKind = Literal[
    "signature",
    "ratification",
    "acceptance",
    "approval",
    "accession",
    "succession",
    "statement-made",
    "statement-withdrawn",
]

#: The depositary's suffix after a date of consent -> its kind ("" is a ratification).
CONSENT_SUFFIXES: Mapping[str, ConsentKind] = {
    "": "ratification",
    "A": "acceptance",
    "AA": "approval",
    "a": "accession",
    "d": "succession",
}

#: Article 65(1): the instruments that count toward entry into force.
COUNTED_KINDS = frozenset({"ratification", "acceptance", "approval", "accession"})

#: A new record that lost more rows than this at once is refused.
MAX_ROWS_LOST = 3

#: Article 57(2): the first Conference of the States Parties, at the latest this long after
#: entry into force.
FIRST_CONFERENCE_WITHIN = relativedelta(years=1)

#: Dates of the depositary are New York dates (United Nations Headquarters).
DEPOSITARY_TZ = "America/New_York"

ENTRY_INTO_FORCE_KEY = "entry-into-force"
FIRST_CONFERENCE_KEY = "first-conference"


@dataclass(frozen=True, slots=True)
class Participant:
    """One row of the participants table, names cleaned of footnote marks."""

    name: str
    signed: date | None = None
    consent: date | None = None
    consent_kind: ConsentKind | None = None


@dataclass(frozen=True, slots=True)
class Statement:
    """A declaration, reservation (or objection, notification) as the depositary prints it."""

    participant: str
    kind: StatementKind
    text: str

    @property
    def key(self) -> str:
        return digest(name_key(self.participant), self.kind, " ".join(self.text.split()))


@dataclass(frozen=True, slots=True)
class TreatyStatus:
    """The depositary's record of the treaty at one moment."""

    participants: tuple[Participant, ...] = ()
    statements: tuple[Statement, ...] = ()

    def participant(self, name: str) -> Participant | None:
        key = name_key(name)
        for p in self.participants:
            if name_key(p.name) == key:
                return p
        return None

    def statements_of(self, name: str) -> tuple[Statement, ...]:
        key = name_key(name)
        return tuple(s for s in self.statements if name_key(s.participant) == key)


@dataclass(frozen=True, slots=True)
class TreatySnapshot:
    """What the last accepted record said."""

    initialized: bool = False
    status: TreatyStatus = field(default_factory=TreatyStatus)


@dataclass(frozen=True, slots=True)
class EntryIntoForceRule:
    """How many instruments bring the treaty into force, and how long after the last one."""

    instruments: int = 40
    days_after: int = 90
    #: regional economic integration organisations: their instruments do not count on top of
    #: their member States' (article 65(1))
    not_counted: tuple[str, ...] = ("European Union",)


@dataclass(frozen=True, slots=True)
class TreatySource:
    """Where the record comes from and where its alerts go."""

    id: str
    name: str
    page: str | None
    channels: tuple[ChannelName, ...]


@dataclass(frozen=True, slots=True)
class TreatyAction:
    """One thing a state did, as the record shows it."""

    state: str
    kind: ActionKind
    on: date | None
    statement: Statement | None = None


@dataclass(frozen=True, slots=True)
class TreatyPlan:
    snapshot: TreatySnapshot
    alerts: tuple[Alert, ...]
    changed: bool
    #: why the record was refused (nothing else applies then)
    problem: str | None = None


# ------------------------------------------------------------------------------- counting


def signatories(status: TreatyStatus) -> list[Participant]:
    return [p for p in status.participants if p.signed is not None]


def parties(status: TreatyStatus) -> list[Participant]:
    """Those whose consent to be bound is recorded (of any kind)."""
    return [p for p in status.participants if p.consent is not None]


def counted_instruments(status: TreatyStatus, rule: EntryIntoForceRule) -> list[Participant]:
    """The instruments that count toward entry into force, in the order they were deposited."""
    excluded = {name_key(n) for n in rule.not_counted}
    found = [
        p
        for p in status.participants
        if p.consent is not None
        and p.consent_kind in COUNTED_KINDS
        and name_key(p.name) not in excluded
    ]
    return sorted(found, key=lambda p: (p.consent or date.min, name_key(p.name)))


def entry_into_force(status: TreatyStatus, rule: EntryIntoForceRule) -> date | None:
    """The date of entry into force, once enough instruments are deposited."""
    counted = counted_instruments(status, rule)
    if len(counted) < rule.instruments:
        return None
    deposit = counted[rule.instruments - 1].consent
    assert deposit is not None
    return deposit + timedelta(days=rule.days_after)


def first_conference_deadline(in_force: date) -> date:
    return in_force + FIRST_CONFERENCE_WITHIN


def latest_actions(status: TreatyStatus, limit: int) -> list[TreatyAction]:
    """The most recent dated signatures and consents, newest first."""
    actions: list[TreatyAction] = []
    for p in status.participants:
        if p.signed is not None:
            actions.append(TreatyAction(p.name, "signature", p.signed))
        if p.consent is not None and p.consent_kind is not None:
            actions.append(TreatyAction(p.name, p.consent_kind, p.consent))
    actions.sort(key=lambda a: (a.on or date.min, a.kind != "signature", a.state), reverse=True)
    return actions[:limit]


# ------------------------------------------------------------------------------- planning


def check_record(previous: TreatySnapshot, current: TreatyStatus) -> str | None:
    """Why ``current`` cannot be trusted after ``previous``, or ``None``."""
    if not previous.initialized:
        return None
    before = {name_key(p.name) for p in previous.status.participants}
    now_listed = {name_key(p.name) for p in current.participants}
    lost = before - now_listed
    if len(lost) > MAX_ROWS_LOST:
        return (
            f"the participants table lost {len(lost)} of its {len(before)} rows at once "
            f"(more than {MAX_ROWS_LOST}); the record is kept as it was until a complete one "
            "is published"
        )
    return None


def actions_between(previous: TreatyStatus, current: TreatyStatus) -> list[TreatyAction]:
    """What the states did between two records, oldest first."""
    old = {name_key(p.name): p for p in previous.participants}
    actions: list[TreatyAction] = []
    for p in current.participants:
        before = old.get(name_key(p.name))
        if p.signed is not None and (before is None or before.signed is None):
            actions.append(TreatyAction(p.name, "signature", p.signed))
        if (
            p.consent is not None
            and p.consent_kind is not None
            and (before is None or before.consent is None)
        ):
            actions.append(TreatyAction(p.name, p.consent_kind, p.consent))
    old_statements = {s.key: s for s in previous.statements}
    new_statements = {s.key: s for s in current.statements}
    for key, s in new_statements.items():
        if key not in old_statements:
            actions.append(TreatyAction(s.participant, "statement-made", None, s))
    for key, s in old_statements.items():
        if key not in new_statements:
            current_name = current.participant(s.participant)
            state = current_name.name if current_name is not None else s.participant
            actions.append(TreatyAction(state, "statement-withdrawn", None, s))
    actions.sort(key=lambda a: (a.on is None, a.on or date.min, a.kind == "signature", a.state))
    return actions


@dataclass(frozen=True, slots=True)
class Standing:
    """Where the count stands after an action: for the alert's last line."""

    signatories: int
    counted: int
    needed: int
    in_force: date | None


def standing(status: TreatyStatus, rule: EntryIntoForceRule) -> Standing:
    return Standing(
        len(signatories(status)),
        len(counted_instruments(status, rule)),
        rule.instruments,
        entry_into_force(status, rule),
    )


def plan_treaty(
    previous: TreatySnapshot,
    current: TreatyStatus,
    now: datetime,
    rule: EntryIntoForceRule,
    source: TreatySource,
) -> TreatyPlan:
    """The alerts for what changed in the record, and the snapshot to keep."""
    problem = check_record(previous, current)
    if problem is not None:
        return TreatyPlan(previous, (), False, problem)
    snapshot = TreatySnapshot(True, current)
    if not previous.initialized:
        return TreatyPlan(snapshot, (), True)
    alerts = tuple(
        _alert(action, current, rule, source, now)
        for action in actions_between(previous.status, current)
    )
    return TreatyPlan(snapshot, alerts, previous.status != current)


def _alert(
    action: TreatyAction,
    status: TreatyStatus,
    rule: EntryIntoForceRule,
    source: TreatySource,
    now: datetime,
) -> Alert:
    where = standing(status, rule)
    body = messages.treaty_action_body(action, where, source.name, source.page)
    what = action.statement.key if action.statement is not None else (action.on or now).isoformat()
    return Alert(
        kind="treaty-action",
        id=AlertId(f"treaty:{source.id}:{name_key(action.state)}:{action.kind}:{digest(what)}"),
        channels=source.channels,
        source=source.id,
        title=messages.treaty_action_title(action),
        url=source.page,
        text=render_plain(body),
        at=now,
        body=body,
        subjects=(action.state,),
    )


# ------------------------------------------------------------------------------- timeline


def projection(
    status: TreatyStatus,
    rule: EntryIntoForceRule,
    source: TreatySource,
) -> tuple[SessionEvent, ...]:
    """The computed dates: entry into force and the latest first Conference of the States
    Parties, once enough instruments are deposited; nothing before."""
    in_force = entry_into_force(status, rule)
    if in_force is None:
        return ()
    counted = counted_instruments(status, rule)
    last = counted[rule.instruments - 1]
    conference = first_conference_deadline(in_force)
    return (
        _day_event(
            source,
            ENTRY_INTO_FORCE_KEY,
            messages.ENTRY_INTO_FORCE_TITLE,
            in_force,
            messages.entry_into_force_description(rule.instruments, last.name, last.consent),
        ),
        _day_event(
            source,
            FIRST_CONFERENCE_KEY,
            messages.FIRST_CONFERENCE_TITLE,
            conference,
            messages.first_conference_description(in_force),
        ),
    )


def _day_event(
    source: TreatySource, key: str, title: str, day: date, description: str
) -> SessionEvent:
    zone = ZoneInfo(DEPOSITARY_TZ)
    start = datetime.combine(day, time(0, 0), zone)
    end = datetime.combine(day + timedelta(days=1), time(0, 0), zone)
    return SessionEvent(
        key=f"{source.id}:{key}",
        source=source.id,
        title=title,
        start=start.astimezone(UTC),
        end=end.astimezone(UTC),
        kind="deadline",
        all_day=True,
        timezone=DEPOSITARY_TZ,
        location=None,
        url=source.page,
        status="tentative" if key == FIRST_CONFERENCE_KEY else "scheduled",
        description=description,
        channels=source.channels,
    )
