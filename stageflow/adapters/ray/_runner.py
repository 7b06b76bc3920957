"""RayRunner: a stage's call as a Ray task, the scheduler and the chain staying in the driver."""

from __future__ import annotations

import asyncio
import atexit
import copyreg
import io
import pickle
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from ..._check import integer, number, refuse
from ..._detached import (
    DetachedContext,
    DetachedResult,
    attach,
    attach_error,
    detach,
    run_detached,
)
from ..._outputref import OutputRef
from ..._stage import StageOutput
from ..._status import StageStatus
from ...errors import ConfigurationError, InvalidOutputError, WorkerLostError

if TYPE_CHECKING:
    from ..._context import StageCall, StageContext
    from ..._spec import StageSpec

__all__ = ["RayRunner"]

_TASK_OPTIONS: Final = frozenset({
    "num_cpus", "num_gpus", "memory", "resources", "accelerator_type", "label_selector",
    "scheduling_strategy", "runtime_env",
})  # fmt: skip
"""The ``resources=`` keys a stage may give: Ray's task options that say where it runs."""
_PUTS: Final = 16  # run data and outputs a RayRunner keeps put (an LRU)...
_PUT_BYTES: Final = 1 << 30  # ... of at most this many bytes in all


def _ray() -> Any:
    try:
        import ray
    except ImportError as error:  # pragma: no cover - the extra is not installed
        raise ConfigurationError(
            f"RayRunner needs Ray (pip install 'stageflow[ray]'): {error}",
            field="runner",
            value="ray",
        ) from None
    return ray


def _refused(obj: object) -> Any:
    raise pickle.PicklingError(f"{type(obj).__qualname__}: for Ray's serializer")


_ENCODERS: list[Callable[[Any], Any]] = []  # this process's (see _encoder)


def _encoder() -> Callable[[Any], Any]:
    """This process's encoder: a value as pickle's bytes, which Ray sends ten times faster
    than a tuple of dicts it serializes itself; or the value as it is, for Ray to
    serialize, when it holds what Ray serializes its own way (object refs, actor handles,
    types with a serializer registered in Ray before the first call: kept count of, or
    made so) or what pickle cannot (a lambda: Ray's cloudpickle can)."""
    if not _ENCODERS:
        ray = _ray()
        own = (ray.ObjectRef, ray.actor.ActorHandle, *ray.cloudpickle.CloudPickler.dispatch)
        table = {**copyreg.dispatch_table, **dict.fromkeys(own, _refused)}

        def encoded(value: Any) -> Any:
            buffer = io.BytesIO()
            pickler = pickle.Pickler(buffer, protocol=5)
            pickler.dispatch_table = table
            try:
                pickler.dump(value)
            except Exception:  # noqa: BLE001 - Ray's serializer takes it as it is
                return value
            return buffer.getvalue()

        _ENCODERS.append(encoded)
    return _ENCODERS[0]


def _decoded(value: Any) -> Any:
    return pickle.loads(value) if type(value) is bytes else value


_LOOP: list[asyncio.Runner] = []  # in a worker process: its one event loop for stages


def _worker_loop() -> asyncio.Runner:
    """The worker process's event loop for async stages, made on its first call and
    closed when the process exits."""
    if not _LOOP:
        runner = asyncio.Runner()
        atexit.register(runner.close)
        _LOOP.append(runner)
    return _LOOP[0]


