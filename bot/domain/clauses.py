"""Pure decisions about the clause tracker: a status edited in clauses.yaml is announced once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from bot.domain import messages
from bot.domain.model import Alert, AlertId, ChannelName, Clause
from bot.domain.planner import digest
from bot.domain.text import render_plain


@dataclass(frozen=True, slots=True)
class ClauseSnapshot:
    """The status of each clause id when last seen."""

    initialized: bool = False
    statuses: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ClausePlan:
    snapshot: ClauseSnapshot
    alerts: tuple[Alert, ...]
    changed: bool


def plan_clauses(
    previous: ClauseSnapshot,
    clauses: Sequence[Clause],
    now: datetime,
    channels: tuple[ChannelName, ...],
) -> ClausePlan:
    """One clause-change alert per status change (and per clause added later), none at first."""
    statuses = {c.id: c.status for c in clauses}
    alerts: list[Alert] = []
    if previous.initialized:
        for clause in clauses:
            old = previous.statuses.get(clause.id)
            if old == clause.status:
                continue
            body = messages.clause_change_body(clause, old)
            alerts.append(
                Alert(
                    kind="clause-change",
                    id=AlertId(
                        f"clause:{clause.id}:{digest(old or '', clause.status, now.isoformat())}"
                    ),
                    channels=channels,
                    source=clause.id,
                    title=messages.clause_change_title(clause, old),
                    url=clause.links[0] if clause.links else None,
                    text=render_plain(body),
                    at=now,
                    body=body,
                )
            )
    snapshot = ClauseSnapshot(True, statuses)
    changed = not previous.initialized or dict(previous.statuses) != statuses
    return ClausePlan(snapshot, tuple(alerts), changed)
