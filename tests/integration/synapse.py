"""A real Synapse homeserver on loopback for the Matrix tests: one server per test session.

Use the session fixture ``synapse`` from any test module (``from tests.integration.synapse
import synapse``) or from a ``conftest.py``; however many modules import it, the session gets
one server, started on first use and stopped when the session ends. It skips the tests that
ask for it, with the reason, only when the ``synapse`` package is not importable.

The server listens on 127.0.0.1 at a free port, keeps its SQLite database, media and log in a
temporary directory, has no federation listener, trusts no key server, and has the rate limits
relaxed so that tests never wait on them. Users are registered through the admin API with the
shared secret (standard library only: ``urllib`` and ``hmac``), and ``stop()``/``start()``
restart the same server, with the same data and port, in the middle of a test.

``SYNAPSE_PYTHON`` may name the interpreter of another virtualenv that has Synapse installed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.util
import itertools
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SHARED_SECRET = "treaty-watch-test-shared-secret"
SERVER_NAME = "localhost"
START_TIMEOUT = 60.0
_FAST = {"per_second": 1000, "burst_count": 1000}
_names = itertools.count(1)
_STASH_KEY = pytest.StashKey["Synapse"]()


@dataclass(frozen=True, slots=True)
class Account:
    """A registered user and one logged-in device of theirs."""

    user_id: str
    password: str
    access_token: str
    device_id: str

    @property
    def localpart(self) -> str:
        return self.user_id[1:].split(":", 1)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def synapse_python() -> str:
    return os.environ.get("SYNAPSE_PYTHON") or sys.executable


def synapse_missing() -> str | None:
    """Why Synapse cannot be used here, or ``None`` when it can."""
    if os.environ.get("SYNAPSE_PYTHON"):
        return None
    if importlib.util.find_spec("synapse") is None:
        return (
            "Synapse is not installed: pip install matrix-synapse "
            "(or set SYNAPSE_PYTHON to an interpreter that has it)"
        )
    return None


def homeserver_config(workdir: Path, port: int) -> dict[str, Any]:
    """The whole homeserver.yaml, as a dict (written as JSON, which YAML reads)."""
    seed = base64.b64encode(os.urandom(32)).decode().rstrip("=")
    limits: dict[str, Any] = {
        key: _FAST
        for key in (
            "rc_message",
            "rc_registration",
            "rc_joins_per_room",
            "rc_room_creation",
            "rc_admin_redaction",
            "rc_3pid_validation",
            "rc_key_requests",
            "rc_delayed_event_mgmt",
            "rc_reports",
            "rc_user_directory",
            "rc_profile",
            "rc_media_create",
            "rc_third_party_invite",
        )
    }
    limits["rc_login"] = dict.fromkeys(("address", "account", "failed_attempts"), _FAST)
    limits["rc_joins"] = {"local": _FAST, "remote": _FAST}
    limits["rc_invites"] = dict.fromkeys(("per_room", "per_user", "per_issuer"), _FAST)
    limits["rc_presence"] = {"per_user": _FAST}
    return {
        "server_name": SERVER_NAME,
        "public_baseurl": f"http://127.0.0.1:{port}/",
        "pid_file": str(workdir / "homeserver.pid"),
        "listeners": [
            {
                "port": port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                "resources": [{"names": ["client"], "compress": False}],
            }
        ],
        "database": {"name": "sqlite3", "args": {"database": str(workdir / "homeserver.db")}},
        "media_store_path": str(workdir / "media_store"),
        "signing_key": f"ed25519 a_test {seed}",
        "registration_shared_secret": SHARED_SECRET,
        "macaroon_secret_key": secrets.token_hex(16),
        "form_secret": secrets.token_hex(16),
        "report_stats": False,
        "enable_metrics": False,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "federation_domain_whitelist": [],
        "presence": {"enabled": False},
        "bcrypt_rounds": 4,  # tests only: registration and login in ~10 ms
        **limits,
    }


class Synapse:
    """One Synapse process, its configuration and its data directory."""

    def __init__(self, workdir: Path, *, python: str | None = None) -> None:
        self.workdir = workdir.resolve()
        self.python = python or synapse_python()
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.config_path = self.workdir / "homeserver.yaml"
        self.log_path = self.workdir / "synapse.log"
        self.config_path.write_text(json.dumps(homeserver_config(self.workdir, self.port)))
        self._proc: subprocess.Popen[bytes] | None = None

    # -- process ----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the server and return once the client API answers."""
        if self.running:
            return
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [self.python, "-m", "synapse.app.homeserver", "-c", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"synapse exited with {self._proc.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(
                    f"{self.base_url}/_matrix/client/versions", timeout=1
                ) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"synapse not ready after {timeout} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM this server (and only it), waiting for it to exit; SIGKILL if it hangs."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- HTTP -------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        token: str | None = None,
    ) -> dict[str, Any]:
        """One client-server or admin API call; raises ``urllib.error.HTTPError`` on errors."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(
            self.base_url + path, data=data, headers=headers, method=method
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            result: dict[str, Any] = json.load(resp)
            return result

    def register(self, localpart: str | None = None, *, admin: bool = False) -> Account:
        """Register a new user with the shared secret (a unique name when none is given)."""
        localpart = localpart or f"user{next(_names)}x{secrets.token_hex(3)}"
        password = secrets.token_urlsafe(12)
        nonce = self.request("GET", "/_synapse/admin/v1/register")["nonce"]
        mac = hmac.new(
            SHARED_SECRET.encode(),
            b"\x00".join(
                [
                    nonce.encode(),
                    localpart.encode(),
                    password.encode(),
                    b"admin" if admin else b"notadmin",
                ]
            ),
            hashlib.sha1,
        ).hexdigest()
        reply = self.request(
            "POST",
            "/_synapse/admin/v1/register",
            {
                "nonce": nonce,
                "username": localpart,
                "password": password,
                "admin": admin,
                "mac": mac,
            },
        )
        return Account(reply["user_id"], password, reply["access_token"], reply["device_id"])

    def login(self, account: Account) -> Account:
        """A new device for ``account`` (its own access token)."""
        reply = self.request(
            "POST",
            "/_matrix/client/v3/login",
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": account.localpart},
                "password": account.password,
            },
        )
        return Account(account.user_id, account.password, reply["access_token"], reply["device_id"])


@pytest.fixture(scope="session")
def synapse(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Synapse:
    """The session's Synapse, started on first use (shared by every module that imports this)."""
    why = synapse_missing()
    if why is not None:
        pytest.skip(why)
    stash = request.config.stash
    server = stash.get(_STASH_KEY, None)
    if server is None:
        server = Synapse(tmp_path_factory.mktemp("synapse"))
        try:
            server.start()
        except (RuntimeError, TimeoutError):
            # The free port may have been taken between probing and binding: one more try.
            server.stop()
            server = Synapse(tmp_path_factory.mktemp("synapse"))
            server.start()
        stash[_STASH_KEY] = server
        request.config.add_cleanup(server.stop)
    if not server.running:
        server.start()  # a test that stopped it and failed before starting it again
    return server