def _task(stage: object, inline_below: int) -> Any:
    """The Ray task of one stage: its call, in a worker. The stage travels in the task's
    definition, which Ray exports to the cluster once, not with every call.

    It returns two objects: what the engine needs at once (how the stage ended, the
    usage it reported, the state it saved, the models it chose: ``told``) and the output
    data, which stays in Ray's object store until someone fetches it — unless it is
    small plain data (under ``inline_below`` bytes), which comes back with the rest (Ray
    keeps such objects in the driver anyway). Outputs handed on from other remote stages
    come as further arguments (Ray resolves them where the task runs), in the order of
    the ``None`` they stand for among the inputs."""
    name = getattr(stage, "__name__", "call")

    def execute(wire: Any, *handed: Any) -> tuple[Any, Any]:
        wire = _decoded(wire)
        if wire[4] is None:  # the run's data, put in the object store once per run
            wire = (*wire[:4], _decoded(handed[0]), *wire[5:])
            handed = handed[1:]
        if handed:
            outputs = wire[5]
            values = map(_decoded, handed)  # what was put is pickle's bytes
            for dependency, output in outputs.items():
                if output is None:
                    outputs[dependency] = next(values)
        ctx = DetachedContext.from_wire(wire)
        out, *told = run_detached(stage, ctx, loop=_worker_loop())
        ended = None
        if type(out) is not dict:
            if isinstance(out, StageOutput):
                ended = (out.status.value, out.reason, out.routes)
                out = out.data if type(out.data) is dict else dict(out.data)
            elif out is None:
                out = {}
            elif isinstance(out, Mapping):
                out = dict(out)
            else:
                raise InvalidOutputError.of(ctx.stage, out)
        encoded = _encoder()
        if _smaller(out, inline_below):
            return encoded((ended, out, *told)), None
        return encoded((ended, None, *told)), out

    execute.__qualname__ = execute.__name__ = f"stage_{name}"
    return execute


_PLAIN: Final = (str, bytes, int, float, bool, type(None))


def _smaller(data: dict[str, Any], limit: int) -> bool:
    """Whether ``data`` is plain values (dicts, lists, tuples, str, bytes, numbers, None)
    of fewer than ``limit`` bytes, about: looked at until it is known not to be."""
    room = limit
    stack: list[Any] = [data]
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind is dict:
            room -= 64 + 16 * len(value)
            stack.extend(value.values())
            stack.extend(value.keys())
        elif kind is list or kind is tuple:
            room -= 56 + 8 * len(value)
            stack.extend(value)
        elif kind is str or kind is bytes:
            room -= 40 + len(value)
        elif kind in _PLAIN:
            room -= 16
        else:  # an object of its own: its size is unknown (an array, a model...)
            return False
        if room < 0:
            return False
    return True


class _RayOutput(OutputRef):
    """An output in Ray's object store: handed on to remote dependents as its ObjectRef."""

    __slots__ = ("ref",)

    def __init__(self, runner: RayRunner, ref: Any) -> None:
        super().__init__(runner)
        self.ref = ref

    async def load(self) -> Mapping[str, Any]:
        data: Mapping[str, Any] = await self.ref
        return data

    def load_blocking(self) -> Mapping[str, Any]:
        data: Mapping[str, Any] = _ray().get(self.ref)
        return data


