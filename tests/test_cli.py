"""`treaty-bot` through a subprocess, against feeds served over loopback HTTP."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import REPO

SPEC_KEYS = {"kind", "id", "channel", "source", "title", "url", "text", "at"}


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def www(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A static HTTP server on loopback serving a directory (with Last-Modified/304)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def publish(path: Path, text: str) -> None:
    """Write a feed file with a modification time later than before (HTTP dates have 1 s steps)."""
    previous = path.stat().st_mtime if path.exists() else 0.0
    path.write_text(text)
    later = max(previous + 2, path.stat().st_mtime)
    os.utime(path, (later, later))


def rss(*items: tuple[str, str]) -> str:
    body = "".join(
        f"<item><guid>{guid}</guid><title>{title}</title><link>https://e.org/{guid}</link>"
        f"<description>About {title}</description>"
        f"<pubDate>Mon, 02 Mar 2026 10:00:00 GMT</pubDate></item>"
        for guid, title in items
    )
    return (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>{body}</channel></rss>'
    )


def write_config(directory: Path, base: str, state: Path, **extra: str) -> Path:
    directory.mkdir(exist_ok=True)
    (directory / "bot.yaml").write_text(
        textwrap.dedent(
            f"""
            timezone: Europe/Vienna
            storage: {state}
            channels:
              alerts: {{}}
              ops: {{}}
            http: {{port: {extra.get("port", 0)}}}
            """
        )
    )
    (directory / "feeds.yaml").write_text(
        textwrap.dedent(
            f"""
            defaults: {{every: 15m, channels: [alerts], match: [cybercrime]}}
            feeds:
              - {{id: news, name: News Site, url: "{base}/news.xml"}}
              - {{id: other, name: Other Site, url: "{base}/other.xml", match: []}}
            """
        )
        + extra.get("feeds_extra", "")
    )
    return directory


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "MATRIX_", "TREATY_BOT"))
    }
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=REPO,
    )


def lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_version() -> None:
    out = cli("--version")
    assert out.returncode == 0 and out.stdout.startswith("treaty-bot ")


def test_check_shipped_config() -> None:
    out = cli("check", "--config", str(REPO / "config"))
    assert out.returncode == 0, out.stderr
    assert "OK" in out.stdout


def test_check_reports_problems_with_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "cfg"
    config.mkdir()
    (config / "bot.yaml").write_text("timezone: Europe/Vienn\nchannels: {alerts: {}}\n")
    (config / "feeds.yaml").write_text(
        "feeds:\n  - id: a\n    url: https://e.org/x\n    evry: 5m\n"
    )
    out = cli("check", "--config", str(config))
    assert out.returncode == 1
    assert f"{config}/bot.yaml:1: timezone: unknown time zone" in out.stderr
    assert f"{config}/feeds.yaml:4: feeds[0].evry: unknown key 'evry'" in out.stderr
    assert "2 problem(s)" in out.stderr


def test_config_from_environment(tmp_path: Path) -> None:
    config = tmp_path / "cfg"
    config.mkdir()
    (config / "bot.yaml").write_text("timezone: UTC\n")
    out = cli("check", env={"TREATY_BOT_CONFIG": str(config)})
    assert out.returncode == 0 and str(config) in out.stdout


def test_once_posts_each_new_matching_item_exactly_once(
    tmp_path: Path, www: tuple[Path, str]
) -> None:
    root, base = www
    state = tmp_path / "state.json"
    config = write_config(tmp_path / "cfg", base, state)
    publish(root / "news.xml", rss(("1", "Cybercrime treaty signed"), ("2", "Weather")))
    publish(root / "other.xml", rss(("a", "Anything")))

    first = cli("once", "--config", str(config), "--format", "jsonl")
    assert first.returncode == 0, first.stderr
    assert first.stdout == ""  # the first poll only remembers what exists

    publish(
        root / "news.xml",
        rss(
            ("3", "New cybercrime convention text"),
            ("4", "Sports"),
            ("1", "Cybercrime treaty signed"),
            ("2", "Weather"),
        ),
    )
    publish(root / "other.xml", rss(("b", "Second"), ("a", "Anything, edited title")))
    second = cli("once", "--config", str(config), "--format", "jsonl")
    assert second.returncode == 0, second.stderr
    alerts = lines(second.stdout)
    assert [(a["source"], a["title"]) for a in alerts] == [
        ("news", "New cybercrime convention text"),
        ("other", "Second"),
    ]
    for a in alerts:
        assert set(a) == SPEC_KEYS
        assert a["kind"] == "news" and a["channel"] == "alerts"
        assert str(a["at"]).endswith("Z")
    news = next(a for a in alerts if a["source"] == "news")
    assert news["url"] == "https://e.org/3"
    assert "matched: cybercrime" in str(news["text"])

    third = cli("once", "--config", str(config), "--format", "jsonl")
    assert third.returncode == 0 and third.stdout == ""


def test_dry_run_previews_without_recording(tmp_path: Path, www: tuple[Path, str]) -> None:
    root, base = www
    state = tmp_path / "state.json"
    config = write_config(
        tmp_path / "cfg",
        base,
        state,
        feeds_extra=f'  - {{id: back, url: "{base}/news.xml", backfill: 1}}\n',
    )
    publish(root / "news.xml", rss(("1", "Cybercrime treaty signed")))
    publish(root / "other.xml", rss(("a", "Anything")))
    preview = cli(
        "once",
        "--config",
        str(config),
        "--format",
        "jsonl",
        "--dry-run",
        "--now",
        "2026-03-01T09:00Z",
    )
    assert preview.returncode == 0, preview.stderr
    [alert] = lines(preview.stdout)
    assert alert["source"] == "back" and alert["at"] == "2026-03-01T09:00:00Z"
    assert not state.exists()
    real = cli("once", "--config", str(config), "--format", "jsonl")
    assert [a["id"] for a in lines(real.stdout)] == [alert["id"]]
    again = cli("once", "--config", str(config), "--format", "jsonl", "--dry-run")
    assert again.stdout == ""


def test_bad_now_is_a_usage_error() -> None:
    out = cli("once", "--now", "tomorrow")
    assert out.returncode == 2 and "ISO 8601" in out.stderr


def test_failing_feed_alerts_ops_once(tmp_path: Path, www: tuple[Path, str]) -> None:
    root, base = www
    state = tmp_path / "state.json"
    config = write_config(tmp_path / "cfg", base, state)
    publish(root / "other.xml", rss(("a", "Anything")))
    seen = []
    for _ in range(5):
        out = cli("once", "--config", str(config), "--format", "jsonl")
        assert out.returncode == 0
        seen += lines(out.stdout)
        assert "poll failed source=news" in out.stderr
    [health] = seen
    assert health["kind"] == "source-health" and health["channel"] == "ops"
    assert "HTTP 404" in str(health["text"]) and health["source"] == "news"
    publish(root / "news.xml", rss(("1", "Cybercrime")))
    recovered = lines(cli("once", "--config", str(config), "--format", "jsonl").stdout)
    assert [(a["kind"], a["source"]) for a in recovered] == [("source-health", "news")]
    assert "recovered" in str(recovered[0]["title"])


def test_corrupt_state_is_refused(tmp_path: Path, www: tuple[Path, str]) -> None:
    _, base = www
    state = tmp_path / "state.json"
    state.write_text('{"sources": {"1": ')
    config = write_config(tmp_path / "cfg", base, state)
    out = cli("once", "--config", str(config))
    assert out.returncode == 1
    assert str(state) in out.stderr and "not valid JSON" in out.stderr
    assert state.read_text() == '{"sources": {"1": '


def test_run_posts_stops_cleanly_and_holds_the_lock(tmp_path: Path, www: tuple[Path, str]) -> None:
    root, base = www
    state = tmp_path / "state.json"
    config = write_config(
        tmp_path / "cfg",
        base,
        state,
        feeds_extra=f'  - {{id: back, url: "{base}/news.xml", backfill: 1}}\n',
    )
    publish(root / "news.xml", rss(("1", "Cybercrime treaty signed")))
    publish(root / "other.xml", rss(("a", "Anything")))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "MATRIX_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "run", "--config", str(config), "--format", "jsonl"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        alert = json.loads(proc.stdout.readline())  # waits for the backfilled alert
        assert alert["source"] == "back" and alert["title"] == "Cybercrime treaty signed"
        second = cli("once", "--config", str(config))
        assert second.returncode == 1 and "in use" in second.stderr
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "stopping" in err


def test_sessions_and_clauses_through_once(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    config = tmp_path / "cfg"
    config.mkdir()
    (config / "bot.yaml").write_text(
        f"timezone: Europe/Vienna\nstorage: {state}\nchannels: {{alerts: {{}}, ops: {{}}}}\n"
    )
    sessions = textwrap.dedent(
        """
        sessions:
          - id: close
            title: Close of signature
            kind: deadline
            start: 2026-12-31T10:00
            timezone: America/New_York
            location: UN Headquarters, New York
            url: https://treaties.un.org/
        """
    )
    (config / "sessions.yaml").write_text(sessions)
    clauses = "clauses:\n  - {id: art-4, article: '4', title: Scope, status: open}\n"
    (config / "clauses.yaml").write_text(clauses)

    def once(now: str) -> list[dict[str, object]]:
        out = cli("once", "--config", str(config), "--format", "jsonl", "--now", now)
        assert out.returncode == 0, out.stderr
        return lines(out.stdout)

    assert once("2026-12-01T09:00Z") == []  # first look: remember only
    [reminder] = once("2026-12-17T15:00Z")  # 14 days before
    assert reminder["kind"] == "session-reminder" and reminder["source"] == "sessions"
    assert "Deadline starts in 14 days" in str(reminder["title"])
    assert "16:00 CET" in str(reminder["text"]) and "10:00 EST" in str(reminder["text"])
    assert once("2026-12-17T15:05Z") == []  # never twice

    (config / "sessions.yaml").write_text(sessions.replace("2026-12-31T10:00", "2027-01-04T10:00"))
    (config / "clauses.yaml").write_text(clauses.replace("open", "contested"))
    alerts = once("2026-12-18T09:00Z")
    assert sorted(str(a["kind"]) for a in alerts) == ["clause-change", "session-change"]
    change = next(a for a in alerts if a["kind"] == "session-change")
    assert "rescheduled" in str(change["title"])
    assert "Thu 31 Dec 2026" in str(change["text"]) and "Mon 04 Jan 2027" in str(change["text"])
    clause = next(a for a in alerts if a["kind"] == "clause-change")
    assert "open → contested" in str(clause["text"])
    assert once("2026-12-18T09:10Z") == []


def test_ask_answers_in_the_terminal(tmp_path: Path) -> None:
    config = tmp_path / "cfg"
    config.mkdir()
    (config / "bot.yaml").write_text(
        f"timezone: Europe/Vienna\nstorage: {tmp_path / 's.json'}\nchannels: {{alerts: {{}}}}\n"
    )
    (config / "sessions.yaml").write_text(
        "sessions:\n"
        "  - {id: close, title: Close of signature, kind: deadline, start: 2026-12-31T10:00,"
        " timezone: America/New_York, location: 'UN Headquarters, New York'}\n"
        "  - {id: old, title: Old session, start: 2024-01-29T10:00, status: concluded}\n"
    )
    (config / "clauses.yaml").write_text(
        "clauses:\n  - {id: art-4, article: '4', title: Scope of offences, status: contested}\n"
    )
    out = cli("ask", "next-session", "--config", str(config), "--now", "2026-12-01T09:00Z")
    assert out.returncode == 0, out.stderr
    assert "Close of signature" in out.stdout and "30 days" in out.stdout
    assert "16:00" in out.stdout and "10:00" in out.stdout  # Vienna and New York
    clause = cli("ask", "clause", "4", "--config", str(config))
    assert "Scope of offences" in clause.stdout and "contested" in clause.stdout
    bad = cli("ask", "sessions", "lots", "--config", str(config))
    assert bad.returncode == 0 and "sessions" in bad.stdout and "lots" in bad.stdout
    unknown = cli("ask", "nxt-session", "--config", str(config))
    assert "next-session" in unknown.stdout
    assert not (tmp_path / "s.json").exists()  # answering records nothing


def test_console_commands_while_running(tmp_path: Path, www: tuple[Path, str]) -> None:
    root, base = www
    config = write_config(tmp_path / "cfg", base, tmp_path / "state.json")
    publish(root / "news.xml", rss(("1", "Cybercrime")))
    publish(root / "other.xml", rss(("a", "Anything")))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "MATRIX_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "run", "--config", str(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("feeds\n")
        proc.stdin.flush()
        first = proc.stdout.readline()
        assert "2 sources" in first
        proc.stdin.write("/treaty nxt-session\n")
        proc.stdin.flush()
        while "Did you mean" not in (line := proc.stdout.readline()):
            assert line, "the bot stopped answering"
        proc.stdin.close()  # end of input: the bot keeps running
        proc.send_signal(signal.SIGTERM)
        assert proc.stderr is not None
        err = proc.stderr.read()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert proc.returncode == 0, err


def test_ask_next_session_on_the_shipped_config() -> None:
    out = cli("ask", "next-session", "--config", str(REPO / "config"), "--now", "2026-11-28T12:00Z")
    assert out.returncode == 0, out.stderr
    assert "Signature period closes" in out.stdout and "Thu 31 Dec 2026" in out.stdout


def test_a_hanging_feed_holds_back_no_other_feeds_alert(tmp_path: Path) -> None:
    """The alert of a healthy feed is posted while another feed of the same round still hangs:
    the hanging request is released only once the alert has been read."""
    release = threading.Event()
    hanging = threading.Event()
    bodies = {"/news.xml": rss(("n1", "cybercrime one")), "/other.xml": rss(("o1", "quiet"))}
    hang = {"on": False}

    class Handler(_QuietHandler):
        def do_GET(self) -> None:
            if self.path == "/other.xml" and hang["on"]:
                hanging.set()
                release.wait(60)  # bounded: the bot's own timeout ends it first if need be
                hanging.clear()
            body = bodies[self.path].encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = write_config(
            tmp_path / "cfg", f"http://127.0.0.1:{server.server_address[1]}", tmp_path / "s.json"
        )
        assert cli("once", "--config", str(config), "--format", "jsonl").returncode == 0
        bodies["/news.xml"] = rss(("n2", "cybercrime two"), ("n1", "cybercrime one"))
        hang["on"] = True
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "MATRIX_"))}
        with subprocess.Popen(
            [sys.executable, "-m", "bot", "once", "--config", str(config), "--format", "jsonl"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=REPO,
        ) as proc:
            assert proc.stdout is not None
            first = json.loads(proc.stdout.readline())
            assert first["title"] == "cybercrime two"
            assert hanging.is_set()  # posted while the other feed's request is still open
            release.set()
            assert proc.wait(timeout=60) == 0
    finally:
        release.set()
        server.shutdown()
        server.server_close()
