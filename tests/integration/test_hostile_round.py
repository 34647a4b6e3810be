"""One poll round with every hostile feed and calendar at once (reliability 27, 28, 31, 37).

``treaty-bot once`` runs in a subprocess against two loopback ``FeedServer``s: one serves the
hostile feeds and calendars (entity bombs, external entities, 50 MB, a gzip bomb, an endless
stream, a drip, a response that never comes, an HTML page, junk, errors, a redirect loop, ...),
the other the healthy feeds; hostile and healthy calendars are also read from files in the
configuration directory. The first round only remembers; then the healthy feeds (and the
healthy calendar) gain new items, and the second round must post exactly those, while each
hostile source is marked failing on its own (or, where the bot tolerates it, read within its
bounds with a warning).

The bot's peak resident memory, over its whole process tree (parser workers included: the
wrapper below is made a child subreaper and reaps every descendant), must stay bounded. Wall
time is bounded only by a generous subprocess timeout: nothing here asserts a duration.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.store.tinydb_store import TinyDBStore
from tests.conftest import REPO
from tests.integration.feedserver import MB, FeedServer, gzip_bomb
from tests.test_cli import cli

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="uses prctl and ru_maxrss (KiB)")

NOW = "2026-03-02T09:00Z"
DATA = REPO / "tests" / "data" / "calendars"
SECRET = "SECRET-MARKER-7d41e0"
#: Peak RSS of any one process of the bot (main process or parser worker). The bot normally
#: peaks well under 200 MB here; a body held whole in memory (50 MB, the 256 MB gzip bomb, a
#: billion laughs) would go far beyond.
MAX_RSS = 400 * MB
#: Only turns a hang into a failure; the round itself is bounded by fetch.timeout (3 s).
ROUND_TIMEOUT = 240.0

#: Runs the bot as its child and reports the peak RSS of the whole tree below it: as a child
#: subreaper it inherits (and reaps) orphaned grandchildren such as the fork server and the
#: parser workers, so RUSAGE_CHILDREN covers every process the bot started.
WRAPPER = """
import ctypes, os, resource, subprocess, sys
PR_SET_CHILD_SUBREAPER = 36
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
    sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed")
code = subprocess.call([sys.executable, "-m", "bot", *sys.argv[2:]])
while True:
    try:
        os.waitpid(-1, 0)
    except ChildProcessError:
        break
with open(sys.argv[1], "w") as out:
    out.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""

# ------------------------------------------------------------------------------ bodies


def item(guid: str, title: str) -> str:
    return (
        f"<item><guid>{guid}</guid><title>{title}</title><link>https://e.org/{guid}</link>"
        "<pubDate>Mon, 02 Mar 2026 08:00:00 GMT</pubDate></item>"
    )


def rss(*items: str, prolog: str = '<?xml version="1.0" encoding="utf-8"?>\n') -> bytes:
    return (
        prolog + '<rss version="2.0"><channel><title>T</title><link>https://e.org/</link>'
        "<description>News</description>" + "".join(items) + "</channel></rss>\n"
    ).encode()


OLD = (item("o1", "Cybercrime convention opens for signature"), item("o2", "Weather report"))


def billion_laughs() -> bytes:
    levels = "".join(f'<!ENTITY lol{n} "{f"&lol{n - 1};" * 10}">\n' for n in range(1, 10))
    prolog = '<?xml version="1.0"?>\n<!DOCTYPE rss [\n<!ENTITY lol0 "lol">\n' + levels + "]>\n"
    return rss(item("b1", "Cybercrime &lol9;"), *OLD, prolog=prolog)


def quadratic(*, behind_comment: bool) -> bytes:
    comment = "<!-- <x -->\n" if behind_comment else ""
    prolog = (
        f'<?xml version="1.0"?>\n<!DOCTYPE rss [\n{comment}<!ENTITY a "'
        + "a" * 100_000
        + '">\n]>\n'
    )
    return rss(item("q1", "Cybercrime " + "&a;" * 10_000), *OLD, prolog=prolog)


def external_entity(target: str) -> bytes:
    prolog = f'<?xml version="1.0"?>\n<!DOCTYPE rss [\n<!ENTITY xxe SYSTEM "{target}">\n]>\n'
    return rss(item("x1", "Cybercrime &xxe;"), *OLD, prolog=prolog)


