"""Secrets never reach a file or the terminal.

An API key is registered when it is read (`register`); every text this package writes or prints
goes through `redact`, which replaces registered secrets, the credentials of URLs
(`http://user:token@host` -> `http://***@host`), `Authorization: Bearer ...` values and
`sk-...`-style keys with `***`. A server that echoes the request's headers in its error text
cannot put the key into a report, a summary or the answer cache.
"""

from __future__ import annotations

import re
from typing import Any

_SECRETS: set[str] = set()
_PATTERNS = (
    (re.compile(r"(?P<keep>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^\s/@\"'<>]+@"), r"\g<keep>***@"),
    (re.compile(r"(?i)(?P<keep>\bbearer\s+)[^\s\"'<>,;]+"), r"\g<keep>***"),
    (re.compile(r"(?i)(?P<keep>\b(?:api[_-]?key|authorization|x-api-key)[\"']?\s*[:=]\s*[\"']?)[^\s\"'<>,;]+"),
     r"\g<keep>***"),
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"), "***"),
    (re.compile(r"\bhf_[A-Za-z0-9]{16,}"), "***"),  # Hugging Face tokens
)  # fmt: skip


def register(secret: str | None) -> None:
    """A value that must never be written or printed (an API key as read from the environment)."""
    if secret and len(secret) >= 4:
        _SECRETS.add(secret)


def redact(text: str) -> str:
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


def redact_obj(x: Any) -> Any:
    """Every string inside nested dicts and lists, redacted (keys too)."""
    if isinstance(x, str):
        return redact(x)
    if isinstance(x, dict):
        return {redact_obj(k): redact_obj(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [redact_obj(v) for v in x]
    return x
