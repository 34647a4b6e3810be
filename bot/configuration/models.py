"""The configuration files' schema, as validation models.

Each file has a model; unknown keys are errors everywhere. ``Config`` is the resolved whole that
the rest of the bot reads: defaults applied, time zones loaded, datetimes made aware.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)

from bot.domain.durations import parse_duration
from bot.domain.holding import WEEKDAYS, ChannelRules, DigestRule, QuietRule
from bot.domain.matching import compile_term, is_regex
from bot.domain.model import ChannelName, Clause, SessionEvent
from bot.domain.treaty import EntryIntoForceRule, TreatySource

MIN_INTERVAL = timedelta(minutes=1)
#: Without every_max, adaptive polling may stretch a feed's interval up to this many times.
ADAPTIVE_FACTOR = 6
ID_PATTERN = r"^[a-z0-9][a-z0-9-]*$"


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("expected a duration such as 30s, 15m, 2h or 7d")
    if isinstance(value, int):
        raise ValueError(f"{value} has no unit; write e.g. {value}s, {value}m or {value}h")
    return parse_duration(value)


def _interval(value: timedelta) -> timedelta:
    if value < MIN_INTERVAL:
        raise ValueError("the poll interval must be at least 1m, so sources are not hammered")
    return value


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r}; use an IANA name such as Europe/Vienna or UTC"
        ) from None
    return value


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL")
    if parts.username or parts.password:
        raise ValueError("credentials in a URL are not allowed; they would end up in logs")
    return value


def _url_or_path(value: str) -> str:
    if "://" in value or value.startswith("/"):
        return _url(value)
    if ".." in value.split("/"):
        raise ValueError(f"{value!r} leaves the config directory")
    return value


#: URL schemes of the state's database (libpq accepts both).
DATABASE_SCHEMES = ("postgresql", "postgres")


def _storage(value: str) -> str:
    """A state file's path, or a PostgreSQL URL (never repeated in a message: it may hold a
    password)."""
    scheme, sep, rest = value.partition("://")
    if not sep:
        return value
    if scheme.lower() not in DATABASE_SCHEMES:
        shown = f"'{scheme}://' " if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,19}", scheme) else ""
        raise ValueError(
            f"unknown kind of storage {shown}(give a file path or a postgresql:// URL)"
        )
    if not rest.strip() or any(c.isspace() for c in value):
        raise ValueError("not a PostgreSQL URL; write postgresql://user:password@host/database")
    return value


def _term(value: str) -> str:
    if not value.strip():
        raise ValueError("an empty keyword matches nothing")
    try:
        compile_term(value)
    except re.error as err:
        kind = "regex" if is_regex(value) else "keyword"
        raise ValueError(f"invalid {kind} {value!r}: {err}") from None
    return value


def _size(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a size such as 5MB")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*(B|KB|MB|GB)?\s*", value, re.IGNORECASE)
        if m:
            unit = (m.group(2) or "B").upper()
            return int(m.group(1)) * {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[unit]
    raise ValueError(f"{value!r} is not a size; write e.g. 500KB or 5MB")


_DURATION_SCHEMA = WithJsonSchema(
    {
        "type": "string",
        "pattern": r"^\s*(\d+\s*[smhdw]\s*)+$",
        "description": "a duration such as 30s, 15m, 2h, 7d",
    }
)
Duration = Annotated[timedelta, BeforeValidator(_duration), _DURATION_SCHEMA]
Interval = Annotated[
    timedelta, BeforeValidator(_duration), AfterValidator(_interval), _DURATION_SCHEMA
]
TimeZoneName = Annotated[
    str,
    AfterValidator(_timezone),
    WithJsonSchema({"type": "string", "description": "an IANA time zone, e.g. Europe/Vienna"}),
]
HttpUrl = Annotated[
    str,
    AfterValidator(_url),
    WithJsonSchema({"type": "string", "pattern": "^https?://", "format": "uri"}),
]
UrlOrPath = Annotated[
    str,
    AfterValidator(_url_or_path),
    WithJsonSchema({"type": "string", "description": "an http(s) URL or a path in config/"}),
]
Term = Annotated[
    str,
    AfterValidator(_term),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "description": "a word or phrase (case-insensitive), or /regex/",
        }
    ),
]
Size = Annotated[
    int,
    BeforeValidator(_size),
    Field(gt=0),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1},
                {"type": "string", "pattern": "^\\s*\\d+\\s*(B|KB|MB|GB)?\\s*$"},
            ],
            "description": "bytes, or a size such as 500KB or 5MB",
        }
    ),
]
Ident = Annotated[str, Field(pattern=ID_PATTERN, max_length=64)]
ChannelRef = Annotated[str, Field(min_length=1)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------- bot.yaml


def _slack_channel(value: str) -> str:
    if not re.fullmatch(r"[CGD][A-Z0-9]{6,}", value):
        raise ValueError(
            f"{value!r} is not a Slack channel id; use the id such as C0123ABCD (channel "
            "details, at the bottom), not the #name"
        )
    return value


def _matrix_room(value: str) -> str:
    if not re.fullmatch(r"![^\s:]+(:\S+)?", value):
        raise ValueError(
            f"{value!r} is not a Matrix room id; use the id such as !AbCdEf:example.org "
            "(room settings, Advanced), not the #alias"
        )
    return value


SlackChannelId = Annotated[
    str,
    AfterValidator(_slack_channel),
    WithJsonSchema({"type": "string", "pattern": "^[CGD][A-Z0-9]{6,}$"}),
]
MatrixRoomId = Annotated[
    str,
    AfterValidator(_matrix_room),
    WithJsonSchema({"type": "string", "pattern": "^![^\\s:]+(:\\S+)?$"}),
]


def _clock_time(value: Any) -> time:
    if isinstance(value, time):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f'{value} is not a time of day; write it in quotes, e.g. "09:00"')
    text = value.strip() if isinstance(value, str) else ""
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", text)
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise ValueError(f'{value!r} is not a time of day; write e.g. "09:00" or "22:30"')
    return time(int(match[1]), int(match[2]))


ClockTime = Annotated[
    time,
    BeforeValidator(_clock_time),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^([01]?[0-9]|2[0-3]):[0-5][0-9]$",
            "description": "a time of day, e.g. 09:00",
        }
    ),
]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
HeldKind = Literal[
    "news", "session-reminder", "session-change", "clause-change", "source-health", "treaty-action"
]


def _every_day() -> list[Weekday]:
    return ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def _news_only() -> list[HeldKind]:
    return ["news"]


class DigestSettings(Strict):
    at: ClockTime
    days: Annotated[list[Weekday], Field(min_length=1)] = Field(default_factory=_every_day)
    timezone: TimeZoneName | None = None
    kinds: Annotated[list[HeldKind], Field(min_length=1)] = Field(default_factory=_news_only)


class QuietSettings(Strict):
    from_: ClockTime = Field(alias="from")
    to: ClockTime
    timezone: TimeZoneName | None = None
    urgent: list[HeldKind] = Field(default_factory=list)

    def model_post_init(self, context: Any, /) -> None:
        if self.from_ == self.to:
            raise ValueError("quiet hours need different from and to times")


class ChannelTarget(Strict):
    slack: SlackChannelId | None = None
    matrix: MatrixRoomId | None = None
    digest: DigestSettings | None = None
    quiet: QuietSettings | None = None
    lead_times: list[Duration] | None = None


class ReminderSettings(Strict):
    lead_times: list[Duration] = Field(
        default_factory=lambda: [parse_duration(d) for d in ("14d", "7d", "1d", "1h", "0m")]
    )
    channels: list[ChannelRef] = Field(default_factory=lambda: ["alerts"])


class SlackSettings(Strict):
    mode: Literal["socket", "http"] = "socket"


class HttpSettings(Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    # where the world reaches the server: answers and reminders link <public_url>/calendar.ics
    public_url: HttpUrl | None = None


class MatrixSettings(Strict):
    command_prefix: Annotated[str, Field(min_length=1)] = "!treaty"


class Admins(Strict):
    slack: list[str] = Field(default_factory=list)
    matrix: list[str] = Field(default_factory=list)


class FetchSettings(Strict):
    timeout: Duration = timedelta(seconds=30)
    max_bytes: Size = 5 * 1024 * 1024
    per_host: Annotated[int, Field(ge=1, le=16)] = 2
    max_in_flight: Annotated[int, Field(ge=1, le=256)] = 32
    backoff_cap: Duration = timedelta(hours=6)


class ReplicaSettings(Strict):
    shards: Annotated[int, Field(ge=1, le=1024)] = 16
    lease: Annotated[Duration, AfterValidator(lambda v: _between(v, 3, 600))] = timedelta(
        seconds=15
    )


def _between(value: timedelta, low: int, high: int) -> timedelta:
    if not low <= value.total_seconds() <= high:
        raise ValueError(f"must be between {low} s and {high} s")
    return value


def _empty_section(value: Any) -> Any:
    return {} if value is None else value


def _or_empty(schema: dict[str, Any]) -> None:
    """In the JSON Schema too, a section whose keys are all commented out is allowed."""
    ref = schema.pop("$ref", None)
    if ref is not None:
        schema["anyOf"] = [{"$ref": ref}, {"type": "null"}]


class BotFile(Strict):
    timezone: TimeZoneName = "UTC"
    # never in a repr: a database URL may hold a password
    storage: Annotated[str, Field(min_length=1, repr=False), AfterValidator(_storage)] = (
        "data/treaty-bot.json"
    )
    channels: dict[Annotated[str, Field(pattern=ID_PATTERN)], ChannelTarget] = Field(
        default_factory=dict
    )
    reminders: ReminderSettings = Field(default_factory=ReminderSettings)
    slack: SlackSettings = Field(default_factory=SlackSettings)
    # a section whose keys are all commented out reads as empty, not as a mistake
    http: Annotated[HttpSettings, BeforeValidator(_empty_section)] = Field(
        default_factory=HttpSettings, json_schema_extra=_or_empty
    )
    matrix: MatrixSettings = Field(default_factory=MatrixSettings)
    admins: Admins = Field(default_factory=Admins)
    fetch: FetchSettings = Field(default_factory=FetchSettings)
    replicas: ReplicaSettings = Field(default_factory=ReplicaSettings)


# ----------------------------------------------------------------------------- feeds.yaml


class FeedDefaults(Strict):
    every: Interval = timedelta(minutes=15)
    every_max: Interval | None = None
    during_sessions: Interval | None = None
    channels: list[ChannelRef] = Field(default_factory=lambda: ["alerts"])
    match: list[Term] = Field(default_factory=list)
    exclude: list[Term] = Field(default_factory=list)
    backfill: Annotated[int, Field(ge=0, le=50)] = 0
    max_new_items: Annotated[int, Field(ge=1)] = 10
    failures_before_alert: Annotated[int, Field(ge=1)] = 3


class FeedEntry(Strict):
    id: Ident
    name: str | None = None
    url: HttpUrl
    every: Interval | None = None
    every_max: Interval | None = None
    during_sessions: Interval | None = None
    match: list[Term] | None = None
    exclude: list[Term] | None = None
    channels: list[ChannelRef] | None = None
    backfill: Annotated[int, Field(ge=0, le=50)] | None = None
    max_new_items: Annotated[int, Field(ge=1)] | None = None
    failures_before_alert: Annotated[int, Field(ge=1)] | None = None


class FeedsFile(Strict):
    defaults: FeedDefaults = Field(default_factory=FeedDefaults)
    feeds: list[FeedEntry] = Field(default_factory=list)


# ----------------------------------------------------------------------------- sessions.yaml

EventKind = Literal["session", "informal", "deadline"]
SessionStatus = Literal["scheduled", "tentative", "postponed", "cancelled", "concluded"]
DateLike = Annotated[
    datetime | date | str,
    WithJsonSchema(
        {
            "type": "string",
            "description": "ISO 8601 date (all day) or datetime, e.g. 2026-12-31T10:00",
        }
    ),
]


class CalendarEntry(Strict):
    id: Ident
    name: str | None = None
    url: UrlOrPath
    every: Interval = timedelta(hours=6)
    match: list[Term] = Field(default_factory=list)
    exclude: list[Term] = Field(default_factory=list)
    channels: list[ChannelRef] = Field(default_factory=lambda: ["alerts"])
    kind: EventKind = "session"
    timezone: TimeZoneName | None = None
    lead_times: list[Duration] | None = None
    failures_before_alert: Annotated[int, Field(ge=1)] = 3


class SessionEntry(Strict):
    id: Ident
    title: Annotated[str, Field(min_length=1)]
    kind: EventKind = "session"
    start: DateLike
    end: DateLike | None = None
    timezone: TimeZoneName | None = None
    location: str | None = None
    url: HttpUrl | None = None
    status: SessionStatus = "scheduled"
    channels: list[ChannelRef] | None = None
    lead_times: list[Duration] | None = None
    notes: str | None = None


class SessionsFile(Strict):
    calendars: list[CalendarEntry] = Field(default_factory=list)
    sessions: list[SessionEntry] = Field(default_factory=list)


# ----------------------------------------------------------------------------- clauses.yaml

ClauseStatus = Literal["open", "contested", "agreed", "adopted", "reserved", "deferred"]


class ClauseEntry(Strict):
    id: Ident
    article: Annotated[str, Field(min_length=1)] | int
    title: Annotated[str, Field(min_length=1)]
    status: ClauseStatus
    summary: str = ""
    concerns: list[str] = Field(default_factory=list)
    links: list[HttpUrl] = Field(default_factory=list)
    updated: date | None = None


class ClausesFile(Strict):
    channels: list[ChannelRef] = Field(default_factory=lambda: ["alerts"])
    clauses: list[ClauseEntry] = Field(default_factory=list)


# ----------------------------------------------------------------------------- treaty.yaml

DEPOSITARY_SOURCE = "depositary"


class DepositaryEntry(Strict):
    name: Annotated[str, Field(min_length=1)] = "UN depositary (MTDSG)"
    url: UrlOrPath
    page: HttpUrl | None = None
    every: Interval = timedelta(hours=6)
    channels: list[ChannelRef] = Field(default_factory=lambda: ["alerts"])
    failures_before_alert: Annotated[int, Field(ge=1)] = 3


class EntryIntoForceEntry(Strict):
    instruments: Annotated[int, Field(ge=1, le=1000)] = 40
    days_after: Annotated[int, Field(ge=0, le=3650)] = 90
    not_counted: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=lambda: ["European Union"]
    )


class TreatyFile(Strict):
    depositary: DepositaryEntry | None = None
    entry_into_force: EntryIntoForceEntry = Field(default_factory=EntryIntoForceEntry)


# ----------------------------------------------------------------------------- resolved


def parse_when(value: DateLike, tz: ZoneInfo) -> tuple[datetime, bool]:
    """An aware instant from a YAML date, datetime or ISO string; ``True`` when all-day."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        return datetime.combine(value, time(0, 0), tz), True
    else:
        text = value.strip()
        try:
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
                return datetime.combine(date.fromisoformat(text), time(0, 0), tz), True
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 date or datetime") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    return dt, False


