"""What a stage is and what it returns: frozen values, no run-time state.

A stage's run-time view (:class:`~stageflow.StageContext`) lives in ``_context``;
how it ended (:class:`~stageflow.StageResult`) in ``_result``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeAlias, runtime_checkable

from ._status import StageKind, StageStatus
from .errors import ConfigurationError

if TYPE_CHECKING:
    from ._context import StageContext

__all__ = ["Stage", "StageKind", "StageOutput", "StageReturn", "StageStatus"]

_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})


class StageOutput:
    """What a stage returns: its data, or that it skipped or failed.

    A stage may also return a plain Mapping (same as ``StageOutput.ok(**mapping)``)
    or None (same as ``StageOutput.ok()``). Instances are immutable.

    Example:
        >>> StageOutput.ok(summary="3 pages").data["summary"]
        '3 pages'
        >>> StageOutput.skip("nothing to do").status
        <StageStatus.SKIPPED: 'skipped'>
    """

    __slots__ = ("data", "reason", "routes", "status")

    status: StageStatus
    data: Mapping[str, Any]
    reason: str | None
    routes: tuple[str, ...] | None

    def __init__(
        self,
        status: StageStatus = StageStatus.COMPLETED,
        data: Mapping[str, Any] = _EMPTY,
        reason: str | None = None,
        routes: tuple[str, ...] | None = None,
    ) -> None:
        if status is StageStatus.CANCELLED or not isinstance(status, StageStatus):
            raise ConfigurationError(
                f"StageOutput status must be completed, skipped or failed, not {status!r}",
                field="status",
                value=status,
            )
        _set_status(self, status)
        _set_data(self, data)
        _set_reason(self, reason)
        _set_routes(self, routes)

    @classmethod
    def ok(cls, **data: Any) -> StageOutput:
        """The stage completed with ``data`` as its output."""
        return _output(cls, _COMPLETED, data, None, None)

    @classmethod
    def route(cls, *targets: str, **data: Any) -> StageOutput:
        """A ROUTE stage completed with ``data``, choosing the successors in ``targets``.

        The stage's other ``routes`` are skipped with the reason ``not routed by
        '<stage>'``; choosing none, or a stage outside its ``routes``, fails it.

        Example:
            >>> StageOutput.route("fast", score=0.2).routes
            ('fast',)
        """
        return _output(cls, _COMPLETED, data, None, targets)

    @classmethod
    def skip(cls, reason: str = "skipped by the stage") -> StageOutput:
        """The stage decided not to run; its dependents are skipped with this reason."""
        return cls(StageStatus.SKIPPED, _EMPTY, str(reason))

    @classmethod
    def fail(cls, reason: str | BaseException, **data: Any) -> StageOutput:
        """The stage failed without raising; the run treats it as a raised error."""
        text = reason if isinstance(reason, str) else f"{type(reason).__name__}: {reason}"
        return cls(StageStatus.FAILED, data, text)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"StageOutput is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"StageOutput is immutable; cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StageOutput):
            return NotImplemented
        return (self.status, self.reason, self.routes, dict(self.data)) == (
            other.status,
            other.reason,
            other.routes,
            dict(other.data),
        )

    __hash__ = None  # type: ignore[assignment]  # data is a mutable mapping

    def __repr__(self) -> str:
        if self.routes is not None:
            shown = [repr(t) for t in self.routes] + [f"{k}={v!r}" for k, v in self.data.items()]
            return f"StageOutput.route({', '.join(shown)})"
        if self.status is StageStatus.COMPLETED:
            return f"StageOutput.ok({', '.join(f'{k}={v!r}' for k, v in self.data.items())})"
        how = "skip" if self.status is StageStatus.SKIPPED else "fail"
        return f"StageOutput.{how}({self.reason!r})"


# Building one is on many stages' path: its slots set through their descriptors, without
# __init__'s checks, costs half as much as object.__setattr__ by name.
_set_status = StageOutput.__dict__["status"].__set__
_set_data = StageOutput.__dict__["data"].__set__
_set_reason = StageOutput.__dict__["reason"].__set__
_set_routes = StageOutput.__dict__["routes"].__set__
_new = object.__new__
_COMPLETED: Final = StageStatus.COMPLETED


def _output(
    cls: type[StageOutput],
    status: StageStatus,
    data: Mapping[str, Any],
    reason: str | None,
    routes: tuple[str, ...] | None,
) -> StageOutput:
    out: StageOutput = _new(cls)
    _set_status(out, status)
    _set_data(out, data)
    _set_reason(out, reason)
    _set_routes(out, routes)
    return out


StageReturn: TypeAlias = StageOutput | Mapping[str, Any] | None
"""What a stage may return: a :class:`StageOutput`, a Mapping (its data) or None (no data)."""


@runtime_checkable
class Stage(Protocol):
    """A class-based stage: an object with ``execute(ctx)`` (async, or sync to run in a thread).

    ``with_stage`` takes such an object, or a class of them (instantiated with no
    arguments for every attempt). Plain functions are stages too: see
    :data:`~stageflow.StageFunction` and :data:`~stageflow.SyncStageFunction`.

    Example:
        >>> class Shout:
        ...     async def execute(self, ctx):
        ...         return {"text": ctx.data["text"].upper()}
        >>> isinstance(Shout(), Stage)
        True
    """

    def execute(self, ctx: StageContext) -> StageReturn | Awaitable[StageReturn]:
        """Run the stage; return a StageOutput, a Mapping or None (awaitable if async)."""
