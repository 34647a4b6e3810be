"""JSON Schemas of the configuration files, generated from the validation models.

Editors (VS Code with the YAML extension, and others that speak yaml-language-server) use them
to check a file while it is typed; ``treaty-bot schema`` prints them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic.json_schema import GenerateJsonSchema

from bot.configuration.loader import FILES
from bot.domain.durations import format_duration

SCHEMA_DRAFT = "https://json-schema.org/draft/2020-12/schema"


class _Generator(GenerateJsonSchema):
    def encode_default(self, dft: Any) -> Any:
        if isinstance(dft, timedelta):
            return format_duration(dft)
        return super().encode_default(dft)


def schema_for(file: str) -> dict[str, Any]:
    """The JSON Schema of one file (``bot.yaml``, ``feeds.yaml`` …)."""
    model = FILES[file]
    schema = model.model_json_schema(schema_generator=_Generator)
    schema["$schema"] = SCHEMA_DRAFT
    schema["title"] = f"treaty-bot {file}"
    return schema


def all_schemas() -> dict[str, dict[str, Any]]:
    return {file: schema_for(file) for file in FILES}


def schema_filename(file: str) -> str:
    return file.replace(".yaml", ".schema.json")
