"""Engine: runs StageGraphs with a set of interceptors, a sink and limits."""

from __future__ import annotations

import asyncio
import inspect
import math
import weakref
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from . import _codec
from ._budget import Budget, ModelChain
from ._check import check_queue, integer, number, refuse
from ._clock import LoopClock
from ._context import StageCall, StageContext
from ._durable import (
    DurableRun,
    budget_of,
    check_ttl,
    config_changes,
    config_of,
    config_text,
    default_owner,
    fingerprint,
    governing,
    new_record,
    structure,
)
from ._dynamic import InputSpec, InvalidValue, MapSpec, invalid_input
from ._eventlog import EventLogSink, check_event_log, with_log
from ._graph import StageGraph, set_default_run
from ._ids import RUN_ID, new_run_id
from ._ledger import Governance
from ._nested import BodyCalls, map_call, nested_call
from ._outputref import fetched
from ._pipeline import Pipeline
from ._policies import RetryPolicy
from ._result import RunResult, RunStatus
from ._run import RunCall, RunContext, check_labels
from ._scheduler import RunState, normalize_output
from ._sinks import check_sink
from ._spec import StageSpec, check_route, validated_call
from ._waiting import RunInputs, input_call
from .errors import (
    ConfigurationError,
    LeaseLostError,
    UnknownInputError,
    UnknownRunError,
)
from .interceptors._base import (
    Interceptor,
    SelectiveInterceptor,
    compose,
    compose_run,
    sort_interceptors,
)
from .interceptors._breaker import CircuitBreakerInterceptor, CircuitBreakerRegistry
from .interceptors._budget import BudgetInterceptor
from .interceptors._checkpoint import CheckpointInterceptor, check_storable
from .interceptors._retry import RetryInterceptor
from .interceptors._timeout import TimeoutInterceptor
from .ports import Clock, EventLog, EventSink, InputRecord, InputStore, RunQueue

if TYPE_CHECKING:
    from ._prices import PriceTable
    from .ports import Lease, RunRecord, RunStore, SecretResolver, StageRunner

__all__ = ["Engine"]


QUEUE_LABEL: Final = "stageflow.queue"
"""The label of a submitted run (:meth:`Engine.submit`): the name of its queue."""


