"""The benchmark harness still measures what it says: a small side-by-side run on the loopback
feed farm, whose own checks of treaty-bot's rounds must all hold, and a small run of replicas
on PostgreSQL, whose own checks (every source polled, every queued alert sent once) must hold.
Nothing here looks at a time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_a_small_side_by_side_run_checks_every_round(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--feeds",
            "24",
            "--latency-ms",
            "5",
            "--skip-reader",
            "--skip-sequential",
            "--skip-commands",
            "--workdir",
            str(tmp_path / "work"),
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    bot, alone = results["clients"]["treaty-bot"], results["clients"]["aiohttp requests alone"]
    assert not bot.get("failed") and not alone.get("failed")

    # the farm changed 10 % of its feeds between the rounds: both clients saw the same answers
    for name in ("cold", "warm"):
        assert (bot[name]["ok"], bot[name]["not_modified"]) == (
            alone[name]["ok"],
            alone[name]["not_modified"],
        )
    assert bot["cold"]["ok"] == 24 and bot["warm"]["not_modified"] > 0

    # the harness's checks of the bot's state and alerts, as reported in the targets table
    holds = {t["target"]: t["holds"] for t in results["analysis"]["targets"]}
    assert holds["every item's alert state right (cold and warm)"] is True
    assert holds["an unchanged body without validators is not parsed again"] is True
    assert holds["a round in which nothing changed writes nothing to the store"] is True
    warm = bot["warm"]["output"]
    assert warm["news_alerts"] == warm["expected_news_alerts"] > 0


def test_replicas_poll_every_source_and_send_every_queued_row_once(tmp_path: Path) -> None:
    out = tmp_path / "replicas.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.replicas",
            "--feeds",
            "40",
            "--latency-ms",
            "5",
            "--replicas",
            "1,2",
            "--duration",
            "1",
            "--settle",
            "0",
            "--alerts",
            "200",
            "--channels",
            "4",
            "--workdir",
            str(tmp_path / "work"),
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())

    # the harness's own checks: every source polled and recorded in each first round, every
    # queued row sent and printed exactly once, every replica stopped cleanly
    failed = [c["check"] for c in results["checks"] if not c["holds"]]
    assert len(results["checks"]) == 8 and not failed, f"{failed}\n{done.stdout[-3000:]}"
    for count in ("1", "2"):
        polling, outbox = results["polling"][count], results["outbox"][count]
        assert polling["first_round"]["sources_recorded"] == 40
        assert sum(polling["shards_at_end"].values()) == 16
        assert len(polling["stopped"]) == int(count)
        assert outbox["printed"] == outbox["rows"] == 200
        assert sum(outbox["sent_by"].values()) == 200


def test_schedules_side_by_side_alert_every_change_polled_and_post_every_push(
    tmp_path: Path,
) -> None:
    out = tmp_path / "schedule.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.schedule",
            "--feeds",
            "20",
            "--latency-ms",
            "5",
            "--duration",
            "12",
            "--change-every",
            "5",
            "--tail",
            "0",
            "--together",
            "--push-feeds",
            "5",
            "--push-rate",
            "5",
            "--push-duration",
            "2",
            "--workdir",
            str(tmp_path / "work"),
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())

    # the harness's own checks: every feed polled in each first round, nothing alerted but the
    # changes (none twice, none polled and missed), every push posted once and by push alone
    assert results["checks"] and all(c["holds"] for c in results["checks"])
    for mode in ("fixed", "adaptive"):
        polling = results["polling"][mode]
        assert polling["requests"]["first_round"] == 20
        assert polling["changes"]["made"] > 0 and polling["changes"]["missing"] == 0
    push = results["push"]
    assert push["published"] == push["posted"] == push["posts_total"] == 10
    assert push["polls_of_pushed_feeds_after_the_first"] == 0


def test_thread_parse_probe_parses_every_body_while_the_loop_is_probed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench.threadparse import main

    out = tmp_path / "threadparse.json"
    assert main(["--feeds", "3", "--repeat", "2", "--idle", "0.05", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["bodies"] == 3 and results["parses"] == 6
    assert results["probe_idle"]["count"] > 0
    assert results["probe_while_parsing_in_a_thread"]["count"] > 0
    assert "while parsing in a thread" in capsys.readouterr().out
