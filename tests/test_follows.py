"""Follows in the running app: stored, matched where alerts are queued, sent once per person,
across restarts (on the console, whose typist can follow too)."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime

from bot.app import App
from bot.configuration import load_config
from bot.domain.follows import Follow, Person
from bot.domain.model import Alert, AlertId, ChannelName, SourceRecord
from bot.domain.text import render_plain
from bot.polling import PollOutcome
from tests.conftest import ConfigFactory

CONSOLE = Person("console", "console")
CLAUSE = "clauses:\n  - {{id: art-24, article: '24', title: Safeguards, status: {status}}}\n"


def news(n: int, title: str) -> Alert:
    return Alert(
        "news",
        AlertId(f"news:hrw:{n}"),
        (ChannelName("alerts"),),
        "hrw",
        title,
        f"https://example.org/{n}",
        title,
        datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
    )


def polled(*alerts: Alert) -> PollOutcome:
    return PollOutcome("hrw", SourceRecord("hrw"), alerts, (), False, "ok")


def printed(stream: io.StringIO, marker: str) -> list[str]:
    return [line for line in stream.getvalue().splitlines() if marker in line]


async def test_the_console_follows_and_gets_matches_once_across_restarts(
    config_dir: ConfigFactory,
) -> None:
    directory = config_dir(clauses=CLAUSE.format(status="open"))
    config = load_config(directory)
    out = io.StringIO()
    async with App(config, stream=out) as app:
        assert app.outbox is not None
        answer = await app.ask("follow art-24")
        assert answer.title == "You now follow Art. 24 — Safeguards" and answer.direct
        await app.ask('follow "data protection"')
        await app.evaluate()  # the first look remembers the clause
        (directory / "clauses.yaml").write_text(CLAUSE.format(status="contested"))
        assert await app.reload() == []
        await app.record([polled(news(1, "Data protection in article 9"), news(2, "Unrelated"))])
        await app.outbox.deliver_due()
    assert len(printed(out, "→ #alerts")) == 3  # the clause change and both news items
    to_me = printed(out, "→ @console")
    assert len(to_me) == 2 and to_me[0].startswith("── clause-change")
    assert "Data protection in article 9" in out.getvalue().split(to_me[1])[1]

    again = io.StringIO()
    async with App(load_config(directory), stream=again) as app:
        assert app.outbox is not None
        listed = render_plain((await app.ask("following")).body)
        assert "Art. 24 — Safeguards" in listed and "data protection" in listed
        # the same item planned again after the restart: nothing new for anyone
        await app.record([polled(news(1, "Data protection in article 9"))])
        await app.record([polled(news(3, "Another article 24 story"))])
        await app.outbox.deliver_due()
        await app.ask("unfollow all")
        await app.record([polled(news(4, "Article 24 once more"))])
        await app.outbox.deliver_due()
    assert len(printed(again, "→ @console")) == 1  # only the new story that names article 24
    assert len(printed(again, "→ #alerts")) == 2


async def test_rows_committed_before_a_crash_reach_the_person_after_the_restart(
    config_dir: ConfigFactory,
) -> None:
    directory = config_dir()
    async with App(load_config(directory), stream=io.StringIO()) as app:
        await app.ask("follow privacy")
        await app.record([polled(news(1, "Privacy first"))])  # queued, never delivered
    out = io.StringIO()
    async with App(load_config(directory), stream=out) as app:
        assert app.outbox is not None
        await app.outbox.deliver_due()
        await app.outbox.deliver_due()
    assert len(printed(out, "→ @console")) == 1


async def test_two_changes_at_once_both_stick_and_the_limit_holds(
    config_dir: ConfigFactory,
) -> None:
    async with App(load_config(config_dir()), stream=io.StringIO()) as app:
        await asyncio.gather(*(app.ask(f"follow word{n}") for n in range(5)))
        assert {f.value for f in app.people.of(CONSOLE)} == {f"word{n}" for n in range(5)}
        await asyncio.gather(*(app.ask(f"follow more{n}") for n in range(60)))
        assert len(app.people.of(CONSOLE)) == 50
        refused = await app.ask("follow one-too-many")
        assert "too many" in refused.title
        assert app.store is not None
        assert len((await app.store.follows())[CONSOLE]) == 50


async def test_a_dry_run_stores_no_follow(config_dir: ConfigFactory) -> None:
    directory = config_dir()
    async with App(load_config(directory), stream=io.StringIO()) as app:
        await app.ask("follow privacy")
    async with App(load_config(directory), stream=io.StringIO(), dry_run=True) as app:
        await app.ask("follow secrecy")
    async with App(load_config(directory), stream=io.StringIO()) as app:
        assert app.people.of(CONSOLE) == (Follow("words", "privacy"),)
