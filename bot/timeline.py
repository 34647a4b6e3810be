"""The timeline: every session, meeting, deadline and computed date the bot knows, from the
stored listings of the event sources (sessions.yaml, the calendars, the dates computed from
the depositary's record). What ``sessions`` and ``next-session`` answer from, what reminders
are planned on, and what ``/calendar.ics`` serves. ``app`` wires it."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime

from bot import __version__
from bot.configuration.models import SESSIONS_SOURCE, Config
from bot.domain.model import SessionEvent
from bot.domain.sessions import ChangePlan, Snapshot, plan_changes
from bot.domain.treaty import projection
from bot.sources.calendar_export import render_calendar
from bot.store.runner import AsyncStore

#: Where the bot's HTTP server serves the timeline as an iCalendar feed.
CALENDAR_PATH = "/calendar.ics"


def event_sources(config: Config) -> set[str]:
    """The sources whose stored listings are on the timeline: the calendars, and the dates
    computed from the depositary's record."""
    sources = {c.id for c in config.calendars}
    if config.depositary is not None:
        sources.add(config.depositary.id)
    return sources


async def timeline_snapshots(
    config: Config, store: AsyncStore, sessions: Snapshot | None = None
) -> dict[str, Snapshot]:
    """The snapshot of each event source on the timeline, by source id: the configured
    calendars, the computed dates, and sessions.yaml (``sessions`` as just planned; by default
    the stored snapshot holding the YAML's events as they are now). An event source added to
    the bot joins the answers, the reminders and the calendar feed here."""
    stored = await store.snapshots()
    configured = event_sources(config)
    snapshots = {k: v for k, v in stored.items() if k in configured}
    if sessions is None:
        written = {e.key: e for e in config.sessions()}
        sessions = replace(stored.get(SESSIONS_SOURCE, Snapshot()), events=written)
    snapshots[SESSIONS_SOURCE] = sessions
    return snapshots


async def timeline(config: Config, store: AsyncStore) -> list[SessionEvent]:
    snapshots = await timeline_snapshots(config, store)
    return [e for snap in snapshots.values() for e in snap.events.values()]


async def calendar_ics(config: Config, store: AsyncStore) -> bytes:
    """The timeline as an iCalendar feed: the same bytes while nothing changes."""
    snapshots = await timeline_snapshots(config, store)
    entries = [(e, s.revision(e.key)) for s in snapshots.values() for e in s.events.values()]
    # a few thousand events take a while to write: off the loop
    return await asyncio.to_thread(
        render_calendar,
        entries,
        tz=config.tz,
        prodid=f"-//Treaty Watch//treaty-bot {__version__}//EN",
    )


def calendar_url(config: Config) -> str | None:
    """Where members subscribe to the timeline (``http.public_url`` set), else ``None``."""
    base = config.bot.http.public_url
    return base.rstrip("/") + CALENDAR_PATH if base else None


async def plan_computed_dates(
    config: Config, store: AsyncStore, now: datetime
) -> ChangePlan | None:
    """Entry into force and the first Conference, computed from the depositary's record:
    added, moved or removed like any session (``None`` when nothing changed)."""
    if config.depositary is None:
        return None
    record = await store.treaty_snapshot()
    if not record.initialized:
        return None  # nothing is known yet: the first record only remembers
    source = config.treaty_source()
    plan = plan_changes(
        source.id,
        await store.snapshot(source.id),
        projection(record.status, config.entry_into_force(), source),
        now,
        config.tz,
        complete=True,
        may_be_empty=True,
        channels=source.channels,
    )
    return plan if plan.changed else None
