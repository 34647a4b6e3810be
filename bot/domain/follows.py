"""Personal follows: what a person asked to hear about directly, and which alerts match.

A person (a platform and its user id) follows at most ``MAX_FOLLOWS`` things, each one of:

- a **clause** (``follow art-24``): its clause-change alerts, and news whose text names the
  article ("article 24", "Art. 24", "arts. 24");
- a **state** (``follow germany``): treaty-action alerts about it (``Alert.subjects``), and
  news that mentions one of its names ("Germany"; "United States of America", "US", "U.S.");
- **words** (``follow "data protection"``): any alert whose title or text holds them, as whole
  words, whatever their case.

Source-health alerts never go to people. A match is sent to the person directly, on the
logical channel ``dm:<user id>`` of their platform (``Person.channel``); such channels are
never held for a digest or quiet hours.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from bot.domain.countries import OTHER_NAMES, clean_name, name_key
from bot.domain.model import Alert, ChannelName

#: Logical channels of one person start with this, then the platform's user id.
DM_PREFIX = "dm:"
#: How many things one person may follow.
MAX_FOLLOWS = 50
#: The longest words one may follow.
MAX_WORDS = 100
#: Who follows on the console (which has no user id of its own).
CONSOLE_USER = "console"

FollowKind = Literal["clause", "state", "words"]
FOLLOW_KINDS: tuple[FollowKind, ...] = ("clause", "state", "words")


def dm_channel(user: str) -> ChannelName:
    """The logical channel of ``user``'s direct messages."""
    return ChannelName(DM_PREFIX + user)


def dm_user(channel: str) -> str | None:
    """The user of a ``dm:`` channel, or ``None`` for any other channel."""
    if channel.startswith(DM_PREFIX) and len(channel) > len(DM_PREFIX):
        return channel[len(DM_PREFIX) :]
    return None


@dataclass(frozen=True, slots=True)
class Person:
    """Someone who follows things: their platform (``slack``, ``matrix``, ``console``) and
    that platform's user id."""

    platform: str
    user: str

    @property
    def channel(self) -> ChannelName:
        return dm_channel(self.user)


@dataclass(frozen=True, slots=True)
class Follow:
    """One thing a person follows.

    ``value`` is the clause id, the state's name as the depositary writes it, or the words as
    typed (spaces collapsed); ``article`` is a clause's article, for news that names it.
    """

    kind: FollowKind
    value: str
    article: str = ""

    @property
    def key(self) -> str:
        """What names this follow in ``unfollow KEY`` and on buttons: ``clause:art-24``."""
        return f"{self.kind}:{self.value}"

    def same(self, other: Follow) -> bool:
        """Whether both follow the same thing (case and spacing aside)."""
        return self.kind == other.kind and _identity(self) == _identity(other)


def _identity(follow: Follow) -> str:
    if follow.kind == "state":
        return name_key(follow.value)
    return " ".join(follow.value.casefold().split())


def add_follow(follows: Sequence[Follow], follow: Follow) -> tuple[Follow, ...]:
    """``follows`` with ``follow`` at the end, unless it is there already."""
    if any(f.same(follow) for f in follows):
        return tuple(follows)
    return (*follows, follow)


def remove_follow(follows: Sequence[Follow], follow: Follow) -> tuple[Follow, ...]:
    return tuple(f for f in follows if not f.same(follow))


# ------------------------------------------------------------------------------- matching


