"""The store seen from the event loop (``bot/store/runner.py``) and what counts as a change
(``bot/store/base.py``)."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.domain.clauses import ClauseSnapshot
from bot.domain.model import NewsRecord, SourceId, SourceRecord
from bot.domain.sessions import ReminderState, Snapshot
from bot.domain.treaty import TreatySnapshot
from bot.store.base import Changes
from bot.store.runner import AsyncStore
from bot.store.tinydb_store import TinyDBStore

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


class Slow(TinyDBStore):
    """A store that records in which thread, and how many at once, its reads run."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.threads: set[str] = set()
        self.running = 0
        self.most = 0
        self._guard = threading.Lock()

    def reminders(self) -> ReminderState:
        with self._guard:
            self.running += 1
            self.most = max(self.most, self.running)
            self.threads.add(threading.current_thread().name)
        time.sleep(0.01)  # blocking work, as a disk read is
        with self._guard:
            self.running -= 1
        return super().reminders()


async def test_calls_run_one_at_a_time_on_the_store_s_own_thread(tmp_path: Path) -> None:
    slow = Slow(tmp_path / "state.json")
    store = AsyncStore(slow)
    await asyncio.gather(*(store.reminders() for _ in range(5)))
    assert slow.most == 1
    [name] = slow.threads
    assert name.startswith("store") and name != threading.current_thread().name
    news = [NewsRecord(SourceId("x"), f"k{n}", "T", None, None, NOW, ()) for n in range(3)]
    await store.commit(Changes(sources=[SourceRecord("x")], news=news))
    assert len(await store.recent_news(2)) == 2
    assert list(await store.sources()) == ["x"]
    await store.close()
    with pytest.raises(RuntimeError):  # closed: the thread is gone
        await store.reminders()


@pytest.mark.parametrize(
    "changes",
    [
        Changes(reminders=ReminderState()),
        Changes(treaty=TreatySnapshot()),
        Changes(clauses=ClauseSnapshot()),
        Changes(snapshots={"sessions": Snapshot()}),
        Changes(news=[NewsRecord(SourceId("x"), "k", "T", None, None, NOW, ())]),
    ],
)
def test_any_one_change_is_something_to_commit(changes: Changes) -> None:
    assert changes
    assert not Changes()
