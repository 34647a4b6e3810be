"""Read ``config/*.yaml`` keeping line marks, validate, and report every problem at once."""

from __future__ import annotations

import difflib
import os
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from bot.configuration.models import (
    DEPOSITARY_SOURCE,
    BotFile,
    ClausesFile,
    Config,
    FeedsFile,
    SessionsFile,
    TreatyFile,
    parse_when,
    resolve_calendars,
    resolve_depositary,
    resolve_feeds,
)
from bot.domain.durations import format_duration
from bot.errors import ConfigError, Problem

FILES: dict[str, type[BaseModel]] = {
    "bot.yaml": BotFile,
    "feeds.yaml": FeedsFile,
    "sessions.yaml": SessionsFile,
    "clauses.yaml": ClausesFile,
    "treaty.yaml": TreatyFile,
}
_PLAIN_TAG = "tag:yaml.org,2002:"
_ALLOWED_TAGS = {
    _PLAIN_TAG + t for t in ("map", "seq", "str", "int", "float", "bool", "null", "timestamp")
}

M = TypeVar("M", bound=BaseModel)

#: The reader of the fast path: YAML 1.2 like the full one, with libyaml's C parser when
#: ruamel.yaml.clib is installed, plain data only (no tags but the standard ones).
_FAST = YAML(typ="safe", pure=False)
_FAST.allow_duplicate_keys = False


class _Document:
    """One YAML file: its parsed tree (with marks) and a way to find a key path's line."""

    def __init__(self, name: str, tree: Any) -> None:
        self.name = name
        self.tree = tree

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        node = self.tree
        line: int | None = 1
        for part in loc:
            if isinstance(node, CommentedMap) and part in node:
                line = node.lc.key(part)[0] + 1
                node = node[part]
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
                line = node.lc.item(part)[0] + 1
                node = node[part]
            else:
                continue  # a schema-only part of the location (a union member) or a missing key
        return line

    def node_at(self, loc: Sequence[str | int]) -> Any:
        node = self.tree
        for part in loc:
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                node = node[part]
            else:
                return None
        return node


def _parse(path: Path) -> tuple[Any, list[Problem]]:
    name = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        return None, [Problem(name, None, "", f"not UTF-8 text: {err.reason} at byte {err.start}")]
    except OSError as err:
        return None, [Problem(name, None, "", f"cannot read: {err.strerror}")]
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        tree = yaml.load(text)
    except MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else None
        what = " ".join(str(p) for p in (err.context, err.problem) if p)
        if "found character '\\t'" in what:
            what = "a tab character; YAML indentation must use spaces"
        return None, [Problem(name, line, "", f"YAML syntax error: {what}")]
    except YAMLError as err:
        return None, [Problem(name, None, "", f"YAML error: {err}")]
    problems = list(_check_tags(name, tree, ()))
    if tree is None:
        tree = CommentedMap()
    if not isinstance(tree, Mapping):
        problems.append(Problem(name, 1, "", "the file must be a mapping of keys to values"))
        return None, problems
    return tree, problems


