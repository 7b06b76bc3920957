"""The secret values this process knows, and text with them masked.

A value becomes known when a :class:`~stageflow.SecretRef` resolves to it (or when
:func:`known_secret` is told it): from then on, wherever text leaves the process through
stageflow — log records, event data, span attributes and recorded exceptions, the reasons
stored with failed stages, the CLI's output, the HTTP and MCP responses — each occurrence
is replaced by ``***``: as it is, and as JSON or base64 (standard and URL-safe, at each of
the three alignments) would write it inside longer text. The codec refuses to store a
value that holds one (see ``_codec``).

While no secret is known nothing is looked at: :data:`SECRETS` ``.active`` is one
attribute read.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Mapping
from typing import Any, Final

from .errors import ConfigurationError

__all__ = [
    "MASK",
    "MIN_LENGTH",
    "SECRETS",
    "Secrets",
    "is_secret_value",
    "known_secret",
    "redacted",
    "redacted_data",
]

MASK: Final = "***"
MIN_LENGTH: Final = 4
"""Shorter values are not masked: a secret of three characters would mask them everywhere."""


def _forms(value: str) -> set[str]:
    """``value`` as it may appear in text: itself, JSON-escaped, and base64-encoded at
    each alignment (the characters that depend on what surrounds it left out)."""
    forms = {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    raw = value.encode()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for shift in range(3):
            text = encode(b"\0" * shift + raw).decode("ascii").rstrip("=")
            start = (shift * 4 + 2) // 3  # characters that hold bits of the padding
            end = len(text) - (1 if (shift + len(raw)) % 3 else 0)  # bits of what follows
            if end - start >= MIN_LENGTH:
                forms.add(text[start:end])
    return {form for form in forms if len(form) >= MIN_LENGTH}


class Secrets:
    """The known secret values of this process (see the module's docstring)."""

    __slots__ = ("_forms", "_lock", "_pattern", "active")

    def __init__(self) -> None:
        self._forms: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()
        self.active = False

    def add(self, value: str) -> None:
        """Know ``value`` (a secret's text) from now on."""
        if not isinstance(value, str) or len(value) < MIN_LENGTH:
            return
        forms = _forms(value)
        with self._lock:
            if forms <= self._forms:
                return
            self._forms |= forms
            longest_first = sorted(self._forms, key=len, reverse=True)
            self._pattern = re.compile("|".join(map(re.escape, longest_first)))
            self.active = True

    def redact(self, text: str) -> str:
        """``text`` with every known secret masked."""
        pattern = self._pattern
        if pattern is None or not isinstance(text, str):
            return text
        return pattern.sub(MASK, text)

    def found(self, text: str) -> bool:
        """Whether ``text`` holds a known secret."""
        pattern = self._pattern
        return pattern is not None and isinstance(text, str) and pattern.search(text) is not None

    def forget(self) -> None:
        """Know no secret any more (for tests)."""
        with self._lock:
            self._forms.clear()
            self._pattern = None
            self.active = False


SECRETS: Final = Secrets()


def known_secret(value: str) -> None:
    """Mask ``value`` wherever stageflow writes text from now on (a secret obtained
    otherwise than through a :class:`~stageflow.SecretRef`). A value shorter than
    :data:`MIN_LENGTH` characters is not masked (it would mask them everywhere).

    Raises:
        ConfigurationError: ``value`` is not a str (its type named, never the value).
    """
    if not isinstance(value, str):
        raise ConfigurationError(
            f"known_secret() takes the secret's text (a str), not {type(value).__qualname__}",
            field="value",
            value=type(value).__qualname__,
        )
    SECRETS.add(value)


def redacted(text: str) -> str:
    """``text`` with every known secret masked (as it is, JSON- or base64-encoded)."""
    return SECRETS.redact(text) if SECRETS.active else text


def redacted_data(data: Any) -> Any:
    """``data`` (event data, span attributes: JSON-like values) with every str in it
    masked; what holds no secret is returned as it is."""
    if not SECRETS.active:
        return data
    return _masked(data)


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return SECRETS.redact(value)
    if isinstance(value, Mapping):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_masked(v) for v in value)
    return MASK if is_secret_value(value) else value


def is_secret_value(value: object) -> bool:
    """Whether ``value`` is a pydantic SecretStr or SecretBytes (pydantic not imported)."""
    return any(
        cls.__name__ in ("SecretStr", "SecretBytes") and cls.__module__.startswith("pydantic")
        for cls in type(value).__mro__
    )