class RayRunner:
    """Runs stages' calls as Ray tasks: ``Engine(runners={"ray": RayRunner()})`` and
    ``with_stage(..., runner="ray", resources={"num_cpus": 2})``, or
    ``Engine(runner=RayRunner())`` for every stage.

    The scheduler, the interceptors (timeouts, retries, breakers, budgets, checkpoints,
    spans, metrics, logs) and the store stay in the driver; only the stage's call
    crosses, with a copy of its context (:class:`~stageflow.DetachedContext`: data,
    inputs, item, iteration, attempt, saved state, the W3C trace context). Ray's own
    retries are off: the stage's retry policy decides. An exception raised remotely
    arrives as itself (same type, same fields); a worker that dies mid-call is a
    :class:`~stageflow.errors.WorkerLostError`, retried like any failure; a call
    cancelled in the driver (a timeout, a cancelled run) cancels its task, by force
    after ``cancel_grace`` seconds if it is stuck in code that does not yield.

    Args:
        address: the cluster (``"ray://head:10001"``, ``"auto"``), or None: the one this
            process is connected to, else a local one started on first use.
        namespace: the Ray namespace.
        init: more keyword arguments for ``ray.init`` when this runner starts Ray.
        cancel_grace: seconds between a cancel and a forced one (the worker is killed).
        put_above: run data, and a stage's output read by remote stages, larger than
            this many bytes (pickled) is put in Ray's object store once, each remote
            call getting a reference, rather than sent with every call.
        inline_below: an output of plain values (dicts, lists, str, bytes, numbers)
            smaller than this many bytes comes back to the driver with the call, as Ray
            keeps small objects there anyway; a larger one, or one holding objects of
            other types (arrays...), stays in Ray's object store, handed on to remote
            dependents as a reference (0: every output stays there).
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        namespace: str | None = None,
        init: Mapping[str, Any] | None = None,
        cancel_grace: float = 1.0,
        put_above: int = 100_000,
        inline_below: int = 100_000,
    ) -> None:
        if address is not None and not (isinstance(address, str) and address.strip()):
            refuse("address", "a Ray address (str) or None", address)
        if namespace is not None and not isinstance(namespace, str):
            refuse("namespace", "a str or None", namespace)
        if init is not None and not isinstance(init, Mapping):
            refuse("init", "a mapping of ray.init keyword arguments", init)
        number(cancel_grace, "cancel_grace", "a number of seconds >= 0", ge=0)
        integer(put_above, "put_above", "a number of bytes >= 0", ge=0)
        integer(inline_below, "inline_below", "a number of bytes >= 0", ge=0)
        self.address = address
        self.namespace = namespace
        self.cancel_grace = float(cancel_grace)
        self.put_above = put_above
        self.inline_below = inline_below
        # id(a run's data or an output) -> (it, its ObjectRef or None): the last _PUTS
        self._puts: OrderedDict[int, tuple[Mapping[str, Any], Any, int]] = OrderedDict()
        self._put_bytes = 0
        self._tasks: dict[int, tuple[object, Any]] = {}  # id(stage) -> (stage, its function)
        self._init = dict(init or {})

    def _started(self) -> Any:
        ray = _ray()
        if not ray.is_initialized():
            options = {"namespace": self.namespace, "log_to_driver": False,
                       "include_dashboard": False, **self._init}  # fmt: skip
            ray.init(address=self.address, **options)
        return ray

    def bind(self, spec: StageSpec, call: StageCall) -> StageCall:
        """The stage's call as a Ray task, with ``spec.placement.resources`` as its options."""
        ray = self._started()
        resources = dict(spec.placement.resources) if spec.placement is not None else {}
        unknown = sorted(set(resources) - _TASK_OPTIONS)
        if unknown:
            raise ConfigurationError(
                f"stage {spec.name!r}: resources[{unknown[0]!r}] is no Ray task option "
                f"(options: {', '.join(sorted(_TASK_OPTIONS))})",
                field="resources",
                value=unknown[0],
            )
        stage = spec.stage
        made = self._tasks.get(id(stage))
        if made is None or made[0] is not stage:
            # One Ray function per stage object, however many stages call it: Ray keeps a
            # worker leased per function, so calls of the same one reuse the lease.
            options = {"max_retries": 0, "retry_exceptions": False, "num_returns": 2}
            made = (stage, ray.remote(**options)(_task(stage, self.inline_below)))
            self._tasks[id(stage)] = made
        task = made[1]
        try:
            remote = task.options(**resources)
        except (TypeError, ValueError) as error:
            raise ConfigurationError(f"stage {spec.name!r}: resources={resources!r}: {error}",
                                     field="resources", value=resources) from None  # fmt: skip
        name = spec.name
        grace = self.cancel_grace
        lost = _lost_errors(ray)
        encoded = _encoder()

        async def remote_call(ctx: StageContext) -> Any:
            wire = (await detach(ctx)).wire()
            handed = []  # in the object store: arguments of the task's own
            if wire[4]:
                put = self._put(ctx.data, wire[4])
                if put is not None:
                    wire = (*wire[:4], None, *wire[5:])  # its stand-in
                    handed.append(put)
            outputs = wire[5]
            for dependency, output in outputs.items():
                if type(output) is _RayOutput and output.runner is self:
                    handed.append(output.ref)
                    outputs[dependency] = None  # its stand-in
                elif output:  # a large one, put once for every dependent
                    put = self._put(output, output)
                    if put is not None:
                        handed.append(put)
                        outputs[dependency] = None
            ref, data = remote.remote(encoded(wire), *handed)
            try:
                ended, inline, *told = _decoded(await ref)
            except asyncio.CancelledError:
                _cancel(ray, ref, grace)
                raise
            except ray.exceptions.RayTaskError as error:
                cause = error.cause if isinstance(error.cause, BaseException) else error
                raise await attach_error(ctx, _with_remote_traceback(cause, error)) from None
            except lost as error:
                raise WorkerLostError.of(ctx.stage, "ray", f"{type(error).__name__}: "
                                         f"{_first_line(error)}") from None  # fmt: skip
            await attach(ctx, DetachedResult(None, *told))
            if ended is None and inline is not None:
                return inline  # the common case: a small dict
            output = _RayOutput(self, data) if inline is None else inline
            if ended is None:  # an OutputRef is a Mapping: a StageOutput says it is kept
                return StageOutput(StageStatus.COMPLETED, output)
            status, reason, routes = ended
            return StageOutput(StageStatus(status), output, reason, routes)

        remote_call.__qualname__ = f"ray({name})"
        return remote_call

    def _put(self, data: Mapping[str, Any], copy: Mapping[str, Any]) -> Any:
        """``data`` (a run's data, a stage's output) as an object put in Ray's object
        store once (its ObjectRef: pickle's bytes, which the task decodes), when it is
        large enough for that to pay (over ``put_above`` bytes); else None: it goes with
        each call. What was put stays there while it is among the last ``_PUTS`` asked
        for, and those hold at most ``_PUT_BYTES`` (told apart by identity)."""
        puts = self._puts
        held = puts.get(id(data))
        if held is not None and held[0] is data:
            puts.move_to_end(id(data))
            return held[1]
        encoded = _encoder()(copy)
        size = len(encoded) if type(encoded) is bytes else 0  # 0: Ray's serializer's
        ref = _ray().put(encoded) if size > self.put_above else None
        puts[id(data)] = (data, ref, size if ref is not None else 0)
        self._put_bytes += puts[id(data)][2]
        while len(puts) > _PUTS or (self._put_bytes > _PUT_BYTES and len(puts) > 1):
            self._put_bytes -= puts.popitem(last=False)[1][2]
        return ref

    def __repr__(self) -> str:
        return f"RayRunner(address={self.address!r}, namespace={self.namespace!r})"


