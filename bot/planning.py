"""The planning job: sessions.yaml and the calendars, the clauses, the dates computed from the
depositary's record and the reminders due, planned against their last snapshots and recorded
in one commit. With replicas it runs where the ``job:planner`` lease is held, so each change
and each reminder is planned once."""

from __future__ import annotations

import logging
from datetime import datetime

from bot import timeline
from bot.configuration.models import SESSIONS_SOURCE
from bot.context import Context
from bot.domain.clauses import plan_clauses
from bot.domain.model import Alert, ChannelName
from bot.domain.schedule import session_windows
from bot.domain.sessions import plan_changes, plan_reminders
from bot.errors import LeaseLost
from bot.store.base import Changes

log = logging.getLogger(__name__)


async def evaluate(ctx: Context, *, now: datetime | None = None) -> list[Alert]:
    """Sessions and clauses: diff the YAML against the last snapshot, plan due reminders,
    and record it all in one commit. Returns the alerts queued."""
    store, outbox, config = ctx.store, ctx.outbox, ctx.config
    fences: dict[str, int] = {}
    if ctx.cluster is not None:
        planner = ctx.cluster.planner_fences()
        if planner is None:  # another replica plans; the session weeks are needed here too
            ctx.windows = session_windows(await timeline.timeline(config, store))
            return []
        fences = planner
    now = now or ctx.clock.now()
    tz = config.tz
    changes = Changes(fences=fences)
    alerts: list[Alert] = []

    previous = await store.snapshot(SESSIONS_SOURCE)
    yaml_plan = plan_changes(
        SESSIONS_SOURCE,
        previous,
        config.sessions(),
        now,
        tz,
        complete=True,
        channels=config.reminder_channels,
    )
    alerts.extend(yaml_plan.alerts)
    if yaml_plan.changed:
        changes.snapshots[SESSIONS_SOURCE] = yaml_plan.snapshot

    clause_plan = plan_clauses(
        await store.clause_snapshot(),
        config.clauses(),
        now,
        tuple(ChannelName(c) for c in config.clauses_file.channels),
    )
    alerts.extend(clause_plan.alerts)
    if clause_plan.changed:
        changes.clauses = clause_plan.snapshot

    computed = await timeline.plan_computed_dates(config, store, now)
    if computed is not None:
        alerts.extend(computed.alerts)
        changes.snapshots[config.treaty_source().id] = computed.snapshot
    snapshots = await timeline.timeline_snapshots(config, store, yaml_plan.snapshot)
    if computed is not None:
        snapshots[config.treaty_source().id] = computed.snapshot
    events = [e for snap in snapshots.values() for e in snap.events.values()]
    ctx.windows = session_windows(events)
    first_seen = {k: t for snap in snapshots.values() for k, t in snap.first_seen.items()}
    reminder_plan = plan_reminders(
        events,
        first_seen,
        await store.reminders(),
        now,
        tz,
        lead_times=config.bot.reminders.lead_times,
        channels=config.reminder_channels,
        channel_lead_times=config.channel_lead_times(),
        calendar_url=timeline.calendar_url(config),
    )
    alerts.extend(reminder_plan.alerts)
    if reminder_plan.changed:
        changes.reminders = reminder_plan.state

    changes.enqueue = outbox.rows_for(alerts)
    changes.enqueue += outbox.rows_for_people(alerts, ctx.people.everyone())
    if not ctx.dry_run:
        try:
            await store.commit(changes)
        except LeaseLost as err:
            if ctx.cluster is not None:
                ctx.cluster.lost(err.lost)
            return []
        ctx.count_queued(changes)
    return alerts