@dataclass(frozen=True, slots=True)
class FeedConfig:
    id: str
    name: str
    url: str
    every: timedelta
    match: tuple[str, ...]
    exclude: tuple[str, ...]
    channels: tuple[str, ...]
    backfill: int
    max_new_items: int
    failures_before_alert: int
    every_max: timedelta | None = None
    during_sessions: timedelta | None = None

    @property
    def ceiling(self) -> timedelta:
        """The longest interval adaptive polling may reach (``every_max``, else 6 × every)."""
        return self.every_max if self.every_max is not None else ADAPTIVE_FACTOR * self.every


@dataclass(frozen=True, slots=True)
class CalendarConfig:
    id: str
    name: str
    url: str  # an http(s) URL, or a path (relative to the config directory, resolved)
    every: timedelta
    match: tuple[str, ...]
    exclude: tuple[str, ...]
    channels: tuple[ChannelName, ...]
    kind: EventKind
    timezone: str | None
    lead_times: tuple[timedelta, ...] | None
    failures_before_alert: int

    @property
    def is_file(self) -> bool:
        return not self.url.startswith(("http://", "https://"))


@dataclass(frozen=True, slots=True)
class DepositaryConfig:
    """The depositary's record of the treaty (treaty.yaml ``depositary``), resolved."""

    id: str
    name: str
    url: str  # an http(s) URL, or a path (relative to the config directory, resolved)
    page: str | None
    every: timedelta
    channels: tuple[ChannelName, ...]
    failures_before_alert: int

    @property
    def is_file(self) -> bool:
        return not self.url.startswith(("http://", "https://"))