def ics(*events: str) -> str:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//tests//EN\r\n"
        + "".join(events)
        + ("END:VCALENDAR\r\n")
    )


def vevent(uid: str, start: str, *lines: str, summary: str | None = None) -> str:
    extra = "".join(f"{line}\r\n" for line in lines)
    return (
        f"BEGIN:VEVENT\r\nUID:{uid}\r\nSUMMARY:{summary or uid}\r\nDTSTART:{start}\r\n"
        f"{extra}END:VEVENT\r\n"
    )


def many_events(count: int, *, minutes: int, padding: str = "") -> str:
    start = datetime(2026, 2, 10, tzinfo=UTC)
    lines = (f"DESCRIPTION:{padding}",) if padding else ()
    return ics(
        *(
            vevent(
                f"e{n:05d}",
                (start + timedelta(minutes=minutes * n)).strftime("%Y%m%dT%H%M%SZ"),
                *lines,
            )
            for n in range(count)
        )
    )


HEALTHY_ICS_V1 = ics(
    vevent("plenary@test", "20260615T080000Z", "DTEND:20260615T160000Z", summary="Plenary")
)
HEALTHY_ICS_V2 = HEALTHY_ICS_V1.replace(
    "END:VCALENDAR",
    vevent("extra@test", "20260622T080000Z", "DTEND:20260622T160000Z", summary="Extra meeting")
    + "END:VCALENDAR",
)

# ------------------------------------------------------------------------------ sources


@dataclass(frozen=True)
class Source:
    id: str
    url: str
    kind: str  # "feed" or "calendar"
    #: the outcomes a failing source may end in (as the bot logs them); empty: tolerated,
    #: i.e. read within its bounds, never marked failing
    fails_as: frozenset[str] = frozenset()
    #: a tolerated calendar must log a warning saying what it cut or skipped
    warns: bool = False


def failing(*outcomes: str) -> frozenset[str]:
    return frozenset(outcomes)


