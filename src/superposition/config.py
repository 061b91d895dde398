"""Typed, validated configs and the `--set key=value` overrides that the CLI turns into them.

Configs are pydantic models: validated at construction, serialisable to JSON, and the set of
`--set` keys is exactly the set of fields, so no flag is written by hand. Larger configs are
*composed* from smaller ones (`compose`): a language-model run's config holds every SAE and
trainer key, so a field added to either reaches every command that trains an SAE. `--help-config`
prints any config's keys with their types, defaults and descriptions (`describe_fields`).
"""

from __future__ import annotations

import copy
import json
import textwrap
import types
import typing
from collections.abc import Iterable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from superposition.errors import SuperpositionError

C = TypeVar("C", bound="Config")


class Config(BaseModel):
    """Base for every config: unknown keys are errors, assignment is validated too, and values are
    taken strictly: `true` is not a number and `"10"` is not an integer."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass that only changes a key's default keeps the key's description."""
        super().__pydantic_init_subclass__(**kwargs)
        for key, info in cls.model_fields.items():
            if info.description:
                continue
            for parent in cls.__mro__[1:]:
                inherited = getattr(parent, "model_fields", {}).get(key)
                if inherited is not None and inherited.description:
                    info.description = inherited.description
                    break

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


def compose(
    name: str,
    base: type[C],
    *parts: type[Config],
    exclude: Iterable[str] = (),
    defaults: dict[str, Any] | None = None,
    doc: str | None = None,
) -> type[C]:
    """A config class with `base`'s fields and validators followed by every field of `parts`
    (in order; a key already present is kept from its first declaration), less `exclude`, with
    `defaults` replacing the parts' defaults. Descriptions and constraints travel with the fields,
    so the composed config validates each key exactly as its home config does."""
    skip, defaults = set(exclude), dict(defaults or {})
    fields: dict[str, Any] = {}
    for part in parts:
        for key, info in part.model_fields.items():
            if key in skip or key in fields or key in base.model_fields:
                continue
            info = copy.copy(info)
            if key in defaults:
                info.default, info.default_factory = defaults.pop(key), None
            fields[key] = (info.annotation, info)
    for key in list(defaults):
        if key in base.model_fields:  # a default of the base itself
            info = copy.copy(base.model_fields[key])
            info.default, info.default_factory = defaults.pop(key), None
            fields[key] = (info.annotation, info)
    if defaults:
        raise TypeError(f"compose {name}: defaults for unknown keys {sorted(defaults)}")
    return create_model(
        name, __base__=base, __doc__=doc or base.__doc__, __module__=base.__module__, **fields
    )


def describe_fields(cls: type[BaseModel], title: str) -> str:
    """Every key of a config with its type, default and description: the `--help-config` text."""
    rows = []
    for key, info in cls.model_fields.items():
        default = (
            "(required)" if info.is_required() else json.dumps(info.get_default(call_default_factory=True))
        )
        rows.append((key, _type_name(info.annotation), default, info.description or ""))
    if not rows:
        return f"{title}\n\n  (no keys)"
    w_key = max(len(r[0]) for r in rows)
    w_type = min(28, max(len(r[1]) for r in rows))
    lines = [title, ""]
    for key, typ, default, desc in rows:
        lines.append(f"  {key:<{w_key}}  {typ:<{w_type}}  default {default}")
        for part in textwrap.wrap(desc, max(40, 108 - w_key), break_long_words=False):
            lines.append(f"  {'':<{w_key}}  {part}")
    return "\n".join(lines)


def _type_name(t: Any) -> str:
    origin = typing.get_origin(t)
    if origin is typing.Literal:
        return "|".join(json.dumps(a) for a in typing.get_args(t))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(t))
    if origin is typing.Annotated:
        return _type_name(typing.get_args(t)[0])
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(t))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return "null" if t is type(None) else getattr(t, "__name__", str(t))


def parse_value(raw: str) -> Any:
    """JSON where it parses; a bracketed list of bare words ([a.b, c.d], as a shell leaves it) as a
    list of values; else the plain string."""
    raw = raw.strip()
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        if raw.startswith("[") and raw.endswith("]") and raw[1:-1].strip():
            return [parse_value(part) for part in raw[1:-1].split(",")]
        return raw


def describe_validation_error(err: ValidationError, source: str, cls: type[BaseModel]) -> str:
    errors = err.errors()
    first = errors[0]
    # a value that fits no branch of a union (float | list[float]) is reported once per branch,
    # each located as key.branch-type: name the key alone, once
    top = first["loc"][0] if first["loc"] else None
    same_key = [e for e in errors if e["loc"][:1] == first["loc"][:1]]
    if top is not None and len(same_key) > 1:
        deepest = max(same_key, key=lambda e: len(e["loc"]))  # the branch whose type the value had
        first = {**deepest, "loc": (top, *deepest["loc"][2:])}
    loc = ".".join(str(p) for p in first["loc"]) or "value"
    if first["type"] == "extra_forbidden":
        return f"{source} {loc}: unknown key; allowed: {', '.join(cls.model_fields)}"
    msg = first["msg"].replace("\n", " ").removeprefix("Value error, ")
    if first["type"] == "value_error" and not first["loc"]:
        return f"{source} {msg}"  # a check across keys names its key itself ("k: required for ...")
    given = first.get("input")
    shown = repr(given)
    shown = shown if len(shown) <= 80 else shown[:60] + f"... ({len(shown):,} characters)"
    tail = "" if isinstance(given, dict) else f" (got {shown})"
    n_more = len(errors) - (len(same_key) if top is not None and len(same_key) > 1 else 1)
    more = f" [and {n_more} more]" if n_more > 0 else ""
    return f"{source} {loc}: {msg}{tail}{more}"