def fold(text: str) -> str:
    """Accents dropped (``Türkiye`` -> ``Turkiye``), case kept: what names are matched in."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


_ACRONYM = re.compile(r"^(?:[A-Z]\.?){2,5}$")


@functools.lru_cache(maxsize=4096)
def words_pattern(words: str) -> re.Pattern[str]:
    """``words`` as whole words, any case, any spacing between them."""
    parts = [re.escape(w) for w in fold(words).split()]
    return re.compile(r"(?<!\w)" + r"\s+".join(parts) + r"(?!\w)", re.IGNORECASE)


@functools.lru_cache(maxsize=4096)
def _name_pattern(name: str) -> re.Pattern[str] | None:
    """One name of a state as it may appear in a text. Acronyms (``US``, ``U.K.``) only in
    capitals, with or without dots, so that "us" is not the United States."""
    name = fold(name).strip()
    if _ACRONYM.match(name):
        letters = [c for c in name if c.isalpha()]
        return re.compile(r"(?<![\w.])" + r"\.?".join(letters) + r"\.?(?!\w)")
    parts = re.findall(r"\w+", name)
    if not parts:
        return None
    return re.compile(r"(?<!\w)" + r"\W+".join(parts) + r"(?!\w)", re.IGNORECASE)


_OFFICIAL = {name_key(official): official for official in OTHER_NAMES}


def state_names(state: str) -> tuple[str, ...]:
    """The names a text may use for ``state``: the depositary's (without footnote marks or a
    parenthesis: "Iran (Islamic Republic of)" is also "Iran") and the other known names."""
    names = [clean_name(state)]
    official = _OFFICIAL.get(name_key(state))
    if official is not None:
        names.extend((official, *OTHER_NAMES[official]))
    names.extend(n.split("(", 1)[0].strip() for n in list(names) if "(" in n)
    return tuple(dict.fromkeys(n for n in names if n))


#: Places whose names hold a state's name without being that state.
LONGER_NAMES = (
    "Latin America",
    "South America",
    "North America",
    "Central America",
    "American Samoa",
    "Equatorial Guinea",
    "Guinea-Bissau",
    "Papua New Guinea",
    "South Sudan",
    "Northern Ireland",
)


@functools.lru_cache(maxsize=1024)
def _masks(state: str) -> tuple[re.Pattern[str], ...]:
    """The names of other states and places that hold one of ``state``'s names ("North
    Korea" holds "Korea"): blanked out of a text before ``state``'s names are looked for."""
    key = name_key(state)
    own = [p for n in state_names(state) if (p := _name_pattern(n)) is not None]
    longer = [
        n
        for official, others in OTHER_NAMES.items()
        if name_key(official) != key
        for n in (official, *others)
    ]
    found = []
    for name in (*longer, *LONGER_NAMES):
        folded = fold(name)
        if any(p.search(folded) for p in own) and (mask := _name_pattern(name)) is not None:
            found.append(mask)
    return tuple(found)


def known_state(name: str) -> str | None:
    """The state ``name`` is a well-known name of (``US``, ``Turkey``), as the depositary
    writes it, or ``None``."""
    return _OFFICIAL.get(name_key(name))


_ARTICLE_WORD = r"(?<!\w)(?:articles?|arts?)\.?\s*"


@functools.lru_cache(maxsize=1024)
def article_pattern(article: str) -> re.Pattern[str] | None:
    """How a text names the article (``24``; a range ``45-46`` by any number in it)."""
    numbers = [int(n) for n in re.findall(r"\d+", article)]
    if not numbers:
        return None
    if len(numbers) == 2 and "-" in article.replace("–", "-") and numbers[0] < numbers[1]:
        wanted = [str(n) for n in range(numbers[0], min(numbers[1], numbers[0] + 50) + 1)]
    else:
        wanted = [str(numbers[0])]
    return re.compile(_ARTICLE_WORD + "(?:" + "|".join(wanted) + r")(?!\d)", re.IGNORECASE)


def _haystack(alert: Alert) -> str:
    return fold(alert.title + "\n" + alert.text)


def matches(follow: Follow, alert: Alert) -> bool:
    """Whether ``alert`` is about what ``follow`` follows (see the module docstring)."""
    if alert.kind == "source-health":
        return False
    if follow.kind == "clause":
        if alert.kind == "clause-change":
            return alert.source.casefold() == follow.value.casefold()
        pattern = article_pattern(follow.article) if alert.kind == "news" else None
        return pattern is not None and pattern.search(_haystack(alert)) is not None
    if follow.kind == "state":
        if alert.kind == "treaty-action":
            key = name_key(follow.value)
            return any(name_key(s) == key for s in alert.subjects)
        if alert.kind != "news":
            return False
        text = _haystack(alert)
        for mask in _masks(follow.value):
            text = mask.sub(" ", text)
        for name in state_names(follow.value):
            pattern = _name_pattern(name)
            if pattern is not None and pattern.search(text):
                return True
        return False
    return words_pattern(follow.value).search(_haystack(alert)) is not None


def followers(alert: Alert, follows: Mapping[Person, Sequence[Follow]]) -> list[Person]:
    """The people who follow something ``alert`` is about, each once."""
    if alert.kind == "source-health":
        return []
    return [p for p, theirs in follows.items() if any(matches(f, alert) for f in theirs)]