@dataclass(frozen=True, slots=True)
class Config:
    """The resolved configuration the bot runs on."""

    directory: str
    bot: BotFile
    feeds_file: FeedsFile
    sessions_file: SessionsFile
    clauses_file: ClausesFile
    feeds: tuple[FeedConfig, ...]
    calendars: tuple[CalendarConfig, ...] = ()
    treaty_file: TreatyFile = field(default_factory=TreatyFile)
    depositary: DepositaryConfig | None = None

    def channel_rules(self) -> dict[ChannelName, ChannelRules]:
        """How each logical channel takes its alerts (digest, quiet hours), if it says."""
        out: dict[ChannelName, ChannelRules] = {}
        for name, target in self.bot.channels.items():
            if target.digest is None and target.quiet is None:
                continue
            digest = quiet = None
            if target.digest is not None:
                d = target.digest
                digest = DigestRule(
                    d.at,
                    frozenset(WEEKDAYS.index(day) for day in d.days),
                    ZoneInfo(d.timezone) if d.timezone else self.tz,
                    frozenset(d.kinds),
                )
            if target.quiet is not None:
                q = target.quiet
                quiet = QuietRule(
                    q.from_,
                    q.to,
                    ZoneInfo(q.timezone) if q.timezone else self.tz,
                    frozenset(q.urgent),
                )
            out[ChannelName(name)] = ChannelRules(digest, quiet)
        return out

    def channel_lead_times(self) -> dict[ChannelName, tuple[timedelta, ...]]:
        """Channels whose own reminder lead times replace the global list there."""
        return {
            ChannelName(name): tuple(target.lead_times)
            for name, target in self.bot.channels.items()
            if target.lead_times is not None
        }

    def entry_into_force(self) -> EntryIntoForceRule:
        rule = self.treaty_file.entry_into_force
        return EntryIntoForceRule(rule.instruments, rule.days_after, tuple(rule.not_counted))

    def treaty_source(self) -> TreatySource:
        """Where the record comes from and where its alerts (and the computed dates) go."""
        d = self.depositary
        if d is None:
            return TreatySource(DEPOSITARY_SOURCE, "UN depositary", None, self.reminder_channels)
        return TreatySource(d.id, d.name, d.page or (d.url if not d.is_file else None), d.channels)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.bot.timezone)

    @property
    def ops_channels(self) -> tuple[str, ...]:
        return ("ops",) if "ops" in self.bot.channels else ()

    @property
    def reminder_channels(self) -> tuple[ChannelName, ...]:
        return tuple(ChannelName(c) for c in self.bot.reminders.channels)

    def sessions(self) -> tuple[SessionEvent, ...]:
        """The hand-written sessions of sessions.yaml as domain events (aware UTC)."""
        return resolve_sessions(self.sessions_file, self.tz, self.reminder_channels)

    def clauses(self) -> tuple[Clause, ...]:
        return tuple(
            Clause(
                id=c.id,
                article=str(c.article),
                title=c.title,
                status=c.status,
                summary=" ".join(c.summary.split()),
                concerns=tuple(c.concerns),
                links=tuple(c.links),
                updated=c.updated,
            )
            for c in self.clauses_file.clauses
        )