@dataclass
class Setup:
    config: Path
    state: Path
    hostile: FeedServer
    healthy: FeedServer
    sources: list[Source]

    @property
    def failing_ids(self) -> set[str]:
        return {s.id for s in self.sources if s.fails_as}

    @property
    def tolerated_ids(self) -> set[str]:
        return {s.id for s in self.sources if not s.fails_as}


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    config = tmp_path / "cfg"
    config.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET + "\n")
    state = tmp_path / "state.json"
    with FeedServer() as hostile, FeedServer() as healthy:
        sources: list[Source] = []

        def feed(sid: str, path: str, *outcomes: str, server: FeedServer = hostile) -> None:
            sources.append(Source(sid, server.url(path), "feed", failing(*outcomes)))

        def cal(sid: str, url: str, *outcomes: str, warns: bool = False) -> None:
            sources.append(Source(sid, url, "calendar", failing(*outcomes), warns))

        # healthy feeds, on a host of their own
        healthy.serve("/a.xml", rss(*OLD))
        healthy.serve(
            "/b.json",
            json.dumps(
                {
                    "version": "https://jsonfeed.org/version/1.1",
                    "title": "B",
                    "items": [{"id": "j1", "url": "https://e.org/j1", "title": "Cybercrime j1"}],
                }
            ),
            content_type="application/feed+json",
        )
        healthy.serve("/c.xml", rss(*OLD), etag='"c1"')
        for sid, path in (("good-a", "/a.xml"), ("good-b", "/b.json"), ("good-c", "/c.xml")):
            feed(sid, path, server=healthy)
        # messy but readable: a wrong charset (also gains an item), a truncated document
        latin = rss(*OLD).decode().encode("latin-1")
        hostile.serve("/charset.xml", latin, content_type="application/rss+xml; charset=utf-8")
        feed("charset", "/charset.xml")
        whole = rss(item("t1", "Cybercrime complete"), item("t2", "Cybercrime cut"), *OLD)
        hostile.serve("/truncated.xml", whole[: whole.index(b"Cybercrime cut")])
        feed("truncated", "/truncated.xml")

        # hostile feeds
        hostile.serve("/billion.xml", billion_laughs())
        feed("billion-laughs", "/billion.xml", "parse_error")
        hostile.serve("/quadratic.xml", quadratic(behind_comment=False))
        feed("quadratic", "/quadratic.xml", "parse_error")
        hostile.serve("/quadratic-comment.xml", quadratic(behind_comment=True))
        feed("quadratic-comment", "/quadratic-comment.xml", "parse_error")
        hostile.serve("/xxe-file.xml", external_entity(secret.as_uri()))
        feed("xxe-file", "/xxe-file.xml", "parse_error")
        hostile.serve("/secret.txt", SECRET, content_type="text/plain")
        hostile.serve("/xxe-url.xml", external_entity(hostile.url("/secret.txt")))
        feed("xxe-url", "/xxe-url.xml", "parse_error")
        hostile.huge("/huge.xml")
        feed("huge", "/huge.xml", "too_large")
        hostile.huge("/huge-chunked.xml", content_length=False)
        feed("huge-chunked", "/huge-chunked.xml", "too_large", "timeout")
        gzip_bomb()  # build it before the round, once per process
        hostile.gzip_bomb("/gzip-bomb.xml")
        feed("gzip-bomb", "/gzip-bomb.xml", "too_large", "connection_error", "timeout")
        hostile.endless("/endless.xml")
        feed("endless", "/endless.xml", "too_large", "timeout")
        hostile.drip("/drip.xml", rss(*OLD), interval=0.5)
        feed("drip", "/drip.xml", "timeout")
        hostile.slow("/hanging.xml", rss(*OLD))  # the gate is never opened
        feed("hanging", "/hanging.xml", "timeout")
        hostile.html_page("/html.xml")
        feed("html-200", "/html.xml", "parse_error")
        hostile.serve("/junk.xml", bytes(range(256)) * 64)
        feed("junk", "/junk.xml", "parse_error")
        hostile.serve("/empty.xml", b"")
        feed("empty", "/empty.xml", "parse_error")
        hostile.status("/error.xml", 500, body="Internal Server Error")
        feed("error-500", "/error.xml", "http_error")
        hostile.status("/gone.xml", 404)
        feed("error-404", "/gone.xml", "http_error")
        hostile.redirect("/loop.xml", hostile.url("/loop.xml"))
        feed("redirect-loop", "/loop.xml", "http_error")

        # a healthy calendar (a file beside the config) and hostile ones, as files and over HTTP
        (config / "healthy.ics").write_text(HEALTHY_ICS_V1)
        cal("good-cal", "healthy.ics")
        (config / "secondly.ics").write_text(
            ics(vevent("every-second", "20260220T000000Z", "RRULE:FREQ=SECONDLY"))
        )
        cal("secondly", "secondly.ics", warns=True)
        hostile.serve(
            "/million.ics",
            ics(vevent("minutely", "20260220T000000Z", "RRULE:FREQ=MINUTELY;COUNT=1000000")),
            content_type="text/calendar",
        )
        cal("count-million", hostile.url("/million.ics"), warns=True)
        (config / "ten-thousand.ics").write_text(many_events(10_000, minutes=47))
        cal("ten-thousand", "ten-thousand.ics", warns=True)
        shutil.copy(DATA / "broken_events.ics", config / "broken.ics")
        cal("broken-events", "broken.ics", warns=True)
        shutil.copy(DATA / "custom_vtimezone.ics", config / "vtimezone.ics")
        cal("hostile-vtimezone", "vtimezone.ics", warns=True)
        twenty = many_events(19_000, minutes=3, padding="x" * 1000)
        assert len(twenty) > 20_000_000
        (config / "twenty-mb.ics").write_text(twenty)
        cal("twenty-mb-file", "twenty-mb.ics", "http_error")  # a file over fetch.max_bytes
        hostile.serve("/twenty-mb.ics", twenty, content_type="text/calendar")
        cal("twenty-mb-http", hostile.url("/twenty-mb.ics"), "too_large")
        shutil.copy(DATA / "html_page.ics", config / "html.ics")
        cal("html-cal", "html.ics", "parse_error")
        hostile.endless("/endless.ics", content_type="text/calendar")
        cal("endless-cal", hostile.url("/endless.ics"), "too_large", "timeout")
        hostile.drip("/drip.ics", HEALTHY_ICS_V1, interval=0.5, content_type="text/calendar")
        cal("drip-cal", hostile.url("/drip.ics"), "timeout")
        cal("missing-file", "missing.ics", "http_error")

        write_config(config, state, sources)
        yield Setup(config, state, hostile, healthy, sources)


