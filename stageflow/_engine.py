"""Engine: runs StageGraphs with a set of interceptors, a sink and limits."""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ._budget import Budget, ModelChain
from ._durable import Checkpointing, check_ttl, default_owner
from ._graph import StageGraph
from ._ids import RUN_ID, new_run_id
from ._ledger import Governance
from ._pipeline import Pipeline
from ._policies import RetryPolicy
from ._result import RunResult, RunStatus
from ._run import RunCall, RunContext, check_labels
from ._scheduler import _LOOP_CLOCK, RunState, normalize_output
from ._sinks import check_sink
from ._spec import StageSpec
from ._stage import StageCall, StageContext
from .errors import ConfigurationError, LeaseLostError
from .interceptors._base import Interceptor, compose, compose_run, sort_interceptors
from .interceptors._breaker import CircuitBreakerInterceptor, CircuitBreakerRegistry
from .interceptors._budget import BudgetInterceptor
from .interceptors._checkpoint import CheckpointInterceptor
from .interceptors._retry import RetryInterceptor
from .interceptors._timeout import TimeoutInterceptor
from .ports import CheckpointStore, Clock, EventSink

if TYPE_CHECKING:
    from ._prices import PriceTable

__all__ = ["Engine"]


class Engine:
    """Runs stage graphs.

    An Engine holds what is shared by its runs: interceptors, event sink, clock
    and limits. It is cheap to create and safe to share; runs of one engine may
    go on concurrently.

    Args:
        interceptors: wrap every stage call, outermost first by ``priority``.
        sink: receives every event of every run (none by default: no event is
            even built).
        max_parallel: at most this many stages run at once (None: no limit).
        fail_fast: on the first failed stage, cancel the running stages and start
            no more (default); with False, independent branches go on and only the
            failed stage's dependents are skipped.
        clock: where time is read (default: the running loop's clock).
        stage_timeout: seconds each attempt of a stage without a ``timeout`` option may
            take. Default None: no limit, because a limit that suits one stage kills
            another's legitimate work; set it per stage, or here when all stages call
            services that should answer in bounded time.
        retry: the RetryPolicy of stages without a ``retry`` option. Default None: no
            retry, because retrying repeats side effects that may not be idempotent.
        circuit_breakers: where the circuit breakers live (default: a registry of this
            engine's own, shared by all its runs; pass one to share it between engines).
        store: a CheckpointStore: every run is recorded there, each stage's completion
            is stored before its dependents start, and :meth:`resume` goes on with a
            run that stopped.
        lease_ttl: seconds a run's lease lives without renewal (default: the store's
            ``lease_ttl``, else 30); the engine renews it every third of that while it
            drives the run, and a crashed driver's run can be taken over after it.
        budget: the token/cost :class:`~stageflow.Budget` of each run (stages may
            have their own too: ``with_stage(..., budget=)``).
        prices: a :class:`~stageflow.PriceTable` (or a mapping of model names to
            ``{"input": ..., "output": ...}`` prices per million tokens) that turns
            usage reports into cost; without one, token budgets work and cost is not
            computed.
        model_chains: :class:`~stageflow.ModelChain` s, for ``ctx.model()`` to step
            down when a ``downgrade`` budget runs short.

    Example:
        >>> import asyncio
        >>> async def hello(ctx):
        ...     return {"greeting": f"hello {ctx.data['name']}"}
        >>> graph = Pipeline("hi").with_stage("hello", hello).build()
        >>> result = asyncio.run(Engine().run(graph, data={"name": "owls"}))
        >>> result["hello"].data["greeting"]
        'hello owls'
    """

    __slots__ = (
        "_chains",
        "_clock",
        "_interceptors",
        "fail_fast",
        "governance",
        "lease_ttl",
        "max_parallel",
        "owner",
        "sink",
        "store",
    )

    @property
    def circuit_breakers(self) -> CircuitBreakerRegistry:
        """The registry of this engine's circuit breakers (to inspect their state)."""
        for interceptor in self._interceptors:
            if isinstance(interceptor, CircuitBreakerInterceptor):
                return interceptor.registry
        raise LookupError("no CircuitBreakerInterceptor")  # pragma: no cover - always one

    def __init__(
        self,
        *,
        interceptors: Iterable[Interceptor] = (),
        sink: EventSink | None = None,
        max_parallel: int | None = None,
        fail_fast: bool = True,
        clock: Clock | None = None,
        stage_timeout: float | None = None,
        retry: RetryPolicy | None = None,
        circuit_breakers: CircuitBreakerRegistry | None = None,
        store: CheckpointStore | None = None,
        lease_ttl: float | None = None,
        budget: Budget | None = None,
        prices: PriceTable | Mapping[str, Any] | None = None,
        model_chains: Iterable[ModelChain] = (),
    ) -> None:
        checked: object = interceptors  # checked at run time too: callers may not type-check
        if isinstance(checked, str | bytes) or not isinstance(checked, Iterable):
            raise ConfigurationError(
                f"interceptors must be a sequence of interceptors, not {interceptors!r}",
                "interceptors",
                interceptors,
            )
        given = list(interceptors)
        if circuit_breakers is not None and not isinstance(
            circuit_breakers, CircuitBreakerRegistry
        ):
            raise ConfigurationError(
                f"circuit_breakers must be a CircuitBreakerRegistry, not {circuit_breakers!r}",
                "circuit_breakers",
                circuit_breakers,
            )
        # The resilience interceptors are always there: for a stage without the option
        # they return its call unchanged, so they cost it nothing. An instance of the same
        # class among `interceptors` replaces the default one.
        defaults = (
            ("stage_timeout", stage_timeout, TimeoutInterceptor(stage_timeout)),
            ("retry", retry, RetryInterceptor(retry)),
            (
                "circuit_breakers",
                circuit_breakers,
                CircuitBreakerInterceptor(registry=circuit_breakers),
            ),
            ("budget", budget, BudgetInterceptor(budget)),
        )
        for field, value, default in defaults:
            mine = [g for g in given if type(g) is type(default)]
            if not mine:
                given.append(default)
            elif value is not None:  # two places for one setting: refuse, never drop one
                raise ConfigurationError(
                    f"{field}={value!r} conflicts with the {type(default).__name__} given in "
                    f"interceptors; configure that interceptor instead",
                    field,
                    value,
                )
        if store is not None:
            missing = [m for m in ("create_run", "acquire_lease", "record_stage")
                       if not callable(getattr(store, m, None))]  # fmt: skip
            if isinstance(store, type) or missing:
                raise ConfigurationError(
                    f"store={store!r} is no CheckpointStore instance", "store", store
                )
            given.append(CheckpointInterceptor())
        self._interceptors = sort_interceptors(given)
        run_budget = next(ic.budget for ic in given if isinstance(ic, BudgetInterceptor))
        self.governance = _governance(run_budget, prices, model_chains)
        if sink is not None:
            check_sink(sink)
        if max_parallel is not None and (
            not isinstance(max_parallel, int) or isinstance(max_parallel, bool) or max_parallel < 1
        ):
            raise ConfigurationError(
                f"max_parallel must be a positive int or None, not {max_parallel!r}",
                "max_parallel",
                max_parallel,
            )
        if not isinstance(fail_fast, bool):
            raise ConfigurationError(
                f"fail_fast must be True or False, not {fail_fast!r}", "fail_fast", fail_fast
            )
        if clock is not None and not all(
            callable(getattr(clock, m, None)) for m in ("monotonic", "wall", "sleep")
        ):
            raise ConfigurationError(
                f"clock {clock!r} is no Clock: it needs monotonic(), wall() and sleep()",
                "clock",
                clock,
            )
        self.store = store
        if lease_ttl is None:  # the store's default, else 30 s
            lease_ttl = getattr(store, "lease_ttl", 30.0)
        self.lease_ttl = check_ttl(lease_ttl)
        self.owner = default_owner()
        self.sink = sink
        self.max_parallel = max_parallel
        self.fail_fast = fail_fast
        self._clock = clock
        self._chains: weakref.WeakKeyDictionary[
            StageGraph, tuple[tuple[StageCall, ...], RunCall]
        ] = weakref.WeakKeyDictionary()

    @property
    def interceptors(self) -> tuple[Interceptor, ...]:
        """The interceptors, outermost first."""
        return self._interceptors

    def calls(self, graph: StageGraph) -> tuple[StageCall, ...]:
        """Each stage's call wrapped in this engine's interceptors, composed once per graph."""
        return self._compiled(graph)[0]

    def _compiled(self, graph: StageGraph) -> tuple[tuple[StageCall, ...], RunCall]:
        compiled = self._chains.get(graph)
        if compiled is None:
            calls = tuple(self._compose(spec) for spec in graph.stages)
            compiled = calls, compose_run(graph, self._interceptors, self._execute)
            self._chains[graph] = compiled
        return compiled

    def _compose(self, spec: StageSpec) -> StageCall:
        if not self._interceptors:
            return spec.call
        name = spec.name

        def normalizing(inner: StageCall) -> StageCall:
            # What interceptors that look at outputs see: a StageOutput, whatever the
            # stage returned. Only inserted under the first one that wraps this stage.
            async def normalized(ctx: StageContext) -> Any:
                return normalize_output(name, await inner(ctx))

            return normalized

        return compose(spec, self._interceptors, spec.call, normalizing)

    async def run(
        self,
        graph: StageGraph,
        data: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        timeout: float | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> RunResult:
        """Run ``graph`` once and return how it ended.

        Args:
            graph: what :meth:`Pipeline.build` returned.
            data: the run's initial data, read-only to stages as ``ctx.data``.
            run_id: the run's id (default: a new ULID).
            timeout: seconds for the whole run; past it, running stages are
                cancelled and the result's status is ``cancelled`` with a
                :class:`~stageflow.errors.RunTimeoutError` as ``error``.
            labels: str keys (1 to 256 characters) to str values (at most 1024), at
                most 64 of them, e.g. ``{"stageflow.target": "flows.py:pipeline"}``:
                what tools record about the run. Interceptors' ``wrap_run`` hooks see
                them as ``RunContext.labels``; only a durable run (an engine with a
                store) keeps them, in its ``RunRecord.labels``, where a resume finds
                them again.

        Returns:
            The :class:`~stageflow.RunResult`; a failed stage does not raise (call
            ``raise_for_status()`` for that).

        Raises:
            ConfigurationError: an argument is invalid.
            asyncio.CancelledError: the task running this was cancelled; running
                stages were cancelled first and ``run.cancelled`` was emitted.
        """
        _check_graph(graph, "run")
        if data is None:
            frozen: Mapping[str, Any] = MappingProxyType({})
        elif isinstance(data, Mapping):
            bad = [k for k in data if not isinstance(k, str)]
            if bad:
                raise ConfigurationError(
                    f"data keys must be str; got {bad[0]!r} ({type(bad[0]).__name__})",
                    "data",
                    bad[0],
                )
            frozen = MappingProxyType(dict(data))
        else:
            raise ConfigurationError(
                f"data must be a mapping, not {type(data).__name__} {data!r}", "data", data
            )
        if run_id is None:
            run_id = new_run_id()
        else:
            _check_run_id(run_id)
        _check_timeout(timeout)
        checked = check_labels(labels)
        checkpointing = None
        if self.store is not None:
            checkpointing = await Checkpointing.start(
                self.store, graph, run_id, frozen, labels=checked,
                owner=self.owner, ttl=self.lease_ttl, clock=self._clock or _LOOP_CLOCK,
            )  # fmt: skip
        run = RunContext(
            graph, run_id, frozen, timeout=timeout, checkpointing=checkpointing, labels=checked
        )
        return await self._compiled(graph)[1](run)

    async def resume(
        self, run_id: str, graph: StageGraph, *, timeout: float | None = None
    ) -> RunResult:
        """Go on with a run of this engine's store that did not complete.

        Stages that completed (or skipped themselves) are restored from the store and
        nothing inside them runs; the others run, those that were in flight when the
        run stopped included (at least once: use ``ctx.idempotency_key``). A run that
        completed is returned as it was, running nothing. The run's labels are read
        back from the store (``RunContext.labels``).

        Raises:
            ConfigurationError: the engine has no store, or an argument is invalid.
            GraphMismatchError: ``graph`` is not the graph the run started with; the
                error says what changed.
            UnknownRunError: the store has no such run.
            RunLeasedError: another driver holds the run.
        """
        if self.store is None:
            raise ConfigurationError(
                "resume() needs an engine with a store: Engine(store=...)", "store", None
            )
        _check_run_id(run_id)
        _check_graph(graph, "resume")
        _check_timeout(timeout)
        checkpointing, record, data = await Checkpointing.resume(
            self.store, graph, run_id,
            owner=self.owner, ttl=self.lease_ttl, clock=self._clock or _LOOP_CLOCK,
        )  # fmt: skip
        run = RunContext(
            graph,
            run_id,
            MappingProxyType(data),
            resumed=True,
            timeout=timeout,
            checkpointing=checkpointing,
            labels=record.labels,
        )
        return await self._compiled(graph)[1](run)

    async def _execute(self, run: RunContext) -> RunResult:
        # The innermost run call: what the interceptors' wrap_run hooks wrap.
        graph, run_id, timeout, checkpointing = (
            run.graph,
            run.run_id,
            run.timeout,
            run._checkpointing,
        )
        state = RunState(
            graph,
            self._compiled(graph)[0],
            run_id,
            run.data,
            sink=self.sink,
            clock=self._clock,
            max_parallel=self.max_parallel,
            fail_fast=self.fail_fast,
            governance=self.governance,
        )
        if checkpointing is None:
            return await state.execute(timeout)
        state.checkpoint = checkpointing
        if checkpointing.usage:  # what earlier drivers of this run spent counts
            budgets = {spec.name: spec.budget for spec in graph.stages if spec.budget}
            state.usage_ledger().restore(checkpointing.usage, budgets)
        checkpointing.keep_alive(
            lambda why: state.abort(LeaseLostError(run_id, checkpointing.lease.token))
        )
        try:
            result = await state.execute(timeout)
        except asyncio.CancelledError:
            await asyncio.shield(checkpointing.finish(RunStatus.CANCELLED, None, state.unstored()))
            raise
        except BaseException as error:
            await asyncio.shield(checkpointing.finish(RunStatus.FAILED, error, state.unstored()))
            raise
        await checkpointing.finish(result.status, result.error, state.unstored())
        return result

    def __repr__(self) -> str:
        names = ", ".join(ic.name for ic in self._interceptors)
        return f"<Engine interceptors=[{names}] max_parallel={self.max_parallel}>"


def _check_graph(graph: object, method: str) -> None:
    if not isinstance(graph, StageGraph):
        hint = " (call .build() on it first)" if isinstance(graph, Pipeline) else ""
        raise ConfigurationError(
            f"{method}() takes a StageGraph, not {type(graph).__name__}{hint}", "graph", graph
        )


def _check_run_id(run_id: object) -> None:
    if not isinstance(run_id, str) or RUN_ID.fullmatch(run_id) is None:
        raise ConfigurationError(
            f"run_id must be 1 to 128 letters, digits, '_', '.', ':' or '-', not {run_id!r}",
            "run_id",
            run_id,
        )


def _check_timeout(timeout: object) -> None:
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise ConfigurationError(
            f"timeout must be a positive number of seconds or None, not {timeout!r}",
            "timeout",
            timeout,
        )


def _governance(budget: Budget | None, prices: object, model_chains: object) -> Governance | None:
    """What the engine governs usage with, checked; None when it governs nothing."""
    table = None
    if prices is not None:
        from ._prices import PriceTable  # pydantic: imported only when prices are given

        if isinstance(prices, PriceTable):
            table = prices
        elif isinstance(prices, Mapping):
            table = PriceTable.of(prices)
        else:
            raise ConfigurationError(
                f"prices must be a PriceTable or a mapping of model names to prices, "
                f"not {prices!r}",
                "prices",
                prices,
            )
    if isinstance(model_chains, ModelChain | str | bytes) or not isinstance(model_chains, Iterable):
        raise ConfigurationError(
            f"model_chains must be a list of ModelChain, not {model_chains!r}",
            "model_chains",
            model_chains,
        )
    chains = list(model_chains)
    for chain in chains:
        if not isinstance(chain, ModelChain):
            raise ConfigurationError(
                f"model_chains must hold ModelChain objects, not {chain!r}",
                "model_chains",
                chain,
            )
    if budget is None and table is None and not chains:
        return None
    return Governance(budget, table, chains)