SESSIONS_SOURCE = "sessions"


def resolve_sessions(
    sessions: SessionsFile, tz: ZoneInfo, channels: tuple[ChannelName, ...]
) -> tuple[SessionEvent, ...]:
    out = []
    for s in sessions.sessions:
        zone = ZoneInfo(s.timezone) if s.timezone else tz
        start, all_day = parse_when(s.start, zone)
        end: datetime | None = None
        if s.end is not None:
            end, end_all_day = parse_when(s.end, zone)
            if end_all_day:  # a written last day is inclusive; events keep exclusive ends
                end = datetime.combine(end.date() + timedelta(days=1), time(0, 0), zone)
        elif all_day:
            end = datetime.combine(start.date() + timedelta(days=1), time(0, 0), zone)
        out.append(
            SessionEvent(
                key=f"{SESSIONS_SOURCE}:{s.id}",
                source=SESSIONS_SOURCE,
                title=" ".join(s.title.split()),
                start=start.astimezone(UTC),
                end=end.astimezone(UTC) if end is not None else None,
                kind=s.kind,
                all_day=all_day,
                timezone=s.timezone,
                location=s.location,
                url=s.url,
                status=s.status,
                description=s.notes or "",
                channels=tuple(ChannelName(c) for c in s.channels) if s.channels else channels,
                lead_times=tuple(s.lead_times) if s.lead_times is not None else None,
            )
        )
    return tuple(out)