def _check_tags(name: str, node: Any, loc: tuple[str | int, ...]) -> Iterator[Problem]:
    tag = getattr(node, "tag", None)
    value = getattr(tag, "value", None) if tag is not None else None
    if isinstance(value, str) and value not in _ALLOWED_TAGS:
        shown = value.replace(_PLAIN_TAG, "!!")
        yield Problem(name, None, _dotted(loc), f"YAML tag {shown} is not allowed")
    if isinstance(node, bytes):
        yield Problem(name, None, _dotted(loc), "binary values are not allowed (no YAML tags)")
    if isinstance(node, Mapping):
        for k, v in node.items():
            yield from _check_tags(name, v, (*loc, str(k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _check_tags(name, v, (*loc, i))


def _with_line(doc: _Document, problem: Problem) -> Problem:
    if problem.line is not None or not problem.path:
        return problem
    loc: list[str | int] = []
    for piece in problem.path.replace("[", ".[").split("."):
        if piece.startswith("["):
            loc.append(int(piece[1:-1]))
        elif piece:
            loc.append(piece)
    return Problem(problem.file, doc.line_of(loc), problem.path, problem.message)


def _dotted(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _model_fields(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The keys allowed at ``loc`` (for "did you mean" suggestions)."""
    current: Any = model
    named_keys = False  # the next part is a key of a map (a channel's name), not a field
    for part in loc:
        if isinstance(part, int):
            continue
        if named_keys:
            named_keys = False
            continue
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(part) or next(
                (f for f in current.model_fields.values() if f.alias == part), None
            )
            if field is None:
                return []
            named_keys = typing.get_origin(field.annotation) is dict
            current = _inner_model(field.annotation)
        else:
            return []
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or name for name, f in current.model_fields.items()]
    return []


def _inner_model(annotation: Any) -> Any:
    stack = [annotation]
    while stack:
        item = stack.pop()
        if isinstance(item, type) and issubclass(item, BaseModel):
            return item
        stack.extend(getattr(item, "__args__", ()))
    return None


def _validate(doc: _Document, model: type[M]) -> tuple[M | None, list[Problem]]:
    try:
        return model.model_validate(doc.tree), []
    except ValidationError as err:
        problems = []
        seen: set[tuple[str, str]] = set()
        for e in err.errors():
            loc = _clean_loc(doc, e["loc"])
            path = _dotted(loc)
            kind = e["type"]
            if kind == "extra_forbidden":
                key = str(loc[-1])
                allowed = _model_fields(model, loc[:-1])
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                message = f"unknown key {key!r}{hint}"
            elif kind == "missing":
                message = "required key is missing"
            else:
                message = str(e["msg"]).removeprefix("Value error, ")
                value = doc.node_at(loc)
                if kind == "literal_error" and value is not None:
                    message = f"{value!r} is not allowed: {message.lower()}"
            if (path, message) in seen:
                continue
            seen.add((path, message))
            problems.append(Problem(doc.name, doc.line_of(loc), path, message))
        return None, problems


def _clean_loc(doc: _Document, loc: Sequence[Any]) -> list[str | int]:
    """Drop the parts of a validation location that name schema types, not data keys."""
    out: list[str | int] = []
    node: Any = doc.tree
    for part in loc:
        if (isinstance(node, Mapping) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and part < len(node)
        ):
            out.append(part)
            node = node[part]
        elif isinstance(node, Mapping) and isinstance(part, str) and not _looks_like_type(part):
            out.append(part)  # a missing or unknown key: still part of the path
            node = None
    return out


def _looks_like_type(part: str) -> bool:
    return "[" in part or part in {"str", "int", "date", "datetime", "function-after", "list"}


def _cross_check(
    docs: Mapping[str, _Document],
    bot: BotFile | None,
    feeds: FeedsFile | None,
    sessions: SessionsFile | None,
    clauses: ClausesFile | None,
) -> list[Problem]:
    problems: list[Problem] = []
    models_ok_bot = bot is not None or isinstance(docs["bot.yaml"].tree.get("channels"), Mapping)
    bot_tree = docs["bot.yaml"].tree
    raw_channels = bot_tree.get("channels") if isinstance(bot_tree, Mapping) else None
    defined = set(raw_channels) if isinstance(raw_channels, Mapping) else set()

    def raw(file: str, *loc: str | int) -> Any:
        return docs[file].node_at(loc)

    def items(file: str, section: str) -> list[Any]:
        value = raw(file, section)
        return list(value) if isinstance(value, list) else []

    def channel_refs() -> Iterator[tuple[str, list[str | int], Any]]:
        reminders = raw("bot.yaml", "reminders", "channels")
        if reminders is None and (
            items("sessions.yaml", "sessions") or items("sessions.yaml", "calendars")
        ):
            reminders = ["alerts"]  # the default applies: it must exist too
        yield "bot.yaml", ["reminders", "channels"], reminders
        defaults = raw("feeds.yaml", "defaults", "channels")
        if defaults is None and any(
            isinstance(f, Mapping) and "channels" not in f for f in items("feeds.yaml", "feeds")
        ):
            defaults = ["alerts"]
        yield "feeds.yaml", ["defaults", "channels"], defaults
        clause_channels = raw("clauses.yaml", "channels")
        if clause_channels is None and items("clauses.yaml", "clauses"):
            clause_channels = ["alerts"]
        yield "clauses.yaml", ["channels"], clause_channels
        depositary = raw("treaty.yaml", "depositary")
        if isinstance(depositary, Mapping):
            yield "treaty.yaml", ["depositary", "channels"], depositary.get("channels", ["alerts"])
        for file, section in (
            ("feeds.yaml", "feeds"),
            ("sessions.yaml", "calendars"),
            ("sessions.yaml", "sessions"),
        ):
            for i, _ in enumerate(items(file, section)):
                yield file, [section, i, "channels"], raw(file, section, i, "channels")

    if models_ok_bot:
        for file, loc, names in channel_refs():
            if not isinstance(names, list):
                continue
            for j, name in enumerate(names):
                if isinstance(name, str) and name not in defined:
                    doc = docs[file]
                    where = [*loc, j]
                    known = ", ".join(sorted(defined)) or "none"
                    problems.append(
                        Problem(
                            file,
                            doc.line_of(where),
                            _dotted(where),
                            f"channel {name!r} is not defined in bot.yaml channels "
                            f"(defined: {known})",
                        )
                    )

    def duplicates(file: str, section: str, ids: list[Any], seen: dict[str, str]) -> None:
        for i, ident in enumerate(ids):
            if not isinstance(ident, str):
                continue
            if ident in seen:
                loc: list[str | int] = [section, i, "id"]
                problems.append(
                    Problem(
                        file,
                        docs[file].line_of(loc),
                        _dotted(loc),
                        f"duplicate id {ident!r} (already used in {seen[ident]})",
                    )
                )
            else:
                seen[ident] = f"{file} {section}"

    def ids(file: str, section: str) -> list[Any]:
        return [e.get("id") if isinstance(e, Mapping) else None for e in items(file, section)]

    if feeds is not None:
        for i, f in enumerate(feeds.feeds):
            every = f.every if f.every is not None else feeds.defaults.every
            ceiling = f.every_max if f.every_max is not None else feeds.defaults.every_max
            if ceiling is not None and ceiling < every:
                key = "every_max" if f.every_max is not None else "every"
                at: list[str | int] = ["feeds", i, key]
                problems.append(
                    Problem(
                        "feeds.yaml",
                        docs["feeds.yaml"].line_of(at),
                        _dotted(at),
                        f"every_max ({format_duration(ceiling)}) is shorter than every "
                        f"({format_duration(every)}): adaptive polling stretches the interval "
                        "from every up to every_max",
                    )
                )
    source_ids: dict[str, str] = {}
    duplicates("feeds.yaml", "feeds", ids("feeds.yaml", "feeds"), source_ids)
    duplicates("sessions.yaml", "calendars", ids("sessions.yaml", "calendars"), source_ids)
    duplicates("sessions.yaml", "sessions", ids("sessions.yaml", "sessions"), {})
    if isinstance(raw("treaty.yaml", "depositary"), Mapping):
        for file, section in (("feeds.yaml", "feeds"), ("sessions.yaml", "calendars")):
            for i, ident in enumerate(ids(file, section)):
                if ident == DEPOSITARY_SOURCE:
                    loc = [section, i, "id"]
                    problems.append(
                        Problem(
                            file,
                            docs[file].line_of(loc),
                            _dotted(loc),
                            f"the id {ident!r} is taken by the depositary source of treaty.yaml",
                        )
                    )
    duplicates("clauses.yaml", "clauses", ids("clauses.yaml", "clauses"), {})
    if sessions is not None:
        tz = ZoneInfo(bot.timezone) if bot is not None else ZoneInfo("UTC")
        for i, s in enumerate(sessions.sessions):
            stz = ZoneInfo(s.timezone) if s.timezone else tz
            start = end = None
            for key in ("start", "end"):
                value = getattr(s, key)
                if value is None:
                    continue
                loc = ["sessions", i, key]
                try:
                    when, _ = parse_when(value, stz)
                except ValueError as err:
                    problems.append(
                        Problem(
                            "sessions.yaml",
                            docs["sessions.yaml"].line_of(loc),
                            _dotted(loc),
                            str(err),
                        )
                    )
                    continue
                if key == "start":
                    start = when
                else:
                    end = when
            if start is not None and end is not None and end < start:
                loc = ["sessions", i, "end"]
                problems.append(
                    Problem(
                        "sessions.yaml",
                        docs["sessions.yaml"].line_of(loc),
                        _dotted(loc),
                        "end is before start",
                    )
                )
    if bot is not None and bot.slack.mode == "http" and bot.http.port == 0:
        loc = ["http", "port"]
        problems.append(
            Problem(
                "bot.yaml",
                docs["bot.yaml"].line_of(loc),
                _dotted(loc),
                "Slack http mode needs the HTTP server: set a port (Slack calls /slack/events)",
            )
        )
    return problems


def load_config(directory: str | os.PathLike[str]) -> Config:
    """Load and validate every file of ``directory``; raise ``ConfigError`` listing all problems.

    A missing file means an empty section, except ``bot.yaml``, which is required.

    Valid files are read once with the C parser, without line marks (ten times faster on a
    thousand feeds); at the first problem of any kind they are read again keeping every mark,
    so that each problem is reported at its line.
    """
    root = Path(directory)
    if not root.is_dir():
        raise ConfigError([Problem(str(root), None, "", "configuration directory not found")])
    fast = _load(root, _parse_fast)
    if isinstance(fast, Config):
        return fast
    slow = _load(root, _parse)
    if isinstance(slow, Config):  # what only the full reader accepts (a UTF-8 BOM, say)
        return slow
    raise ConfigError(slow)


def _parse_fast(path: Path) -> tuple[Any, list[Problem]]:
    """The plain data of a file, or a problem (without detail: the full reader will say)."""
    try:
        tree = _FAST.load(path.read_bytes())
    except Exception:  # any doubt sends the file to the full reader
        return None, [Problem(path.name, None, "", "unreadable")]
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        return None, [Problem(path.name, None, "", "not a mapping")]
    return tree, []


def _load(root: Path, parse: Callable[[Path], tuple[Any, list[Problem]]]) -> Config | list[Problem]:
    problems: list[Problem] = []
    docs: dict[str, _Document] = {}
    models: dict[str, BaseModel | None] = {}
    for name, model in FILES.items():
        path = root / name
        if not path.exists():
            if name == "bot.yaml":
                problems.append(Problem(name, None, "", f"required file is missing in {root}"))
                models[name] = None
            else:
                models[name] = model()
            docs[name] = _Document(name, CommentedMap())
            continue
        tree, found = parse(path)
        docs[name] = _Document(name, tree if tree is not None else CommentedMap())
        problems.extend(_with_line(docs[name], p) for p in found)
        if tree is None:
            models[name] = None
            continue
        value, found = _validate(docs[name], model)
        problems.extend(found)
        models[name] = value
    bot = models["bot.yaml"]
    feeds = models["feeds.yaml"]
    sessions = models["sessions.yaml"]
    clauses = models["clauses.yaml"]
    treaty = models["treaty.yaml"]
    assert treaty is None or isinstance(treaty, TreatyFile)
    assert bot is None or isinstance(bot, BotFile)
    assert feeds is None or isinstance(feeds, FeedsFile)
    assert sessions is None or isinstance(sessions, SessionsFile)
    assert clauses is None or isinstance(clauses, ClausesFile)
    problems.extend(_cross_check(docs, bot, feeds, sessions, clauses))
    if (
        problems
        or bot is None
        or feeds is None
        or sessions is None
        or clauses is None
        or treaty is None
    ):
        problems.sort(
            key=lambda p: (list(FILES).index(p.file) if p.file in FILES else 9, p.line or 0)
        )
        return problems
    return Config(
        directory=str(root),
        bot=bot,
        feeds_file=feeds,
        sessions_file=sessions,
        clauses_file=clauses,
        feeds=resolve_feeds(feeds),
        calendars=resolve_calendars(sessions, str(root)),
        treaty_file=treaty,
        depositary=resolve_depositary(treaty, str(root)),
    )
