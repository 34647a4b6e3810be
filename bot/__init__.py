"""Treaty Watch: alerts and answers about the UN Convention against Cybercrime."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("treaty-bot")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"