def write_config(config: Path, state: Path, sources: list[Source]) -> None:
    (config / "bot.yaml").write_text(
        textwrap.dedent(
            f"""
            timezone: Europe/Vienna
            storage: {state}
            channels:
              alerts: {{}}
              ops: {{}}
            http: {{port: 0}}
            fetch: {{timeout: 3s}}
            """
        )
    )
    feeds = [s for s in sources if s.kind == "feed"]
    calendars = [s for s in sources if s.kind == "calendar"]
    (config / "feeds.yaml").write_text(
        "defaults: {every: 15m, channels: [alerts], match: [cybercrime], "
        "failures_before_alert: 1}\nfeeds:\n"
        + "".join(f'  - {{id: {s.id}, url: "{s.url}"}}\n' for s in feeds)
    )
    (config / "sessions.yaml").write_text(
        ("calendars:\n" if calendars else "calendars: []\n")
        + "".join(
            f'  - {{id: {s.id}, url: "{s.url}", every: 1h, channels: [alerts], '
            "failures_before_alert: 1}\n"
            for s in calendars
        )
    )


# ------------------------------------------------------------------------------ running


@dataclass
class Round:
    alerts: list[dict[str, object]]
    stderr: str
    max_rss: int  # bytes

    def failures(self) -> dict[str, list[str]]:
        """Outcome of every ``poll failed`` log line, by source."""
        found: dict[str, list[str]] = {}
        for m in re.finditer(r"poll failed source=(\S+) outcome=(\S+)", self.stderr):
            found.setdefault(m.group(1), []).append(m.group(2))
        return found

    def warned(self) -> set[str]:
        return set(re.findall(r"calendar event skipped source=(\S+)", self.stderr))


