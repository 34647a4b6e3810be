"""One root error for everything the bot raises on purpose.

Each subclass names the resource it is about; ``str(err)`` renders
``message: detail: Cause: cause`` so that a log line or a CLI error says what went wrong, where,
and why, without a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class TreatyBotError(Exception):
    """The root of every error the bot raises on purpose."""

    message: str = "error"

    def __init__(self, detail: str = "", *, resource: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.resource = resource

    def __str__(self) -> str:
        parts = [self.message]
        if self.resource:
            parts.append(self.resource)
        if self.detail:
            parts.append(self.detail)
        text = ": ".join(parts)
        cause = self.__cause__
        if cause is not None:
            text += f": Cause: {type(cause).__name__}: {cause}"
        return text


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem found in a configuration file."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(TreatyBotError):
    """The configuration has problems; ``problems`` lists every one of them."""

    message = "configuration has problems"

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__(f"{len(problems)} problem(s)")
        self.problems = tuple(problems)

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class StoreError(TreatyBotError):
    """The state file cannot be used."""

    message = "state file"


class StoreLocked(StoreError):
    """Another process holds the state file."""

    message = "state file is in use"


class StoreDatabaseError(StoreError):
    """The state database cannot be reached or used (its URL is shown with the password
    masked)."""

    message = "state database"


class LeaseLost(StoreDatabaseError):
    """A replica wrote under leases it no longer holds: the database refused the commit."""

    message = "lease lost"

    def __init__(self, lost: frozenset[str], *, resource: str | None = None) -> None:
        super().__init__(
            "this replica no longer holds " + ", ".join(sorted(lost)) + "; nothing was written",
            resource=resource,
        )
        self.lost = lost


class StoreCorrupt(StoreError):
    """The state file exists but cannot be read; it is never replaced silently."""

    message = "state file is damaged"


class SourceError(TreatyBotError):
    """A feed or calendar could not be fetched or read."""

    message = "source failed"


class DeliveryError(TreatyBotError):
    """An alert could not be delivered.

    ``permanent`` errors (a channel that does not exist, bad credentials) are not retried.
    """

    message = "delivery failed"

    def __init__(
        self, detail: str = "", *, resource: str | None = None, permanent: bool = False
    ) -> None:
        super().__init__(detail, resource=resource)
        self.permanent = permanent


class CommandError(TreatyBotError):
    """A command could not be answered."""

    message = "command failed"
