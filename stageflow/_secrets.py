"""SecretRef: a secret named where it lives, resolved only when a stage needs it.

Run data, inputs and a pipeline's options may hold a :class:`SecretRef` — the reference
is stored, never the value. A stage resolves it at call time (``ctx.secret(ref)`` or
``await ref.resolve()``) and gets a pydantic ``SecretStr``, which shows ``**********``
in ``repr``, ``str`` and f-strings; its text (``.get_secret_value()``) becomes a known
secret of the process, masked wherever stageflow writes text and refused by its codec
(see ``_redact``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final

from ._redact import SECRETS
from .errors import ConfigurationError

if TYPE_CHECKING:
    from pydantic import SecretStr

    from .ports import SecretResolver

__all__ = ["SecretRef", "resolve_secret"]

_SCHEME: Final = re.compile(r"[a-z][a-z0-9_-]*")


@dataclasses.dataclass(frozen=True, slots=True)
class SecretRef:
    """A secret by where it lives: ``SecretRef.env("OPENAI_API_KEY")``,
    ``SecretRef.file("/run/secrets/db")``, or ``SecretRef("vault", "kv/db")`` for a
    resolver of your own (``Engine(secrets={"vault": ...})``).

    Storable (it holds no value): run data and inputs may carry it.

    Example:
        >>> SecretRef.env("OPENAI_API_KEY")
        SecretRef(scheme='env', name='OPENAI_API_KEY')
    """

    scheme: str
    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.scheme, str) or _SCHEME.fullmatch(self.scheme) is None:
            raise ConfigurationError(
                f"SecretRef scheme must be a lowercase name (env, file, vault...), not "
                f"{self.scheme!r}",
                field="scheme",
                value=self.scheme,
            )
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigurationError(
                f"SecretRef({self.scheme!r}, ...) needs a name (a non-empty str), not "
                f"{self.name!r}",
                field="name",
                value=self.name,
            )

    @classmethod
    def env(cls, name: str) -> SecretRef:
        """The environment variable ``name``."""
        return cls("env", name)

    @classmethod
    def file(cls, path: str | os.PathLike[str]) -> SecretRef:
        """The text of the file at ``path`` (its trailing newline left out)."""
        return cls("file", os.fspath(path) if isinstance(path, os.PathLike) else path)

    async def resolve(self, resolvers: Mapping[str, SecretResolver] | None = None) -> SecretStr:
        """The secret, as a ``SecretStr`` (masked in ``repr``/``str``); its text is a
        known secret from now on. ``env`` and ``file`` resolve here; other schemes
        through ``resolvers``.

        Raises:
            ConfigurationError: the variable is not set, the file cannot be read, no
                resolver has the scheme (naming the reference; never a value).
        """
        return await resolve_secret(self, resolvers or {})


async def resolve_secret(ref: object, resolvers: Mapping[str, SecretResolver]) -> SecretStr:
    """``ref`` resolved (see :meth:`SecretRef.resolve`), its text made known."""
    from pydantic import SecretStr

    if not isinstance(ref, SecretRef):
        raise ConfigurationError(
            f"ctx.secret() takes a SecretRef (SecretRef.env(...), SecretRef.file(...)), not "
            f"{type(ref).__qualname__}",
            field="ref",
            value=type(ref).__qualname__,  # never the object: it may be the secret itself
        )
    text = await _text(ref, resolvers)
    SECRETS.add(text)
    return SecretStr(text)


async def _text(ref: SecretRef, resolvers: Mapping[str, SecretResolver]) -> str:
    resolver = resolvers.get(ref.scheme)
    if resolver is not None:
        text = await resolver.resolve(ref.name)
        if not isinstance(text, str):
            raise ConfigurationError(
                f"the {ref.scheme!r} resolver gave {type(text).__qualname__} for {ref!r}, "
                "not the secret's text (a str)",
                field="secrets",
                value=ref.scheme,
            )
        return text
    if ref.scheme == "env":
        value = os.environ.get(ref.name)
        if value is None:
            raise ConfigurationError(
                f"{ref!r}: the environment variable {ref.name!r} is not set",
                field="name",
                value=ref.name,
            )
        return value
    if ref.scheme == "file":
        try:
            text = await asyncio.to_thread(Path(ref.name).read_text, encoding="utf-8")
        except OSError as error:
            raise ConfigurationError(
                f"{ref!r}: the file cannot be read ({type(error).__name__}: {error.strerror})",
                field="name",
                value=ref.name,
            ) from None
        return text[:-1] if text.endswith("\n") else text
    known = ", ".join(sorted({"env", "file", *resolvers}))
    raise ConfigurationError(
        f"{ref!r}: no resolver for the scheme {ref.scheme!r} (known: {known}); give one: "
        f"Engine(secrets={{{ref.scheme!r}: ...}})",
        field="scheme",
        value=ref.scheme,
    )
