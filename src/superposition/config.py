"""Typed, validated configs and the `--set key=value` overrides that the CLI turns into them.

Configs are pydantic models: validated at construction, serialisable to JSON, and the set of
`--set` keys is exactly the set of fields, so no flag is written by hand.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from superposition.errors import SuperpositionError

C = TypeVar("C", bound="Config")


class Config(BaseModel):
    """Base for every config: unknown keys are errors, and assignment is validated too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @classmethod
    def build(cls: type[C], values: dict[str, Any], source: str = "config") -> C:
        """Validate `values`, turning pydantic's multi-line report into one line."""
        try:
            return cls.model_validate(values)
        except ValidationError as err:
            raise SuperpositionError(describe_validation_error(err, source, cls)) from None

    def with_overrides(self: C, pairs: Iterable[str], source: str = "--set") -> C:
        """Apply `key=value` strings; values are parsed as JSON when they can be (numbers, lists,
        true/false/null), else taken as plain strings."""
        data = self.model_dump()
        for pair in pairs:
            key, sep, raw = pair.partition("=")
            key = key.strip()
            if not sep or not key:
                raise SuperpositionError(f"{source} {pair!r}: expected key=value")
            if key not in type(self).model_fields:
                raise SuperpositionError(
                    f"{source} {key}: unknown key; allowed: {', '.join(type(self).model_fields)}"
                )
            data[key] = parse_value(raw)
        return type(self).build(data, source)


def parse_value(raw: str) -> Any:
    raw = raw.strip()
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def describe_validation_error(err: ValidationError, source: str, cls: type[BaseModel]) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "value"
    if first["type"] == "extra_forbidden":
        return f"{source} {loc}: unknown key; allowed: {', '.join(cls.model_fields)}"
    msg = first["msg"].replace("\n", " ")
    given = first.get("input")
    tail = "" if isinstance(given, dict) else f" (got {given!r})"
    more = f" [and {err.error_count() - 1} more]" if err.error_count() > 1 else ""
    return f"{source} {loc}: {msg}{tail}{more}"
