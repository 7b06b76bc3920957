"""Bearer tokens with scopes, configured hashed: who may read runs and who may run them."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ...errors import ConfigurationError

__all__ = ["SCOPES", "TOKENS_ENV", "Token", "load_tokens", "new_token", "parse_tokens"]

SCOPES: Final = ("read", "run")
"""``read``: list and show pipelines and runs, follow events. ``run``: start, cancel,
resume, give input, delete (and read: ``run`` implies ``read``)."""
TOKENS_ENV: Final = "STAGEFLOW_TOKENS"
"""The environment variable of token lines (one a line, or separated by ``;``)."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
_LINE = "'NAME SCOPE[,SCOPE] sha256:<64 hex digits>' (scopes: read, run)"


@dataclass(frozen=True, slots=True)
class Token:
    """A configured token: its name, its scopes and the SHA-256 of its secret (never the
    secret itself).

    Attributes:
        name: who holds it, for logs and errors (``ci``, ``alice@ops``).
        scopes: what it may do (see :data:`SCOPES`).
        digest: the SHA-256 of the secret, 64 hex digits.
    """

    name: str
    scopes: frozenset[str]
    digest: str

    def allows(self, scope: str) -> bool:
        """Whether it may do what ``scope`` covers (``run`` implies ``read``)."""
        return scope in self.scopes or (scope == "read" and "run" in self.scopes)

    @property
    def line(self) -> str:
        """The token as a line of a tokens file (``name scope[,scope] sha256:<hex>``)."""
        return f"{self.name} {','.join(sorted(self.scopes))} sha256:{self.digest}"

    def matches(self, secret: str) -> bool:
        """Whether ``secret`` is this token (compared in constant time, as digests)."""
        return hmac.compare_digest(_digest(secret), self.digest)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def new_token(name: str, scopes: Iterable[str] = ("read",)) -> tuple[str, Token]:
    """A new secret for ``name`` and its :class:`Token`; ``token.line`` is what goes in
    the tokens file. Show the secret once, to whoever will hold it: only its hash is kept.

    Example:
        >>> secret, token = new_token("ci", ["run"])
        >>> token.matches(secret), token.allows("read"), token.line.startswith("ci run sha256:")
        (True, True, True)

    Raises:
        ConfigurationError: a name that is not 1 to 64 letters, digits, ``_.@-``, or a
            scope that is not one of :data:`SCOPES`.
    """
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise ConfigurationError(
            f"a token's name must be 1 to 64 letters, digits, '_', '.', '@' or '-', not {name!r}",
            field="name",
            value=name,
        )
    chosen = frozenset([scopes] if isinstance(scopes, str) else scopes)
    unknown = sorted(chosen - set(SCOPES))
    if unknown or not chosen:
        raise ConfigurationError(
            f"a token's scopes must be some of {', '.join(SCOPES)}, not {sorted(chosen)!r}",
            field="scopes",
            value=sorted(chosen),
        )
    secret = "sft_" + secrets.token_urlsafe(32)
    return secret, Token(name, chosen, _digest(secret))


def parse_tokens(text: str, *, source: str = "tokens") -> tuple[Token, ...]:
    """The tokens of ``text``: one ``name scope[,scope] sha256:<hex>`` a line; blank
    lines and ``#`` comments are skipped.

    Raises:
        ConfigurationError: a line that is not a token's, naming ``source`` and the
            line's number (never its text, which could hold a secret pasted by mistake),
            or a name given twice.
    """
    tokens: list[Token] = []
    names: set[str] = set()
    for number, text_line in enumerate(text.splitlines(), start=1):
        line = text_line.partition("#")[0].strip()
        if not line:
            continue
        parts = line.split()
        where = f"{source}, line {number}"
        digest = _DIGEST.fullmatch(parts[2]) if len(parts) == 3 else None
        scopes = frozenset(parts[1].split(",")) if len(parts) == 3 else frozenset()
        if (
            digest is None
            or _NAME.fullmatch(parts[0]) is None
            or not scopes
            or not scopes <= set(SCOPES)
        ):
            raise ConfigurationError(f"{where}: expected {_LINE}", field="tokens", value=where)
        if parts[0] in names:
            raise ConfigurationError(
                f"{where}: the name {parts[0]!r} is given twice", field="tokens", value=where
            )
        names.add(parts[0])
        tokens.append(Token(parts[0], scopes, digest.group(1)))
    return tuple(tokens)


def load_tokens(
    path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None
) -> tuple[Token, ...]:
    """The tokens of the file at ``path`` and of ``$STAGEFLOW_TOKENS`` (both, if given).

    Raises:
        ConfigurationError: the file cannot be read, or a line is not a token's.
    """
    env = os.environ if env is None else env
    tokens: list[Token] = []
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigurationError(
                f"cannot read the tokens file {str(path)!r}: {error.strerror}",
                field="tokens_file",
                value=str(path),
            ) from None
        tokens += parse_tokens(text, source=str(path))
    listed = env.get(TOKENS_ENV, "").replace(";", "\n")  # one a line, or separated by ;
    tokens += parse_tokens(listed, source=f"${TOKENS_ENV}")
    seen: set[str] = set()
    for token in tokens:
        if token.name in seen:
            raise ConfigurationError(
                f"token name {token.name!r} is given both in {str(path)!r} and ${TOKENS_ENV}",
                field="tokens",
                value=token.name,
            )
        seen.add(token.name)
    return tuple(tokens)


def authenticate(tokens: tuple[Token, ...], authorization: str | None) -> Token | str | None:
    """The token an ``Authorization`` header presents; None if it presents none, or a
    reason (a str) why it is refused."""
    if authorization is None:
        return None
    scheme, _, secret = authorization.strip().partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        return "the Authorization header must be 'Bearer <token>'"
    digest = _digest(secret)
    found = None
    for token in tokens:  # each compared, so that the time says nothing of which matched
        if hmac.compare_digest(digest, token.digest):
            found = token
    return found if found is not None else "invalid token"
