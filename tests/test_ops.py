"""/healthz and /metrics of a running bot, and the health rules."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.app import App, SourceStatus
from bot.clock import FixedClock
from bot.configuration import load_config
from tests.conftest import REPO, ConfigFactory
from tests.test_cli import publish, rss, write_config, www  # noqa: F401 - fixture


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_and_health_move_while_running(tmp_path: Path, www: tuple[Path, str]) -> None:  # noqa: F811
    root, base = www
    port = free_port()
    config = write_config(
        tmp_path / "cfg",
        base,
        tmp_path / "state.json",
        port=str(port),
        feeds_extra=f'  - {{id: back, url: "{base}/news.xml", backfill: 2}}\n',
    )
    publish(root / "news.xml", rss(("1", "Cybercrime one"), ("2", "Cybercrime two")))
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
        first = json.loads(proc.stdout.readline())
        second = json.loads(proc.stdout.readline())
        assert {first["title"], second["title"]} == {"Cybercrime one", "Cybercrime two"}
        status, body = get(f"http://127.0.0.1:{port}/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"
        # the alerts are printed just before they are recorded as sent: wait for the record
        deadline = time.monotonic() + 30
        while True:
            _, text = get(f"http://127.0.0.1:{port}/metrics")
            sent = metric(text, "treatybot_alerts_sent_total", transport="console")
            if sent >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert metric(text, "treatybot_polls_total", source="back", outcome="ok") >= 1
        assert metric(text, "treatybot_items_seen_total", source="back") >= 2
        assert metric(text, "treatybot_alerts_queued_total", transport="console") >= 2
        assert metric(text, "treatybot_alerts_sent_total", transport="console") >= 2
        assert metric(text, "treatybot_delivery_latency_seconds_count", transport="console") >= 2
        assert "treatybot_event_loop_lag_seconds" in text
        assert "treatybot_outbox_depth" in text
        status, calendar = get(f"http://127.0.0.1:{port}/calendar.ics")
        assert status == 200 and calendar.startswith("BEGIN:VCALENDAR\r\n")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err


def test_port_in_use_is_a_clear_error(tmp_path: Path, www: tuple[Path, str]) -> None:  # noqa: F811
    _, base = www
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write_config(tmp_path / "cfg", base, tmp_path / "state.json", port=str(port))
        out = subprocess.run(
            [sys.executable, "-m", "bot", "run", "--config", str(config)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )
    assert out.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr and "http.port" in out.stderr


async def test_health_turns_unhealthy_without_successful_polls(
    config_dir: ConfigFactory,
) -> None:
    directory = config_dir(feeds="feeds:\n  - {id: a, url: 'https://e.org/a', every: 10m}\n")
    clock = FixedClock(datetime(2026, 11, 28, 9, 0, tzinfo=UTC))
    async with App(load_config(directory), clock=clock) as app:
        app.supervisor.spawn("idle", app.stop_event.wait())  # the scheduler is running
        assert app.health_problems() == []
        clock.set(clock.now() + timedelta(minutes=31))
        assert app.health_problems() == ["no source polled successfully in the last 3 intervals"]
        app.status["a"] = SourceStatus(last_success=clock.now() - timedelta(minutes=5))
        assert app.health_problems() == []
        app.request_stop()
        assert "the scheduler is not running" in app.health_problems()


HONCHO = (sys.executable, "-m", "honcho")


def test_the_procfile_runs_one_bot_listening_on_port(tmp_path: Path) -> None:
    """The Procfile as a Procfile runner starts it: one process, the HTTP server on $PORT (on
    every address), /healthz answering, and /metrics with every known series from the first
    scrape."""
    port = free_port()
    config = tmp_path / "cfg"
    config.mkdir()
    (config / "bot.yaml").write_text(
        f"storage: {tmp_path / 'state.json'}\nchannels: {{alerts: {{}}, ops: {{}}}}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "MATRIX_"))}
    env["TREATY_BOT_CONFIG"] = str(config)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    runner = subprocess.Popen(
        [*HONCHO, "-f", str(REPO / "Procfile"), "-d", str(tmp_path), "start", "-p", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert runner.poll() is None, runner.communicate()[0]
            try:
                status, body = get(f"http://127.0.0.1:{port}/healthz")
                break
            except OSError:
                assert time.monotonic() < deadline, "nothing listens on $PORT"
                time.sleep(0.1)  # polling the port, under the deadline above
        assert (status, json.loads(body)["status"]) == (200, "ok")
        # listening on every address, not only loopback: reachable by the host's own address
        with socket.socket() as probe:
            probe.settimeout(5)
            probe.connect((socket.gethostbyname(socket.gethostname()), port))
        _, text = get(f"http://127.0.0.1:{port}/metrics")
        for series in (
            'treatybot_alerts_queued_total{transport="console"} 0.0',
            'treatybot_alerts_sent_total{transport="console"} 0.0',
            'treatybot_alerts_failed_total{permanent="true",transport="console"} 0.0',
            'treatybot_delivery_latency_seconds_count{transport="console"} 0.0',
            'treatybot_command_latency_seconds_count{platform="console"} 0.0',
        ):
            assert series in text, series
        for standard in ("process_resident_memory_bytes", "process_open_fds", "python_gc_"):
            assert standard in text, standard
    finally:
        runner.send_signal(signal.SIGTERM)  # the runner passes it on to what it started
        try:
            out, _ = runner.communicate(timeout=60)
        finally:
            if runner.poll() is None:
                os.killpg(runner.pid, signal.SIGKILL)
    started = [
        line.split("|", 1)[1].split()[0]
        for line in out.splitlines()
        if "|" in line and " started (pid=" in line
    ]
    assert started == ["web.1"], out  # one bot for one state file
    assert "level=error" not in out and "level=warning" not in out, out


def test_port_from_the_environment_and_what_bot_yaml_says() -> None:
    import pytest

    from bot.app import listen_address
    from bot.configuration.models import HttpSettings
    from bot.errors import TreatyBotError

    default = HttpSettings()
    assert listen_address(default, {}) == ("127.0.0.1", 8080)
    assert listen_address(default, {"PORT": "5000"}) == ("0.0.0.0", 5000)
    port_set = HttpSettings.model_validate({"port": 9000})
    assert listen_address(port_set, {"PORT": "5000"}) == ("127.0.0.1", 9000)  # bot.yaml wins
    host_set = HttpSettings.model_validate({"host": "10.0.0.5"})
    assert listen_address(host_set, {"PORT": "5000"}) == ("10.0.0.5", 5000)
    off = HttpSettings.model_validate({"port": 0})
    assert listen_address(off, {"PORT": "5000"}) == ("127.0.0.1", 0)
    with pytest.raises(TreatyBotError, match="PORT='http' in the environment is not a port"):
        listen_address(default, {"PORT": "http"})


def test_the_compose_file_runs_postgresql_and_two_checked_replicas() -> None:
    """deploy/compose.yaml: a database that reports when it is ready, two replicas that wait
    for it, share it, keep their own local files, and are checked on /healthz where the bot
    listens by default."""
    from ruamel.yaml import YAML

    from bot.configuration.models import HttpSettings

    compose = YAML(typ="safe").load((REPO / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    assert "pg_isready" in " ".join(services["db"]["healthcheck"]["test"])
    bots = {name: s for name, s in services.items() if name != "db"}
    assert len(bots) == 2
    volumes = set()
    default = HttpSettings()
    for service in bots.values():
        assert service["depends_on"]["db"]["condition"] == "service_healthy"
        url = service["environment"]["TREATY_BOT_DATABASE_URL"]
        assert url.startswith("postgresql://") and "@db/" in url
        assert "MATRIX_ACCESS_TOKEN" not in service["environment"]  # one device per replica
        check = " ".join(service["healthcheck"]["test"])
        assert f"http://{default.host}:{default.port}/healthz" in check
        assert any(v.endswith(":/app/config:ro") for v in service["volumes"])
        volumes.update(v for v in service["volumes"] if v.endswith(":/data"))
    assert len(volumes) == 2  # a volume of its own each