def _lost_errors(ray: Any) -> tuple[type[BaseException], ...]:
    """Ray's errors that mean the process (or node, or object) running the call is gone."""
    names = ("WorkerCrashedError", "NodeDiedError", "ObjectLostError", "OwnerDiedError",
             "LocalRayletDiedError", "RaySystemError", "OutOfMemoryError")  # fmt: skip
    return tuple(getattr(ray.exceptions, n) for n in names if hasattr(ray.exceptions, n))


def _cancel(ray: Any, ref: Any, grace: float) -> None:
    """Cancel the task; force it (kill its worker) if it has not ended ``grace`` s later
    (real seconds, on a thread of its own: the driver's loop may be gone by then)."""
    if grace == 0:
        ray.cancel(ref, force=True)
        return
    ray.cancel(ref)  # an interrupt in the worker: code that runs Python stops

    def force() -> None:
        ready, _ = ray.wait([ref], timeout=0)
        if not ready:  # stuck (C code, a blocking call): kill the worker
            ray.cancel(ref, force=True)

    timer = threading.Timer(grace, force)
    timer.daemon = True
    timer.start()


def _with_remote_traceback(cause: BaseException, error: BaseException) -> BaseException:
    if cause is not error:
        # The error Ray raises (RayTaskError, or its subclass of the cause's type) says
        # where in the worker it was raised.
        traceback = getattr(error, "traceback_str", None) or str(error)
        if isinstance(traceback, str) and hasattr(cause, "add_note"):
            cause.add_note(f"raised in a Ray worker:\n{traceback.rstrip()}")
    return cause


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "no details"
