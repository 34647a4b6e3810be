"""Which platforms the bot talks to: the transports whose credentials are in the environment,
built from the configuration (the console when there are none). ``app`` only calls this."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from bot.clock import Clock
from bot.configuration.models import Config
from bot.errors import DeliveryError
from bot.transports.base import Transport
from bot.transports.console import ConsoleTransport


def build_transports(
    config: Config,
    env: Mapping[str, str],
    console: ConsoleTransport,
    clock: Clock,
    *,
    state_dir: Path,
    dry_run: bool,
) -> dict[str, Transport]:
    """The platforms whose credentials are in ``env``; the console otherwise (and always for
    previews, which stay on this terminal)."""
    if dry_run:
        return {"console": console}
    transports: dict[str, Transport] = {}
    if env.get("MATRIX_HOMESERVER") or env.get("MATRIX_USER_ID"):
        transports["matrix"] = matrix_transport(config, env, state_dir)
    if env.get("SLACK_BOT_TOKEN"):
        transports["slack"] = slack_transport(config, env, clock)
    if not transports:
        transports["console"] = console
    return transports


def matrix_transport(config: Config, env: Mapping[str, str], state_dir: Path) -> Transport:
    missing = [name for name in ("MATRIX_HOMESERVER", "MATRIX_USER_ID") if not env.get(name)]
    if not (env.get("MATRIX_ACCESS_TOKEN") or env.get("MATRIX_PASSWORD")):
        missing.append("MATRIX_ACCESS_TOKEN or MATRIX_PASSWORD")
    if missing:
        raise DeliveryError(
            "Matrix needs " + ", ".join(missing) + " in the environment",
            resource="matrix",
            permanent=True,
        )
    from bot.transports.matrix import MatrixTransport  # nio loads only when Matrix is used

    bot = config.bot
    return MatrixTransport(
        homeserver=env["MATRIX_HOMESERVER"],
        user_id=env["MATRIX_USER_ID"],
        access_token=env.get("MATRIX_ACCESS_TOKEN") or None,
        password=env.get("MATRIX_PASSWORD") or None,
        rooms={name: t.matrix for name, t in bot.channels.items() if t.matrix},
        state_dir=state_dir / "matrix",
        command_prefix=bot.matrix.command_prefix,
        admins=bot.admins.matrix,
    )


def slack_transport(config: Config, env: Mapping[str, str], clock: Clock) -> Transport:
    from bot.transports.slack import SlackTransport  # slack_bolt loads only when used

    bot = config.bot
    return SlackTransport(
        bot_token=env["SLACK_BOT_TOKEN"],
        mode=bot.slack.mode,
        app_token=env.get("SLACK_APP_TOKEN") or None,
        signing_secret=env.get("SLACK_SIGNING_SECRET") or None,
        api_url=env.get("SLACK_API_URL") or None,
        channels={name: t.slack for name, t in bot.channels.items() if t.slack},
        clock=clock,
    )
