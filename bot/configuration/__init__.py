"""YAML files with line marks -> validated configuration, or every problem with file:line."""

from bot.configuration.loader import load_config
from bot.configuration.models import Config

__all__ = ["Config", "load_config"]