class Engine:
    """Runs stage graphs.

    An Engine holds what is shared by its runs: interceptors, event sink, clock
    and limits. It is cheap to create and safe to share; runs of one engine may
    go on concurrently. Its settings are frozen once it exists (the interceptor
    chains are derived from them): :meth:`replace` makes an engine with others.

    Args:
        interceptors: wrap every stage call, outermost first by ``priority``. One
            that is an instance of a default interceptor's class (a subclass
            included: timeout, retry, circuit breaker, budget, checkpoint) takes
            that default's place.
        sink: receives every event of every run (none by default: no event is
            even built).
        max_parallel: at most this many stages run at once (None: no limit).
        fail_fast: on the first failed stage, cancel the running stages and start
            no more (default); with False, independent branches go on and only the
            failed stage's dependents are skipped.
        clock: where every timing decision is made: timeouts, retry backoff, circuit
            breakers, lease renewal, durations (default: a :class:`~stageflow.LoopClock`,
            the running loop's clock).
        stage_timeout: seconds each attempt of a stage without a ``timeout`` option may
            take. Default None: no limit, because a limit that suits one stage kills
            another's legitimate work; set it per stage, or here when all stages call
            services that should answer in bounded time.
        retry: the RetryPolicy of stages without a ``retry`` option. Default None: no
            retry, because retrying repeats side effects that may not be idempotent.
        circuit_breakers: where the circuit breakers live (default: a registry of this
            engine's own, shared by all its runs; pass one to share it between engines).
        store: a :class:`~stageflow.ports.RunStore`: every run is recorded there, each
            stage's completion is stored before its dependents start, and
            :meth:`resume` goes on with a run that stopped.
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
        without: names of default interceptors to leave out (``"timeout"``,
            ``"retry"``, ``"circuit_breaker"``, ``"budget"``, ``"checkpoint"``), for
            an interceptor of your own that does their job.
        input_poll: seconds between looks into the store, by a driver waiting for input
            (``run(..., wait=True)``), for a value another process sent (one sent with
            this engine's :meth:`send` arrives at once).
        event_log: an :class:`~stageflow.ports.EventLog` (usually the store itself:
            ``Engine(store=s, event_log=s)``) that keeps every event of every run, for
            ``stageflow events``, the service's event streams and
            :func:`~stageflow.follow_events`. Events are written in batches by an
            :class:`~stageflow.EventLogSink` (pass one to tune its batching), off the
            runs' path; ``run()`` and ``resume()`` return once their run's events are
            written, and a resumed run numbers its events on from the last stored
            ``seq``. It gets the events besides ``sink``.
        runner: the :class:`~stageflow.ports.StageRunner` that runs every stage's call
            that names no runner of its own (default: none, the event loop), e.g.
            ``RayRunner()``; the scheduler and the interceptors stay here.
        runners: runners by name, for ``with_stage(runner="ray")``: a name no runner
            has is an error when a run of the graph starts, naming the stage.
        secrets: :class:`~stageflow.ports.SecretResolver` s by scheme, for
            ``ctx.secret(SecretRef("vault", name))`` (``env`` and ``file`` need none).

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
        "_events",
        "_interceptors",
        "_lease_ttl",
        "_live",
        "_owner",
        "_selective",
        "_settings",
        "_sink",
        "governance",
    )

    _chains: weakref.WeakKeyDictionary[StageGraph, _Compiled]
    _clock: Clock
    _events: EventLogSink | None
    _interceptors: tuple[Interceptor, ...]
    _lease_ttl: float
    _live: weakref.WeakValueDictionary[str, RunInputs]
    _owner: str
    _selective: tuple[SelectiveInterceptor, ...]
    _settings: dict[str, Any]
    _sink: EventSink | None
    governance: Governance | None

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
        store: RunStore | None = None,
        lease_ttl: float | None = None,
        budget: Budget | None = None,
        prices: PriceTable | Mapping[str, Any] | None = None,
        model_chains: Iterable[ModelChain] = (),
        without: Iterable[str] = (),
        input_poll: float = 1.0,
        event_log: EventLog | None = None,
        runner: StageRunner | None = None,
        runners: Mapping[str, StageRunner] | None = None,
        secrets: Mapping[str, SecretResolver] | None = None,
    ) -> None:
        user = _given_interceptors(interceptors)
        _check_runners(runner, runners)
        _check_secrets(secrets)
        number(input_poll, "input_poll", "a positive number of seconds", gt=0)
        chains = _model_chains(model_chains)
        registry = _registry(circuit_breakers)
        _check_store(store)
        dropped = _check_without(without)
        if sink is not None:
            check_sink(sink)
        if event_log is not None and not isinstance(event_log, EventLogSink):
            check_event_log(event_log)
            event_log = EventLogSink(event_log)
        if max_parallel is not None:
            integer(max_parallel, "max_parallel", "a positive int or None", ge=1)
        if not isinstance(fail_fast, bool):
            refuse("fail_fast", "True or False", fail_fast)
        _check_clock(clock)
        chain = sort_interceptors(
            _with_defaults(
                user, dropped, stage_timeout=stage_timeout, retry=retry, budget=budget,
                circuit_breakers=circuit_breakers, registry=registry, store=store,
            )
        )  # fmt: skip
        run_budget = budget  # else the one of a BudgetInterceptor given in `interceptors`
        if run_budget is None:
            run_budget = next(
                (ic.budget for ic in chain if isinstance(ic, BudgetInterceptor)), None
            )
        if lease_ttl is None:  # the store's default, else 30 s
            lease_ttl = getattr(store, "lease_ttl", 30.0)
        own_breaker = any(isinstance(ic, CircuitBreakerInterceptor) for ic in user)
        set_ = object.__setattr__
        set_(self, "_settings", {
            "interceptors": user, "sink": sink, "max_parallel": max_parallel,
            "fail_fast": fail_fast, "clock": clock, "stage_timeout": stage_timeout,
            "retry": retry, "store": store, "lease_ttl": lease_ttl,
            "budget": budget, "prices": prices,
            "model_chains": chains, "without": dropped, "input_poll": input_poll,
            "event_log": event_log,  # its EventLogSink, which replace() shares
            "runner": runner, "runners": MappingProxyType(dict(runners or {})),
            "secrets": MappingProxyType(dict(secrets or {})),
            # replace() shares the registry, unless the breaker came in `interceptors`
            "circuit_breakers": None if own_breaker else registry,
        })  # fmt: skip
        set_(self, "_interceptors", chain)
        set_(self, "_events", event_log)
        set_(self, "_sink", sink if event_log is None else with_log(sink, event_log))
        set_(self, "_selective", tuple(ic for ic in chain if isinstance(ic, SelectiveInterceptor)))
        set_(self, "governance", _governance(run_budget, prices, chains))
        set_(self, "_lease_ttl", check_ttl(lease_ttl))
        set_(self, "_owner", default_owner())
        set_(self, "_clock", clock if clock is not None else LoopClock())
        set_(self, "_chains", weakref.WeakKeyDictionary())
        set_(self, "_live", weakref.WeakValueDictionary())

    def __setattr__(self, name: str, value: object) -> None:
        if name in _SETTINGS:
            raise AttributeError(
                f"Engine settings are frozen once the engine exists (its interceptor chains "
                f"are made from them): cannot set {name!r}; engine.replace({name}=...) "
                "returns an engine with another value"
            )
        raise AttributeError(f"Engine has no setting {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Engine settings are frozen: cannot delete {name!r}")

    def replace(self, **changes: Any) -> Engine:
        """An engine with these settings changed and the others the same as this one's.

        Takes the keyword arguments of :class:`Engine`. The new engine shares this
        one's circuit breaker registry unless ``circuit_breakers`` is given.

        Example:
            >>> Engine(max_parallel=4).replace(fail_fast=False).max_parallel
            4
        """
        unknown = sorted(set(changes) - set(self._settings))
        if unknown:
            raise ConfigurationError(
                f"Engine has no setting {unknown[0]!r}; "
                f"settings: {', '.join(sorted(_SETTINGS_ARGS))}",
                field=unknown[0],
                value=changes[unknown[0]],
            )
        return Engine(**{**self._settings, **changes})

    # ---------------------------------------------------------------- read-only settings

    @property
    def settings(self) -> Mapping[str, Any]:
        """The arguments this engine was made with, by name (read-only): what
        :meth:`replace` starts from. ``interceptors`` are those given, without the
        defaults; ``circuit_breakers`` is the registry shared with replaced engines.
        """
        return MappingProxyType(self._settings)

    @property
    def interceptors(self) -> tuple[Interceptor, ...]:
        """The interceptors, outermost first (defaults included)."""
        return self._interceptors

    @property
    def sink(self) -> EventSink | None:
        """Where the events of every run go."""
        return self._settings["sink"]  # type: ignore[no-any-return]

    @property
    def event_log(self) -> EventLogSink | None:
        """The sink writing every run's events to the ``event_log`` given (None: none);
        :func:`~stageflow.follow_events` on it wakes up at each of its writes."""
        return self._events

    @property
    def store(self) -> RunStore | None:
        """Where runs are recorded (None: runs are not durable)."""
        return self._settings["store"]  # type: ignore[no-any-return]

    @property
    def max_parallel(self) -> int | None:
        """At most this many stages of a run at once (None: no limit)."""
        return self._settings["max_parallel"]  # type: ignore[no-any-return]

    @property
    def fail_fast(self) -> bool:
        """Whether the first failed stage stops the run."""
        return self._settings["fail_fast"]  # type: ignore[no-any-return]

    @property
    def clock(self) -> Clock:
        """The clock of every timing decision."""
        return self._clock

    @property
    def lease_ttl(self) -> float:
        """Seconds a durable run's lease lives without renewal."""
        return self._lease_ttl

    @property
    def owner(self) -> str:
        """Who this engine is when it holds a run's lease (``host:pid:id``)."""
        return self._owner

    @property
    def circuit_breakers(self) -> CircuitBreakerRegistry:
        """The registry of this engine's circuit breakers (to inspect their state); it
        stays empty when ``without`` left the breaker out."""
        for interceptor in self._interceptors:
            if isinstance(interceptor, CircuitBreakerInterceptor):
                return interceptor.registry
        registry: CircuitBreakerRegistry = self._settings["circuit_breakers"]
        return registry

    # ---------------------------------------------------------------- chains

    def calls(self, graph: StageGraph) -> tuple[StageCall, ...]:
        """Each stage's call wrapped in all of this engine's interceptors, composed once
        per graph."""
        return self._compiled(graph).calls(tuple(True for _ in self._selective))

    def _compiled(self, graph: StageGraph) -> _Compiled:
        compiled = self._chains.get(graph)
        if compiled is None:
            compiled = _Compiled(
                graph,
                self._interceptors,
                self._selective,
                self._execute,
                self._body_calls,
                self._placed(graph),
            )
            self._chains[graph] = compiled
        return compiled

    def _placed(self, graph: StageGraph) -> tuple[StageCall, ...]:
        """Each stage's own call, where it runs: in this process (``spec.call``), or
        through its runner (``with_stage(runner=)``, else ``Engine(runner=)``).

        A runner may leave an output where it ran (an :class:`~stageflow.OutputRef`): it
        stays a reference only while every stage that reads it is a plain stage, with no
        ``when=``, on the same runner, which hands it on; otherwise it is fetched when
        the call returns (see :class:`~stageflow.OutputRef`)."""
        default = self._settings["runner"]
        if default is None and all(spec.placement is None for spec in graph.stages):
            return tuple(spec.call for spec in graph.stages)  # the common case: the loop
        runners = tuple(self._runner_of(spec) for spec in graph.stages)
        stages = graph.stages
        calls: list[StageCall] = []
        for i, spec in enumerate(stages):
            runner = runners[i]
            if runner is None:
                calls.append(spec.call)
                continue
            call: StageCall = runner.bind(spec, spec.call)
            readers = graph.successors[i]
            handed = (
                readers and spec.output is None and spec.dynamic is None
                and all(runners[j] is runner and stages[j].dynamic is None
                        and stages[j].when is None for j in readers)
            )  # fmt: skip
            if not handed:
                call = _fetching(call)
            if spec.output is not None:  # the model is checked here, on what came back
                call = validated_call(spec.name, spec.output, call)
            calls.append(call)
        return tuple(calls)

    def _runner_of(self, spec: StageSpec) -> StageRunner | None:
        """The runner of ``spec``'s call, or None: in the event loop."""
        placement = spec.placement
        default = self._settings["runner"]
        if placement is None and default is None:
            return None
        if spec.dynamic is not None and not isinstance(spec.dynamic, MapSpec):
            return None  # an input, loop or subgraph calls no code of its own
        runner = default if placement is None or placement.runner is None else placement.runner
        if runner is None:
            raise ConfigurationError(
                f"stage {spec.name!r}: resources= needs a runner (with_stage(runner=...), "
                "or Engine(runner=...)) to run the call where they are",
                field="resources",
                value=dict(placement.resources) if placement is not None else None,
            )
        if isinstance(runner, str):
            runners = self._settings["runners"]
            if runner not in runners:
                known = ", ".join(map(repr, runners)) or "none"
                raise ConfigurationError(
                    f"stage {spec.name!r}: runner={runner!r} is not one of this engine's "
                    f"runners ({known}); give it: Engine(runners={{{runner!r}: ...}})",
                    field="runner",
                    value=runner,
                )
            named: StageRunner = runners[runner]
            return named
        chosen: StageRunner = runner
        return chosen

    def _body_calls(self, body: StageGraph, flags: tuple[bool, ...]) -> tuple[StageCall, ...]:
        """The calls of a loop's or subgraph's body, as composed for the run's variant."""
        return self._compiled(body).calls(flags)

    # ---------------------------------------------------------------- running

    async def run(
        self,
        graph: StageGraph,
        data: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        timeout: float | None = None,
        labels: Mapping[str, str] | None = None,
        wait: bool = False,
    ) -> RunResult:
        """Run ``graph`` once and return how it ended (or stopped to wait for input).

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
            wait: for a graph with input stages (``with_input``): keep the driver
                alive, waiting, until every input is given or its deadline passes (a
                long-lived server's way), instead of returning a result with status
                ``waiting`` once nothing else can run (the default).

        Returns:
            The :class:`~stageflow.RunResult`; a failed stage does not raise (call
            ``raise_for_status()`` for that).

        Raises:
            ConfigurationError: an argument is invalid.
            CodecError: the engine has a store and a stage's declared ``output=``
                model has a field whose type cannot be stored (naming stage, field
                and type); nothing was written.
            asyncio.CancelledError: the task running this was cancelled; running
                stages were cancelled first and ``run.cancelled`` was emitted.
        """
        _check_graph(graph, "run")
        frozen = _frozen_data(data)
        if run_id is None:
            run_id = new_run_id()
        else:
            _check_run_id(run_id)
        timeout = _check_timeout(timeout)
        checked = check_labels(labels)
        compiled = self._compiled(graph)
        self._check_inputs(graph, compiled.inputs, wait)
        durable = None
        store = self.store
        if store is not None:
            check_storable(graph)  # declared output models, before anything is written
            durable = await DurableRun.start(
                store, graph, run_id, frozen, labels=checked,
                owner=self._owner, ttl=self._lease_ttl, clock=self._clock,
                config=config_text(self._governing(graph, timeout)),
                inputs=[InputRecord(run_id, spec.name, spec.dynamic.schema.text)  # type: ignore[union-attr]
                        for spec in compiled.inputs],
            )  # fmt: skip
        run = RunContext(
            graph, run_id, frozen, timeout=timeout, durable=durable, labels=checked,
            clock=self._clock, wait=wait,
        )  # fmt: skip
        return await compiled.run_call(run)

    async def submit(
        self,
        graph: StageGraph,
        data: Mapping[str, Any] | None = None,
        *,
        queue: str = "default",
        priority: int = 0,
        run_id: str | None = None,
        timeout: float | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> str:
        """Record a run of ``graph`` for a worker to drive, and return its id at once.

        The run is stored with status ``queued`` in ``queue``; nothing of it runs here. A
        :class:`~stageflow.Worker` serving the queue (``stageflow worker --queue``) whose
        catalog has a pipeline of ``graph``'s name claims it (higher ``priority`` first,
        then the oldest) and drives it as :meth:`resume` would, with this engine's
        governing settings as stored now (budget, prices, model chains, timeout,
        max_parallel, fail_fast). Follow it as any run: ``stageflow show``, the event log,
        the store's ``get_run``. Its inputs (``with_input``) are declared now, so values
        may be sent before a worker claims it.

        Args:
            graph: what :meth:`Pipeline.build` returned; workers find it by its name.
            data: the run's initial data.
            queue: the queue's name (letters, digits, ``_.:-``; 1 to 128).
            priority: higher is claimed first (an int of 32 bits).
            run_id: the run's id (default: a new ULID).
            timeout: seconds for each drive of the run (as ``run(timeout=)``).
            labels: as :meth:`run`'s; ``stageflow.queue`` is added (the queue's name).

        Raises:
            ConfigurationError: an argument is invalid, or the engine's store is none or
                keeps no queue (``field="store"``: ``SQLAlchemyStore`` does).
            CodecError: as :meth:`run`'s, before anything is written.
            RunExistsError: ``run_id`` is taken.
        """
        store: object = self.store
        if not isinstance(store, RunQueue):
            refuse(
                "store",
                "an engine's store that keeps queued runs (a RunQueue: SQLAlchemyStore)",
                store,
            )
        _check_graph(graph, "submit")
        frozen = _frozen_data(data)
        if run_id is None:
            run_id = new_run_id()
        else:
            _check_run_id(run_id)
        check_queue(queue)
        integer(priority, "priority", "an int of 32 bits", ge=-(2**31), le=2**31 - 1)
        timeout = _check_timeout(timeout)
        checked = dict(check_labels(labels) or {})
        checked[QUEUE_LABEL] = queue
        compiled = self._compiled(graph)
        check_storable(graph)
        config = config_text(self._governing(graph, timeout))
        record = new_record(graph, run_id, frozen, RunStatus.QUEUED, self._clock, checked, config)
        inputs = [InputRecord(run_id, spec.name, spec.dynamic.schema.text)  # type: ignore[union-attr]
                  for spec in compiled.inputs]  # fmt: skip
        await store.enqueue(record, queue=queue, priority=priority, inputs=inputs)
        return run_id

    async def resume(
        self,
        run_id: str,
        graph: StageGraph,
        *,
        timeout: float | None = None,
        override: bool = False,
        take_over: bool = False,
        wait: bool = False,
    ) -> RunResult:
        """Go on with a run of this engine's store that did not complete.

        Stages that completed (or skipped themselves) are restored from the store and
        nothing inside them runs; the others run, those that were in flight when the
        run stopped included (at least once: use ``ctx.idempotency_key``). A run that
        completed is returned as it was, running nothing. The run's labels are read
        back from the store (``RunContext.labels``), and so is what it spent.

        The run's governing configuration, stored when it started, governs the resume
        too: a setting this engine leaves unset (no ``budget``, no ``prices``, no
        ``model_chains``, ``max_parallel=None``, ``fail_fast=True``) takes the stored
        value. A money setting given that differs from the stored one (the run budget,
        prices, model chains, or a stage's declared ``budget``/``estimate``) is refused,
        unless ``override=True``: then the given settings govern this drive (the stored
        configuration stays as it was). A ``max_parallel`` or ``fail_fast=False`` given
        wins for this drive. So does a ``timeout`` given; without one, the run's own
        timeout bounds this drive too (each drive gets all of it: what earlier drives
        completed is not done again).

        A run whose driver was killed stays leased until its lease expires (``lease_ttl``
        after its last heartbeat): until then a resume raises ``RunLeasedError``. With
        ``take_over=True`` it takes the lease at once, with a new fencing token. Use it
        only when the owner is known dead: should it be alive after all, its next
        fenced write (a stage's outcome, ``ctx.state.save``, usage, a heartbeat) raises
        ``LeaseLostError`` and it stops its run, writing nothing more; the stages it had
        in flight run in both drivers (at least once, as always).

        Args:
            run_id: the run.
            graph: the graph the run started with.
            timeout: seconds for this drive (default: the timeout the run started with;
                ``math.inf``: no limit).
            override: let the given money settings govern instead of the stored ones.
            take_over: take the run's lease even from a driver whose lease has not
                expired (known dead).
            wait: keep waiting for inputs not given yet, as ``run(..., wait=True)``
                does (default: return a result with status ``waiting`` again).

        Raises:
            ConfigurationError: the engine has no store, an argument is invalid, or a
                money setting differs from the run's stored configuration (the error
                says which) and ``override`` is False, or ``take_over`` is given to a
                store whose ``acquire_lease`` has no ``take_over`` option.
            GraphMismatchError: ``graph`` is not the graph the run started with; the
                error says what changed.
            UnknownRunError: the store has no such run.
            RunLeasedError: another driver holds the run (and ``take_over`` is False).
        """
        store = self.store
        if store is None:
            raise ConfigurationError(
                "resume() needs an engine with a store: Engine(store=...)",
                field="store",
                value=None,
            )
        _check_run_id(run_id)
        _check_graph(graph, "resume")
        check_storable(graph)
        _check_timeout(timeout)
        if not isinstance(override, bool):
            refuse("override", "True or False", override)
        if not isinstance(take_over, bool):
            refuse("take_over", "True or False", take_over)
        self._check_inputs(graph, self._compiled(graph).inputs, wait)
        record = await DurableRun.checked_record(store, graph, run_id)
        return await self._resumed(store, record, graph, timeout, override, take_over, wait)

    async def _resumed(
        self,
        store: RunStore,
        record: RunRecord,
        graph: StageGraph,
        timeout: float | None,
        override: bool = False,
        take_over: bool = False,
        wait: bool = False,
        lease: Lease | None = None,
    ) -> RunResult:
        """Drive a run whose record was checked against ``graph`` (``lease``: held already,
        by a worker's claim)."""
        run_id = record.run_id
        unlimited = timeout is not None and _check_timeout(timeout) is None  # math.inf
        engine, timeout = self._resuming(record, graph, timeout, override)
        if unlimited:
            timeout = None
        durable, record, data = await DurableRun.resume(
            store, graph, run_id, owner=self._owner, ttl=self._lease_ttl, clock=self._clock,
            record=record, take_over=take_over, lease=lease,
        )  # fmt: skip
        run = RunContext(
            graph, run_id, MappingProxyType(data), timeout=timeout,
            resumed=record.status is not RunStatus.QUEUED,  # (a submitted run's first drive)
            durable=durable, labels=record.labels, clock=self._clock, wait=wait,
        )  # fmt: skip
        return await engine._compiled(graph).run_call(run)

    def _governing(self, graph: StageGraph, timeout: float | None) -> dict[str, Any]:
        governance = self.governance
        return governing(
            graph,
            budget=None if governance is None else governance.budget,
            prices=None if governance is None else governance.prices,
            model_chains=self._settings["model_chains"],
            timeout=timeout,
            max_parallel=self.max_parallel,
            fail_fast=self.fail_fast,
        )

    def _resuming(
        self, record: RunRecord, graph: StageGraph, timeout: float | None, override: bool
    ) -> tuple[Engine, float | None]:
        """The engine and timeout a resume drives with: the stored configuration where
        this engine sets nothing; a refusal where it sets other money settings."""
        stored = config_of(record)
        if stored is None:  # a run recorded without one: this engine's settings
            return self, timeout
        restore, differ = config_changes(stored, self._governing(graph, timeout))
        if differ and not override:
            raise ConfigurationError(
                f"run {record.run_id!r} was started with another configuration: "
                f"{'; '.join(differ)}. Resume with the same settings or none (the stored ones "
                "are restored), or override them for this drive (Engine.resume(override=True),"
                " stageflow resume --override)",
                field="override",
                value=differ,
            )
        changes: dict[str, Any] = {}
        for key, value in restore.items():
            if key == "budget":
                changes[key] = budget_of(value)
            elif key == "prices":
                from ._prices import PriceTable  # pydantic: imported only when prices are

                changes[key] = PriceTable(**value)
            elif key == "model_chains":
                changes[key] = tuple(ModelChain(*models) for models in value)
            else:
                changes[key] = value
        if timeout is None:  # the run's own limit holds for each drive, unless one is given
            timeout = stored.get("timeout")
        return (self.replace(**changes) if changes else self), timeout

    async def _execute(self, run: RunContext) -> RunResult:
        # The innermost run call: what the interceptors' wrap_run hooks wrap.
        graph, durable = run.graph, run.durable
        compiled = self._compiled(graph)
        flags = tuple(ic.applies(run) for ic in self._selective)
        calls = compiled.calls(flags)
        state = RunState(
            graph,
            calls,
            run.run_id,
            run.data,
            sink=self._sink,
            clock=self._clock,
            max_parallel=self.max_parallel,
            fail_fast=self.fail_fast,
            governance=self.governance,
            durable=durable,
        )
        state.flags = flags
        state.secrets = self._settings["secrets"]
        events = self._events
        if events is not None:
            if run.resumed:  # a run's events are numbered on across its drives
                state.seq = await events.seq_of(run.run_id)
            try:
                return await self._inputs(run, state, compiled)
            finally:
                await _written(events)
        return await self._inputs(run, state, compiled)

    async def _inputs(self, run: RunContext, state: RunState, compiled: _Compiled) -> RunResult:
        if not compiled.inputs:
            return await self._drive(run, state)
        inputs = RunInputs(
            run.run_id, run.graph, run.durable, self._clock, wait=run.wait,
            poll=self._settings["input_poll"],
            names={s.name: s.dynamic.map is not None for s in compiled.inputs},  # type: ignore[union-attr]
        )  # fmt: skip
        state.inputs = inputs
        self._live[run.run_id] = inputs  # for send() to deliver to
        try:
            return await self._drive(run, state)
        finally:
            inputs.closed = True
            if self._live.get(run.run_id) is inputs:
                del self._live[run.run_id]

    async def _drive(self, run: RunContext, state: RunState) -> RunResult:
        graph, durable = run.graph, run.durable
        if durable is None:
            return await state.execute(run.timeout)
        if durable.usage:  # what earlier drivers of this run spent counts
            budgets = {}
            for record in durable.usage:  # an item's or a nested stage's: its spec's budget
                spec = graph.spec_of(record.stage)
                if spec is not None and spec.budget is not None:
                    budgets[record.stage] = spec.budget
            state.usage_ledger().restore(durable.usage, budgets)
        durable.keep_alive(
            lambda why: state.abort(LeaseLostError.of(run.run_id, durable.lease.token))
        )
        try:
            result = await state.execute(run.timeout, resumed=run.resumed)
        except asyncio.CancelledError:
            ended = RunStatus.QUEUED if durable.requeue else RunStatus.CANCELLED
            await _finish(durable, ended, None, state, self._events)
            raise
        except BaseException as error:
            await _finish(durable, RunStatus.FAILED, error, state, self._events)
            raise
        await _finish(durable, result.status, result.error, state, self._events)
        return result

    # ---------------------------------------------------------------- input

    async def send(
        self, run_id: str, name: str, value: Any, *, graph: StageGraph | None = None
    ) -> InputRecord:
        """Give input ``name`` of run ``run_id`` its value (``with_input``).

        The value is validated against the input's schema before anything is stored,
        then stored once (the store refuses a second value, whoever sends it). A driver
        of the run in this process gets it at once; one elsewhere waiting with
        ``wait=True`` finds it in the store; a run that stopped to wait goes on with
        :meth:`resume`. A value sent before the run reaches its input stage is kept
        for it.

        Args:
            run_id: the run.
            name: the input (its stage's name).
            value: the value, as JSON data or anything the schema validates (a model
                instance included).
            graph: the run's graph; needed only when this engine neither drives the
                run nor ran a graph like it (the schema is the graph's).

        Returns:
            The input as stored (for a run without a store: as kept in this process).

        Raises:
            InputValidationError: ``value`` does not match the schema (the error names
                the field); nothing was stored.
            UnknownInputError: the run has no such input, or it has ended.
            InputAlreadyGivenError: the input has its value already.
            InputTimeoutError: the input's deadline has passed.
            UnknownRunError: no such run (in the store, or, without one, driven here).
            GraphMismatchError: ``graph`` is not the graph the run started with.
            ConfigurationError: the graph is unknown here (pass ``graph=``), or an
                argument is invalid.
        """
        _check_run_id(run_id)
        if not isinstance(name, str):
            refuse("name", "the name of an input stage (a str)", name)
        if graph is not None:
            _check_graph(graph, "send")
        live = self._live.get(run_id)
        store = self.store
        if store is None and live is None:
            raise UnknownRunError.of(run_id)
        if graph is None:
            graph = live.graph if live is not None else await self._graph_of(run_id)
        elif store is not None and live is None:  # the schema must be the run's
            await DurableRun.checked_record(store, graph, run_id)
        spec = graph.spec_of(name)
        if (
            spec is None
            or not isinstance(spec.dynamic, InputSpec)
            or (
                spec.dynamic.map is not None and name == spec.name  # its items take the values
            )
        ):
            known = [_addressed(s) for s in graph.stages if isinstance(s.dynamic, InputSpec)]
            raise UnknownInputError.of(run_id, name, known)
        text = _codec.dumps(_validated(run_id, name, spec.dynamic, value), f"input {name!r}")
        at = self._clock.wall()
        if store is None:
            assert live is not None
            return live.give(name, text, at)
        row: InputRecord = await store.give_input(run_id, name, text, at)  # type: ignore[attr-defined]
        if live is not None:
            live.deliver(row)
        return row

    async def _graph_of(self, run_id: str) -> StageGraph:
        """The graph of a run in the store, among those this engine has run."""
        store = self.store
        if store is not None:
            record = await store.get_run(run_id)
            for graph in list(self._chains):
                if graph.name == record.pipeline and fingerprint(structure(graph)) == (
                    record.fingerprint
                ):
                    return graph
        raise ConfigurationError(
            f"send(): run {run_id!r}'s graph is unknown to this engine (it has not run it): "
            "pass it, engine.send(run_id, name, value, graph=graph)",
            field="graph",
            value=None,
        )

    def _check_inputs(self, graph: StageGraph, inputs: tuple[StageSpec, ...], wait: object) -> None:
        if not isinstance(wait, bool):
            refuse("wait", "True or False", wait)
        if not inputs:
            return
        store = self.store
        names = ", ".join(repr(spec.name) for spec in inputs)
        if store is None and not wait:
            raise ConfigurationError(
                f"{graph.name!r} has input stages ({names}) and this engine no store: a run "
                "that stopped to wait could never go on. Give the engine a store, or drive "
                "the run with run(..., wait=True) and give input with engine.send",
                field="wait",
                value=wait,
            )
        if store is not None and not isinstance(store, InputStore):
            raise ConfigurationError(
                f"{graph.name!r} has input stages ({names}), but {type(store).__name__} keeps "
                "no inputs: it is no InputStore (declare_inputs, wait_input, give_input, "
                "load_inputs)",
                field="store",
                value=store,
            )

    def __repr__(self) -> str:
        names = ", ".join(ic.name for ic in self._interceptors)
        return f"<Engine interceptors=[{names}] max_parallel={self.max_parallel}>"


set_default_run(lambda graph, data, **options: Engine().run(graph, data, **options))

_SETTINGS_ARGS: Final = frozenset(inspect.signature(Engine.__init__).parameters) - {"self"}
_SETTINGS: Final = _SETTINGS_ARGS | {"clock", "owner", "governance", "interceptors"}
_DEFAULT_NAMES: Final = ("timeout", "retry", "circuit_breaker", "budget", "checkpoint")


class _Compiled:
    """One graph's chains on one engine: the run call, and the stage calls per variant.

    A variant is which of the engine's selective interceptors (``applies(run)``) wrap
    the stages of a run; each is composed once, the first time a run needs it.
    """

    __slots__ = ("_base", "_body_calls", "_graph", "_interceptors", "_selective", "_variants",
                 "inputs", "run_call")  # fmt: skip

    def __init__(
        self,
        graph: StageGraph,
        interceptors: tuple[Interceptor, ...],
        selective: tuple[SelectiveInterceptor, ...],
        execute: RunCall,
        body_calls: BodyCalls,
        base: tuple[StageCall, ...],
    ) -> None:
        self._graph = graph
        self._base = base  # each stage's own call, where it runs
        self._body_calls = body_calls
        self._interceptors = interceptors
        self._selective = selective
        self._variants: dict[tuple[bool, ...], tuple[StageCall, ...]] = {}
        self.run_call = compose_run(graph, interceptors, execute)
        self.inputs = tuple(spec for spec in graph.stages if isinstance(spec.dynamic, InputSpec))

    def calls(self, flags: tuple[bool, ...]) -> tuple[StageCall, ...]:
        calls = self._variants.get(flags)
        if calls is None:
            left_out = {id(ic) for ic, on in zip(self._selective, flags, strict=True) if not on}
            chain = [ic for ic in self._interceptors if id(ic) not in left_out]
            pairs = zip(self._graph.stages, self._base, strict=True)
            calls = tuple(_compose(spec, base, chain, self._body_calls) for spec, base in pairs)
            self._variants[flags] = calls
        return calls


def _compose(
    spec: StageSpec, base: StageCall, interceptors: Sequence[Interceptor], body_calls: BodyCalls
) -> StageCall:
    """A stage's call in its chain: ``base`` (its own call, where it runs) wrapped; a map's
    chain wraps each item, in the map's call; a loop's or subgraph's wraps the call that
    drives its body."""
    dynamic = spec.dynamic
    if dynamic is None:
        return _chained(spec, interceptors, base)
    if isinstance(dynamic, MapSpec):
        return map_call(spec, _chained(spec, interceptors, base))
    if isinstance(dynamic, InputSpec):  # an input per item: a map whose items wait
        call = _chained(spec, interceptors, input_call(spec))
        return call if dynamic.map is None else map_call(spec._replace(dynamic=dynamic.map), call)
    return _chained(spec, interceptors, nested_call(spec, body_calls))


def _addressed(spec: StageSpec) -> str:
    """How a sender addresses an input stage: its name, or ``name[key]`` per item."""
    declared = spec.dynamic
    if isinstance(declared, InputSpec) and declared.map is not None:
        return f"{spec.name}[key]"
    return spec.name


def _validated(run_id: str, name: str, declared: InputSpec, value: Any) -> Any:
    """``value`` validated for input ``name`` (as JSON data), or InputValidationError."""
    try:
        return declared.schema.validate(value)
    except InvalidValue as invalid:
        raise invalid_input(run_id, name, invalid) from None


def _chained(spec: StageSpec, interceptors: Sequence[Interceptor], call: StageCall) -> StageCall:
    if not interceptors:
        return call
    name = spec.name

    def normalizing(inner: StageCall) -> StageCall:
        # What interceptors that look at outputs see: a StageOutput, whatever the
        # stage returned. Only inserted under the first one that wraps this stage.
        async def normalized(ctx: StageContext) -> Any:
            return normalize_output(name, await inner(ctx))

        return normalized

    routes = spec.routes
    if routes is None:
        return compose(spec, interceptors, call, normalizing)

    # A ROUTE stage's choice is checked right around its call: inside retry (an LLM router
    # may choose well the next time) and the checkpoint (a store never keeps a stray one).
    async def routed(ctx: StageContext) -> Any:
        out = normalize_output(name, await call(ctx))
        check_route(ctx.stage, routes, out)
        return out

    composed = compose(spec, interceptors, routed, normalizing)
    return call if composed is routed else composed  # nothing wraps it: the scheduler checks


async def _written(events: EventLogSink) -> None:
    """Wait until the events emitted so far are written (or given up), even when the
    caller is cancelled meanwhile (the cancel is raised afterwards)."""
    writing = asyncio.ensure_future(events.flush())
    try:
        await asyncio.shield(writing)
    except asyncio.CancelledError:
        await asyncio.wait([writing])
        raise


async def _finish(
    durable: DurableRun,
    status: RunStatus,
    error: BaseException | None,
    state: RunState,
    events: EventLogSink | None,
) -> None:
    """Record the run's end and release its lease, even when the caller is cancelled
    meanwhile: the cancel is raised once the lease is released, so that a resume right
    after it finds the run free. Its events are written first: a run the store shows
    ended has all its events in the event log."""

    async def finish() -> None:
        if events is not None:
            await events.flush()
        await durable.finish(status, error, state.unstored())

    finishing = asyncio.ensure_future(finish())
    try:
        await asyncio.shield(finishing)
    except asyncio.CancelledError:
        await asyncio.wait([finishing])
        raise


def _with_defaults(
    user: tuple[Interceptor, ...],
    dropped: frozenset[str],
    *,
    stage_timeout: float | None,
    retry: RetryPolicy | None,
    budget: Budget | None,
    circuit_breakers: CircuitBreakerRegistry | None,
    registry: CircuitBreakerRegistry,
    store: RunStore | None,
) -> list[Interceptor]:
    """The interceptors given, and the defaults they do not replace and ``without`` keeps.

    The defaults are always there (checkpoint: with a store): for a stage without the
    option they return its call unchanged, so they cost it nothing. One given that is
    an instance of a default's class (a subclass too) takes its place.
    """
    defaults: list[tuple[str, object, Interceptor]] = [
        ("stage_timeout", stage_timeout, TimeoutInterceptor(stage_timeout)),
        ("retry", retry, RetryInterceptor(retry)),
        ("circuit_breakers", circuit_breakers, CircuitBreakerInterceptor(registry=registry)),
        ("budget", budget, BudgetInterceptor(budget)),
    ]
    if store is not None:
        defaults.append(("store", None, CheckpointInterceptor()))
    chain = list(user)
    for field, value, default in defaults:
        mine = [ic for ic in user if isinstance(ic, type(default))]
        if mine and value is not None:  # two places for one setting: refuse, never drop one
            raise ConfigurationError(
                f"{field}={value!r} conflicts with the {type(mine[0]).__name__} given in "
                f"interceptors; configure that interceptor instead",
                field=field,
                value=value,
            )
        if not mine and default.name not in dropped:
            chain.append(default)
    return chain


def _registry(registry: object) -> CircuitBreakerRegistry:
    if registry is None:
        return CircuitBreakerRegistry()
    if not isinstance(registry, CircuitBreakerRegistry):
        refuse("circuit_breakers", "a CircuitBreakerRegistry", registry)
    return registry


def _given_interceptors(interceptors: object) -> tuple[Interceptor, ...]:
    # Checked at run time too: callers may not type-check.
    if isinstance(interceptors, str | bytes) or not isinstance(interceptors, Iterable):
        refuse("interceptors", "a sequence of interceptors", interceptors)
    return tuple(interceptors)


def _check_store(store: object) -> None:
    if store is None:
        return
    missing = [m for m in ("create_run", "acquire_lease", "record_stage")
               if not callable(getattr(store, m, None))]  # fmt: skip
    if isinstance(store, type) or missing:
        raise ConfigurationError(
            f"store={store!r} is no RunStore instance", field="store", value=store
        )


def _check_without(without: object) -> frozenset[str]:
    if isinstance(without, str) or not isinstance(without, Iterable):
        raise ConfigurationError(
            f"without must be a collection of default interceptor names, not {without!r}",
            field="without",
            value=without,
        )
    names = frozenset(without)
    unknown = sorted(repr(n) for n in names if n not in _DEFAULT_NAMES)
    if unknown:
        raise ConfigurationError(
            f"without names {unknown[0]}, which is no default interceptor; the defaults "
            f"are {', '.join(map(repr, _DEFAULT_NAMES))}",
            field="without",
            value=without,
        )
    return names


def _fetching(call: StageCall) -> StageCall:
    """``call``, an output it left where it ran (an OutputRef) fetched when it returns."""

    async def fetching(ctx: StageContext) -> Any:
        return await fetched(await call(ctx))

    fetching.__qualname__ = getattr(call, "__qualname__", "call")
    return fetching


def _check_secrets(secrets: object) -> None:
    if secrets is None:
        return
    if not isinstance(secrets, Mapping):
        refuse("secrets", "a mapping of schemes to SecretResolvers", secrets)
    for scheme, resolver in secrets.items():
        if not isinstance(scheme, str) or not scheme or scheme in ("env", "file"):
            refuse("secrets", "a mapping whose keys are schemes other than env and file "
                   "(non-empty str)", scheme)  # fmt: skip
        if not inspect.iscoroutinefunction(getattr(resolver, "resolve", None)):
            raise ConfigurationError(
                f"secrets[{scheme!r}] must be a SecretResolver (an object with an async "
                f"resolve(name)), not {type(resolver).__qualname__}",
                field=f"secrets.{scheme}",
                value=type(resolver).__qualname__,
            )


def _check_runners(runner: object, runners: object) -> None:
    if runner is not None and not callable(getattr(runner, "bind", None)):
        refuse("runner", "a StageRunner (an object with bind(spec, call)) or None", runner)
    if runners is None:
        return
    if not isinstance(runners, Mapping):
        refuse("runners", "a mapping of names to StageRunners", runners)
    for name, value in runners.items():
        if not (isinstance(name, str) and name.strip()):
            refuse("runners", "a mapping whose keys are runner names (non-empty str)", name)
        if not callable(getattr(value, "bind", None)):
            raise ConfigurationError(
                f"runners[{name!r}] must be a StageRunner (an object with bind(spec, call)), "
                f"not {type(value).__name__} {value!r}",
                field=f"runners.{name}",
                value=value,
            )


def _check_clock(clock: object) -> None:
    if clock is not None and not all(
        callable(getattr(clock, m, None)) for m in ("monotonic", "wall", "sleep", "call_later")
    ):
        raise ConfigurationError(
            f"clock {clock!r} is no Clock: it needs monotonic(), wall(), sleep() and call_later()",
            field="clock",
            value=clock,
        )


def _frozen_data(data: object) -> Mapping[str, Any]:
    if data is None:
        return MappingProxyType({})
    if not isinstance(data, Mapping):
        raise ConfigurationError(
            f"data must be a mapping, not {type(data).__name__} {data!r}", field="data", value=data
        )
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise ConfigurationError(
            f"data keys must be str; got {bad[0]!r} ({type(bad[0]).__name__})",
            field="data",
            value=bad[0],
        )
    return MappingProxyType(dict(data))


def _check_graph(graph: object, method: str) -> None:
    if not isinstance(graph, StageGraph):
        hint = " (call .build() on it first)" if isinstance(graph, Pipeline) else ""
        raise ConfigurationError(
            f"{method}() takes a StageGraph, not {type(graph).__name__}{hint}",
            field="graph",
            value=graph,
        )


def _check_run_id(run_id: object) -> None:
    if not isinstance(run_id, str) or RUN_ID.fullmatch(run_id) is None:
        raise ConfigurationError(
            f"run_id must be 1 to 128 letters, digits, '_', '.', ':' or '-', not {run_id!r}",
            field="run_id",
            value=run_id,
        )


def _check_timeout(timeout: object) -> float | None:
    """The timeout, checked; ``math.inf`` (no limit) as None."""
    if timeout is None:
        return None
    seconds = number(
        timeout, "timeout", "a positive number of seconds, math.inf or None", gt=0, finite=False
    )
    return None if seconds == math.inf else seconds


def _governance(
    budget: Budget | None, prices: object, model_chains: tuple[ModelChain, ...]
) -> Governance | None:
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
                field="prices",
                value=prices,
            )
    if budget is None and table is None and not model_chains:
        return None
    return Governance(budget, table, model_chains)


def _model_chains(model_chains: object) -> tuple[ModelChain, ...]:
    if isinstance(model_chains, ModelChain | str | bytes) or not isinstance(model_chains, Iterable):
        refuse("model_chains", "a list of ModelChain", model_chains)
    chains = tuple(model_chains)
    for chain in chains:
        if not isinstance(chain, ModelChain):
            raise ConfigurationError(
                f"model_chains must hold ModelChain objects, not {chain!r}",
                field="model_chains",
                value=chain,
            )
    return chains
