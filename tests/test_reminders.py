"""Reminders through the composition root and the real state file, across restarts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.app import App
from bot.clock import FixedClock
from bot.configuration import load_config
from bot.domain.model import Alert
from tests.conftest import ConfigFactory

START = datetime(2027, 1, 31, 9, 0, tzinfo=UTC)  # 10:00 in Vienna
FOURTEEN_DAYS = 14 * 86400


def sessions(start: datetime) -> str:
    return (
        "sessions:\n  - {id: close, title: Close of signature, kind: deadline,"
        f' start: "{start.astimezone(UTC):%Y-%m-%dT%H:%M}", timezone: UTC}}\n'
    )


async def evaluate_at(directory: Path, instant: datetime) -> tuple[list[Alert], list[str]]:
    """One start of the bot: evaluate the timeline at ``instant``; the reminders it planned
    and the ids of every reminder row the outbox holds."""
    async with App(load_config(directory), clock=FixedClock(instant)) as app:
        assert app.store is not None
        alerts = await app.evaluate()
        rows = await app.store.deliveries(("pending", "sending", "sent", "failed"))
    reminders = [a for a in alerts if a.kind == "session-reminder"]
    return reminders, sorted(r.alert.id for r in rows if r.alert.kind == "session-reminder")


async def test_a_deadline_moved_one_day_earlier_keeps_its_14_day_reminder_sent_once(
    config_dir: ConfigFactory,
) -> None:
    """The 14-day reminder went out; the deadline then moves one day earlier, so its new
    14-day moment is already past. The stored reminder state says that lead time was sent:
    it is not sent again (the new start gives the reminder a new id, so the outbox's memory
    of sent keys cannot stop it)."""
    directory = config_dir(sessions=sessions(START))
    assert await evaluate_at(directory, START - timedelta(days=30)) == ([], [])  # first look
    reminders, rows = await evaluate_at(directory, START - timedelta(days=14, hours=-1))
    assert [a.id.split(":")[3] for a in reminders] == [str(FOURTEEN_DAYS)]
    assert rows == [reminders[0].id]

    (directory / "sessions.yaml").write_text(sessions(START - timedelta(days=1)))
    reminders, rows = await evaluate_at(directory, START - timedelta(days=14, hours=-2))
    assert reminders == []
    assert len(rows) == 1, rows  # the one 14-day reminder, for the first date

    # the next lead time still comes, for the new date
    reminders, rows = await evaluate_at(directory, START - timedelta(days=8, hours=-1))
    assert [a.id.split(":")[3] for a in reminders] == [str(7 * 86400)]
    assert len(rows) == 2
