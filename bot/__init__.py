"""Treaty Watch: alerts and answers about the UN Convention against Cybercrime."""

#: The one place the version is written (pyproject.toml reads it from here).
__version__ = "0.1.0"