def resolve_calendars(sessions: SessionsFile, directory: str) -> tuple[CalendarConfig, ...]:
    out = []
    for c in sessions.calendars:
        url = c.url
        if not url.startswith(("http://", "https://")):
            url = os.path.join(directory, url)
        out.append(
            CalendarConfig(
                id=c.id,
                name=c.name or c.id,
                url=url,
                every=c.every,
                match=tuple(c.match),
                exclude=tuple(c.exclude),
                channels=tuple(ChannelName(ch) for ch in c.channels),
                kind=c.kind,
                timezone=c.timezone,
                lead_times=tuple(c.lead_times) if c.lead_times is not None else None,
                failures_before_alert=c.failures_before_alert,
            )
        )
    return tuple(out)


def resolve_depositary(treaty: TreatyFile, directory: str) -> DepositaryConfig | None:
    d = treaty.depositary
    if d is None:
        return None
    url = d.url
    if not url.startswith(("http://", "https://")):
        url = os.path.join(directory, url)
    return DepositaryConfig(
        id=DEPOSITARY_SOURCE,
        name=d.name,
        url=url,
        page=d.page,
        every=d.every,
        channels=tuple(ChannelName(c) for c in d.channels),
        failures_before_alert=d.failures_before_alert,
    )


def resolve_feeds(feeds: FeedsFile) -> tuple[FeedConfig, ...]:
    d = feeds.defaults
    out = []
    for f in feeds.feeds:
        out.append(
            FeedConfig(
                id=f.id,
                name=f.name or f.id,
                url=f.url,
                every=f.every if f.every is not None else d.every,
                match=tuple(f.match if f.match is not None else d.match),
                exclude=tuple(f.exclude if f.exclude is not None else d.exclude),
                channels=tuple(f.channels if f.channels is not None else d.channels),
                backfill=f.backfill if f.backfill is not None else d.backfill,
                max_new_items=f.max_new_items if f.max_new_items is not None else d.max_new_items,
                failures_before_alert=(
                    f.failures_before_alert
                    if f.failures_before_alert is not None
                    else d.failures_before_alert
                ),
                every_max=f.every_max if f.every_max is not None else d.every_max,
                during_sessions=(
                    f.during_sessions if f.during_sessions is not None else d.during_sessions
                ),
            )
        )
    return tuple(out)


#: Any source the bot polls: a feed, a session calendar, the depositary's record.
SourceConfig = FeedConfig | CalendarConfig | DepositaryConfig
