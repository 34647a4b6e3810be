"""Follows on Matrix, against a real Synapse: the real app and transport, a second user.

The member follows a clause in the coalition's room; the answer goes to them in a direct
room the bot creates (``is_direct``, encrypted, in the bot's ``m.direct``), with a pointer in
the room. The clause changes: the alert reaches the room and, once, the direct room, also
after the bot restarts (the same direct room, remembered in the state directory).
"""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from nio import Event, RoomMessageNotice

from bot.app import App
from bot.configuration import load_config
from bot.domain.follows import Follow, Person
from bot.transports.matrix import ALERT_FIELD, DIRECT_NOTE, MatrixTransport
from tests.integration.synapse import Account, Synapse, synapse  # noqa: F401
from tests.integration.test_matrix import (  # noqa: F401 - fixtures
    FAST,
    Peer,
    accounts,
    api,
    content_of,
    hs,
    make_room,
    peers,
    reply_to,
    until,
)

CLAUSE = "clauses:\n  - {{id: art-24, article: '24', title: Safeguards, status: {status}}}\n"


def write_config(directory: Path, state: Path, room: str) -> Path:
    directory.mkdir(exist_ok=True)
    (directory / "bot.yaml").write_text(
        textwrap.dedent(
            f"""
            timezone: Europe/Vienna
            storage: {state}
            channels:
              alerts: {{matrix: "{room}"}}
              ops: {{}}
            http: {{port: 0}}
            """
        )
    )
    (directory / "clauses.yaml").write_text(CLAUSE.format(status="open"))
    return directory


@contextlib.asynccontextmanager
async def bot_app(
    synapse_: Synapse, bot: Account, room: str, config: Path, state_dir: Path
) -> AsyncIterator[App]:
    transport = MatrixTransport(
        homeserver=synapse_.base_url,
        user_id=bot.user_id,
        access_token=bot.access_token,
        rooms={"alerts": room},
        state_dir=state_dir,
        timeouts=FAST,
    )
    async with App(load_config(config), transports={"matrix": transport}) as app:
        await app._start_transports(read_input=False)
        yield app


def clause_alert(status: str) -> Any:
    def match(event: Event) -> bool:
        marker = content_of(event).get(ALERT_FIELD) or {}
        return marker.get("kind") == "clause-change" and f"→ {status}" in content_of(event)["body"]

    return match


def notice_with(text: str) -> Any:
    def match(event: Event) -> bool:
        return isinstance(event, RoomMessageNotice) and text in event.body

    return match


async def change_clause(app: App, config: Path, status: str) -> None:
    assert app.outbox is not None
    (config / "clauses.yaml").write_text(CLAUSE.format(status=status))
    assert await app.reload() == []
    await app.outbox.deliver_due()


async def test_a_follower_gets_alerts_in_one_direct_room_once_across_restarts(
    hs: Synapse,  # noqa: F811
    accounts: dict[str, Account],  # noqa: F811
    peers: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    admin = await peers(accounts["admin"])
    member = await peers(accounts["member"], encrypted=True)
    bot = accounts["bot"]
    room = await make_room(admin, member, bot)
    config = write_config(tmp_path / "config", tmp_path / "state.json", room)
    state_dir = tmp_path / "bot-state"

    async with bot_app(hs, bot, room, config, state_dir) as app:
        await app.evaluate()  # the first look remembers the clause
        asked = await member.say(room, "!treaty follow art-24 share")
        pointer = await member.wait_for(room, reply_to(asked))
        assert DIRECT_NOTE in pointer.body  # the answer itself is not in the room

        await until(lambda: bool(member.client.invited_rooms), "the bot invites the member")
        [direct] = list(member.client.invited_rooms)
        await member.join(direct)
        answer = await member.wait_for(direct, notice_with("You now follow Art. 24"))
        assert answer.decrypted  # encrypted, and shared with the invited member's device
        assert app.people.of(Person("matrix", member.user_id)) == (
            Follow("clause", "art-24", "24"),
        )

        await change_clause(app, config, "contested")
        await member.wait_for(room, clause_alert("contested"))
        received = await member.wait_for(direct, clause_alert("contested"))
        assert received.decrypted and content_of(received)["m.mentions"] == {}

        # commands typed in the direct room are answered there
        asked = await member.say(direct, "!treaty following")
        listed = await member.wait_for(direct, reply_to(asked))
        assert "Art. 24 — Safeguards" in listed.body

    # the bot restarts: the follow, the direct room and what was sent are all remembered
    async with bot_app(hs, bot, room, config, state_dir) as app:
        assert app.outbox is not None
        await app.evaluate()
        await app.outbox.deliver_due()
        await change_clause(app, config, "agreed")
        await member.wait_for(direct, clause_alert("agreed"))
        await member.wait_for(room, clause_alert("agreed"))
    assert len(member.seen(direct, clause_alert("contested"))) == 1
    assert len(member.seen(direct, clause_alert("agreed"))) == 1
    assert list(member.client.invited_rooms) == []  # no second room

    token = bot.access_token
    marked = await api(
        hs,
        "GET",
        f"/_matrix/client/v3/user/{quote(bot.user_id)}/account_data/m.direct",
        token=token,
    )
    assert marked == {member.user_id: [direct]}
    encryption = await api(
        hs,
        "GET",
        f"/_matrix/client/v3/rooms/{quote(direct)}/state/m.room.encryption",
        token=member.account.access_token,
    )
    assert encryption["algorithm"] == "m.megolm.v1.aes-sha2"
    create = await api(
        hs,
        "GET",
        f"/_matrix/client/v3/rooms/{quote(direct)}/state/m.room.member/{quote(member.user_id)}",
        token=member.account.access_token,
    )
    assert create["membership"] == "join"


async def test_a_person_who_left_the_direct_room_gets_a_new_one(
    hs: Synapse,  # noqa: F811
    accounts: dict[str, Account],  # noqa: F811
    peers: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    admin = await peers(accounts["admin"])
    member = await peers(accounts["member"], encrypted=True)
    bot = accounts["bot"]
    room = await make_room(admin, member, bot)
    config = write_config(tmp_path / "config", tmp_path / "state.json", room)
    async with bot_app(hs, bot, room, config, tmp_path / "bot-state") as app:
        await app.evaluate()
        asked = await member.say(room, "!treaty follow 24")
        await member.wait_for(room, reply_to(asked))
        await until(lambda: bool(member.client.invited_rooms), "the first direct room")
        [first] = list(member.client.invited_rooms)
        await member.client.room_leave(first)  # declined
        transport = app.transports["matrix"]
        assert isinstance(transport, MatrixTransport)

        def member_left() -> bool:
            rooms = transport._client.rooms if transport._client is not None else {}
            return first in rooms and member.user_id not in rooms[first].users

        await until(member_left, "the bot sees that the member left")
        await change_clause(app, config, "contested")
        await until(lambda: set(member.client.invited_rooms) - {first}, "a second direct room")
        [second] = set(member.client.invited_rooms) - {first}
        await member.join(second)
        await member.wait_for(second, clause_alert("contested"))