def once(setup: Setup, tmp_path: Path) -> Round:
    rss_file = tmp_path / "maxrss"
    rss_file.unlink(missing_ok=True)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "MATRIX_", "TREATY_BOT"))
    }
    args = ["once", "--config", str(setup.config), "--format", "jsonl", "--now", NOW]
    with subprocess.Popen(
        [sys.executable, "-c", WRAPPER, str(rss_file), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
        start_new_session=True,  # so that a hang can be ended with its whole process group
    ) as proc:
        try:
            out, err = proc.communicate(timeout=ROUND_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"the round did not finish within {ROUND_TIMEOUT:g}s:\n{err[-4000:]}")
    assert proc.returncode == 0, err[-4000:]
    alerts = [json.loads(line) for line in out.splitlines() if line.strip()]
    return Round(alerts, err, int(rss_file.read_text()) * 1024)


def test_hostile_sources_fail_alone_and_healthy_ones_post_in_the_same_round(
    setup: Setup, tmp_path: Path
) -> None:
    failing_ids = setup.failing_ids
    tolerated_ids = setup.tolerated_ids
    expected_outcomes = {s.id: s.fails_as for s in setup.sources if s.fails_as}

    # round 1: every source is new, so nothing is news; each failing source is reported once
    first = once(setup, tmp_path)

    assert first.max_rss < MAX_RSS, f"peak RSS {first.max_rss / MB:.0f} MB"
    assert {a["kind"] for a in first.alerts} <= {"source-health"}, first.alerts
    health_alerts = Counter(str(a["source"]) for a in first.alerts)
    assert set(health_alerts) == failing_ids
    assert set(health_alerts.values()) == {1}
    assert {a["channel"] for a in first.alerts} == {"ops"}
    failures = first.failures()
    assert set(failures) == failing_ids, first.stderr[-4000:]
    for sid, outcomes in failures.items():
        assert len(outcomes) == 1 and outcomes[0] in expected_outcomes[sid], (sid, outcomes)
    warned = {s.id for s in setup.sources if s.warns}
    assert warned <= first.warned()

    # the healthy feeds and the healthy calendar gain items; the hostile ones stay as they are
    setup.healthy.serve("/a.xml", rss(item("a3", "New cybercrime protocol text"), *OLD))
    setup.healthy.serve(
        "/b.json",
        json.dumps(
            {
                "version": "https://jsonfeed.org/version/1.1",
                "title": "B",
                "items": [
                    {"id": "j2", "url": "https://e.org/j2", "title": "Cybercrime j2"},
                    {"id": "j1", "url": "https://e.org/j1", "title": "Cybercrime j1"},
                ],
            }
        ),
        content_type="application/feed+json",
    )
    setup.healthy.serve(
        "/c.xml", rss(item("c3", "Cybercrime treaty ratified"), item("c4", "Sports"), *OLD)
    )
    setup.hostile.serve(
        "/charset.xml",
        rss(item("w3", "Cybercrime: délégués réunis"), *OLD).decode().encode("latin-1"),
        content_type="application/rss+xml; charset=utf-8",
    )
    (setup.config / "healthy.ics").write_text(HEALTHY_ICS_V2)

    second = once(setup, tmp_path)

    assert second.max_rss < MAX_RSS, f"peak RSS {second.max_rss / MB:.0f} MB"
    posted = sorted((str(a["kind"]), str(a["source"]), str(a["title"])) for a in second.alerts)
    assert posted == [
        ("news", "charset", "Cybercrime: délégués réunis"),
        ("news", "good-a", "New cybercrime protocol text"),
        ("news", "good-b", "Cybercrime j2"),
        ("news", "good-c", "Cybercrime treaty ratified"),
        ("session-change", "good-cal", "Session added: Extra meeting"),
    ]
    failures = second.failures()
    assert set(failures) == failing_ids, second.stderr[-4000:]
    for sid, outcomes in failures.items():
        assert len(outcomes) == 1 and outcomes[0] in expected_outcomes[sid], (sid, outcomes)

    # each source's own health is on disk: two failures in a row for each hostile source,
    # none for the others
    store = TinyDBStore(str(setup.state), read_only=True)
    try:
        healths = store.healths()
    finally:
        store.close()
    for sid in failing_ids:
        health = healths[sid]
        assert health.failures == 2 and health.alerted, (sid, health)
        assert health.last_error and health.last_success is None, (sid, health)
    for sid in tolerated_ids:
        assert sid in healths, sid
        assert healths[sid].failures == 0, (sid, healths[sid])
        assert healths[sid].last_success is not None, (sid, healths[sid])

    # no external entity was read or fetched
    everything = first.stderr + second.stderr + json.dumps(first.alerts + second.alerts)
    for path in (setup.state, *setup.state.parent.glob("state.json*")):
        if path.is_file():
            everything += path.read_text(errors="replace")
    assert SECRET not in everything
    assert setup.hostile.requests_to("/secret.txt") == []


def test_an_item_dated_in_year_9999_holds_back_no_other_feed(tmp_path: Path) -> None:
    config = tmp_path / "cfg"
    config.mkdir()
    with FeedServer() as server:
        server.serve("/dated.xml", rss(*OLD))
        server.serve("/good.xml", rss(*OLD))
        write_config(
            config,
            tmp_path / "state.json",
            [
                Source("dated", server.url("/dated.xml"), "feed"),
                Source("good", server.url("/good.xml"), "feed"),
            ],
        )
        first = cli("once", "--config", str(config), "--format", "jsonl", "--now", NOW)
        assert first.returncode == 0, first.stderr
        far = item("f1", "Cybercrime far ahead").replace(
            "Mon, 02 Mar 2026 08:00:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT"
        )
        server.serve("/dated.xml", rss(far, *OLD))
        server.serve("/good.xml", rss(item("g1", "Cybercrime good news"), *OLD))

        second = cli("once", "--config", str(config), "--format", "jsonl", "--now", NOW)

    assert second.returncode == 0, second.stderr[-2000:]
    titles = [json.loads(line)["title"] for line in second.stdout.splitlines() if line.strip()]
    assert "Cybercrime good news" in titles
