from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class SecretResolver(Protocol):
    """Where the secrets of one scheme live (a vault, a cloud secret manager):
    ``Engine(secrets={"vault": resolver})`` resolves ``SecretRef("vault", name)`` for
    ``ctx.secret(ref)``. ``env`` and ``file`` need none."""

    async def resolve(self, name: str) -> str:
        """The secret's text. Raise to say it cannot be had (the stage fails with that
        error: never put the secret in its message)."""
        ...
