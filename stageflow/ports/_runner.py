from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .._context import StageCall
    from .._spec import StageSpec


@runtime_checkable
class StageRunner(Protocol):
    """Where a stage's call runs, when not in the engine's event loop.

    The scheduler and the interceptor chain stay in the engine: a runner replaces only
    the innermost call, the stage's own. The engine calls ``bind(spec, call)`` once per
    stage and graph when it composes the chain, and puts what it returns where ``call``
    was: so timeouts, retries, circuit breakers, budgets, checkpoints, spans, metrics
    and logs wrap a remote call as they wrap a local one.

    The contract of the call ``bind`` returns: it takes the stage's
    :class:`~stageflow.StageContext` and returns what the stage returned; it raises
    what the stage raised, as the same exception type with the same fields (so retry
    policies and ``except`` clauses work); the process running it dying is a
    :class:`~stageflow.errors.WorkerLostError` (retryable); when it is cancelled (a
    timeout, a cancelled run) it stops the remote work and discards a late result; the
    usage a stage reports (``ctx.usage.report``) reaches the run's ledger and budgets,
    and its ``ctx.state`` saves reach the engine's store.

    :func:`stageflow.detach` and :func:`stageflow.run_detached` do the part that is the
    same for every runner: a picklable copy of the context to ship, the call on the
    other side, and what comes back.
    """

    def bind(self, spec: StageSpec, call: StageCall) -> StageCall:
        """The call to run for ``spec`` in place of ``call`` (the stage's own call in the
        engine's process); ``spec.placement.resources`` says what it needs."""
        ...
