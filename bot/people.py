"""The people who follow things: each one's list, kept in the store and in memory.

The store holds the lists (they survive restarts and reloads); a copy in memory lets every
queued alert be matched without a read. Changes are made one at a time, so two commands of
the same person cannot undo each other: a change computed from a list that has changed
meanwhile is computed again from the stored one before it is saved.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from bot.domain.commands import Reply
from bot.domain.follows import CONSOLE_USER, Follow, Person
from bot.store.base import Changes
from bot.store.runner import AsyncStore
from bot.transports.base import Inbound


def person_of(inbound: Inbound) -> Person:
    """Who asked: their platform and user id (the console's typist is ``console``)."""
    user = inbound.user or (CONSOLE_USER if inbound.platform == "console" else "")
    return Person(inbound.platform, user)


class FollowBook:
    """What every person follows (see the module docstring)."""

    def __init__(self) -> None:
        self._store: AsyncStore | None = None
        self._lists: dict[Person, tuple[Follow, ...]] = {}
        self._lock = asyncio.Lock()

    async def load(self, store: AsyncStore) -> None:
        """Read every list from ``store``, which keeps every later change."""
        self._store = store
        self._lists = await store.follows()

    def of(self, person: Person) -> tuple[Follow, ...]:
        return self._lists.get(person, ())

    def everyone(self) -> Mapping[Person, tuple[Follow, ...]]:
        """Every person who follows something, and what (a copy)."""
        return dict(self._lists)

    async def settle(
        self,
        person: Person,
        seen: tuple[Follow, ...],
        reply: Reply,
        again: Callable[[tuple[Follow, ...]], Reply],
        *,
        save: bool = True,
    ) -> Reply:
        """Store the change a ``follows`` reply carries, computed from ``seen``; if the stored
        list is no longer ``seen``, the reply is computed ``again`` from it first."""
        async with self._lock:
            current = self.of(person)
            if current != seen:
                reply = again(current)
            if reply.action != "follows" or reply.follows is None or not person.user:
                return reply
            if save:
                if self._store is None:
                    raise RuntimeError("FollowBook used before load()")
                await self._store.commit(Changes(follows={person: reply.follows}))
            if reply.follows:
                self._lists[person] = reply.follows
            else:
                self._lists.pop(person, None)
            return reply
