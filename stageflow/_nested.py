"""How map, loop and subgraph stages run: the calls the engine puts in their place.

A map stage's call makes its items and runs the stage's interceptor chain once per
item, in a nested part of the run whose outcomes are named ``<map>[<key>]``; a loop
or subgraph stage's call drives its body graph in a nested part of the run, once per
iteration, its stages named ``<loop>[<n>].<stage>`` (``<subgraph>.<stage>``). Both
record what they decide in a durable run's store as it happens: the map's keys and
every item's outcome (through the items' chain), each iteration's stages and the
loop's ``until`` verdicts, so a resume redoes none of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from ._context import LoopInfo, StageCall, StageContext, new_context
from ._dynamic import LoopSpec, MapSpec
from ._events import EventType
from ._redact import redacted
from ._scheduler import RunState, lone, normalize_output
from ._services import RunServices
from ._spec import MAX_NAME_LENGTH
from ._stage import StageOutput
from ._status import CANCELLED, COMPLETED, FAILED, NONE, SKIPPED, WAITING, StageStatus
from .errors import (
    InvalidOutputError,
    LoopExhaustedError,
    MapError,
    MapItemError,
    StageCancelledError,
    StageFailedError,
    SubgraphFailedError,
)

if TYPE_CHECKING:
    from ._graph import StageGraph
    from ._spec import StageSpec

__all__ = ["map_call", "nested_call"]

_loop_info = tuple.__new__  # LoopInfo(...) without NamedTuple's Python-level __new__

BodyCalls = Callable[["StageGraph", tuple[bool, ...]], tuple[StageCall, ...]]

_ITEM_EVENT: Final = (
    None,
    EventType.ITEM_COMPLETED,
    EventType.ITEM_FAILED,
    EventType.ITEM_SKIPPED,
    EventType.ITEM_CANCELLED,
)


# --------------------------------------------------------------------------- map


def map_call(spec: StageSpec, item_call: StageCall) -> StageCall:
    """The call of map stage ``spec``: ``item_call`` (its chain) once per item."""
    declared = spec.dynamic
    assert isinstance(declared, MapSpec)
    source = declared.source
    key_of = declared.key
    policy = declared.on_item_error

    async def mapped(ctx: StageContext) -> Any:
        run: RunServices = ctx._run
        durable = run.durable
        name = ctx.stage
        restored = None if durable is None else durable.restore(name)
        if restored is not None:  # the whole map completed before: no item runs
            record = durable.restored[name]  # type: ignore[union-attr]
            ctx.report_restored(record.attempts, record.started, record.ended)
            ctx.event(EventType.STAGE_RESTORED, attempts=record.attempts)
            stored = await ctx.durable.load_state(name) or {}  # type: ignore[union-attr]
            keys = stored.get("keys", [])
            items: Sequence[Any] = [None] * len(keys)  # what ran is not run again
        else:
            items = _items(ctx, name, declared, source)
            keys = _keys(name, items, key_of)
            if durable is not None:
                keys = await _stored_keys(ctx, name, keys)
        part: RunServices = object.__new__(RunServices)
        run.nest(part, run.graph, tuple([f"{name}[{k}]" for k in keys]), ctx)
        part.items = (items, keys)
        parts = getattr(run.root, "parts", None)
        if parts is not None:
            parts.append((name, part.outcomes))
        if restored is not None:
            _restore_items(part, restored.data, stored.get("failed", {}))
            return restored
        if run.sink is not None:
            run.event(EventType.MAP_STARTED, name, ctx.attempt, {"items": len(items)})
        await _run_items(part, name, spec, item_call, declared.max_parallel, policy)
        output = _collected(part, name, policy)
        if durable is not None:
            failed = _failed(part)
            if failed:  # how they failed, for a resume that restores the map whole
                await durable.save_state(name, {"keys": keys, "failed": failed})
            await durable.save(ctx, StageOutput(StageStatus.COMPLETED, output))
        return output

    mapped.__qualname__ = f"mapped({spec.name})"
    return mapped


def _items(
    ctx: StageContext, name: str, declared: MapSpec, source: tuple[str, str] | None
) -> Sequence[Any]:
    """The map's items: the dependency's field, or what ``over`` returns."""
    if source is None:
        label = getattr(declared.over, "__qualname__", repr(declared.over))
        items = declared.over(ctx)  # type: ignore[operator]
        field = f"over={label}"
    else:
        stage, key = source
        field = f"{stage}.{key}"
        output = ctx.inputs.get(stage)
        if output is None or key not in output:
            keys = ", ".join(map(repr, output or {})) or "none"
            raise MapError(
                f"stage {name!r}: over={field!r}, but the output of {stage!r} has no field "
                f"{key!r} (fields: {keys})",
                stage=name,
                field=field,
                value=None,
            )
        items = output[key]
    if isinstance(items, str | bytes | Mapping) or not isinstance(items, Sequence):
        raise MapError(
            f"stage {name!r}: {field} must be a sequence (a list or tuple) of items, not "
            f"{type(items).__qualname__} {_short(items)}",
            stage=name,
            field=field,
            value=items,
        )
    return items


def _keys(name: str, items: Sequence[Any], key_of: Callable[[Any], str] | None) -> list[str]:
    if key_of is None:
        return [str(k) for k in range(len(items))]
    keys = []
    room = MAX_NAME_LENGTH - len(name) - 2  # an item's full name: name[key]
    for item in items:
        key = key_of(item)
        if not isinstance(key, str) or not 0 < len(key) <= room:
            raise MapError(
                f"stage {name!r}: key({_short(item)}) returned {_short(key)}; a key is a str "
                f"of 1 to {room} characters (an item's full name, {name}[key], is at most "
                f"{MAX_NAME_LENGTH})",
                stage=name,
                field="key",
                value=key,
            )
        keys.append(key)
    if len(set(keys)) != len(keys):
        seen: set[str] = set()
        twice = next(k for k in keys if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise MapError(
            f"stage {name!r}: two items have the key {twice!r}; keys must be unique",
            stage=name,
            field="key",
            value=twice,
        )
    return keys


async def _stored_keys(ctx: StageContext, name: str, keys: list[str]) -> list[str]:
    """The keys an earlier driver stored for this map; else store these, before any item
    runs. A resume whose items have other keys is refused: items would be lost."""
    durable = ctx.durable
    assert durable is not None
    stored = await durable.load_state(name)
    if stored is None:
        await durable.save_state(name, {"keys": keys})
        return keys
    if stored.get("keys") != keys:
        raise MapError(
            f"stage {name!r}: its items are not those it had when the run started "
            f"({len(stored.get('keys', []))} stored keys, {len(keys)} now); a resume must "
            "find the same items",
            stage=name,
            field="keys",
            value=keys,
        )
    return keys


async def _run_items(
    part: RunServices,
    name: str,
    spec: StageSpec,
    call: StageCall,
    max_parallel: int | None,
    policy: str,
) -> None:
    """Run every item's call, at most ``max_parallel`` at once; on the first failure
    under ``"fail"``, cancel the others."""
    outcomes = part.outcomes
    n = len(outcomes.names)
    if n == 0:
        return
    status = outcomes.status
    outputs = outcomes.outputs
    times = outcomes.times
    attempts = outcomes.attempts
    now = part.now
    t0 = part.t0
    sink = part.sink
    fail = policy == "fail"
    keys = part.items[1]  # type: ignore[index]
    state = [0, -1]  # the next item; the first failure (under "fail"), -1 for none
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    tasks: set[asyncio.Task[None]] = set()

    async def worker() -> None:
        try:
            while state[1] < 0:  # until an item fails under "fail"
                k = state[0]
                if k >= n:
                    break
                state[0] = k + 1
                ctx = new_context(part, k, spec)
                if sink is not None:
                    part.event(EventType.ITEM_STARTED, name, 1, {"item": keys[k], "index": k})
                times[2 * k] = now() - t0
                attempts[k] = 1
                try:
                    out: object = await call(ctx)
                except asyncio.CancelledError:
                    times[2 * k + 1] = now() - t0
                    if part.stopping:
                        if _parked(part):  # an item of an input per item, waiting
                            status[k] = WAITING
                            outcomes.reasons[k] = "waiting for input"
                            raise
                        status[k] = CANCELLED
                        outcomes.reasons[k] = "cancelled: the map stopped"
                        if sink is not None:
                            _item_event(part, name, k)
                        raise
                    code = _fail(part, k, StageCancelledError(
                        f"item {outcomes.names[k]!r} raised CancelledError without the run "
                        "cancelling it", stage=outcomes.names[k]))  # fmt: skip
                except Exception as error:  # noqa: BLE001 - an item's error is its outcome
                    times[2 * k + 1] = now() - t0
                    code = _fail(part, k, error)
                else:
                    times[2 * k + 1] = now() - t0
                    if type(out) is dict:
                        outputs[k] = out
                        status[k] = code = COMPLETED
                    else:
                        code = _record(part, k, out)
                if sink is not None:
                    _item_event(part, name, k)
                if code == FAILED and fail and state[1] < 0:
                    state[1] = k
                    part.stopping = True
                    current = asyncio.current_task()
                    for task in tasks:
                        if task is not current:
                            task.cancel()
        except asyncio.CancelledError:
            if not part.stopping:  # the task itself was cancelled, from outside
                raise
            return  # the map stopped: its outcome says so

    def ended(task: asyncio.Task[None]) -> None:  # a task cancelled unstarted ends too
        tasks.discard(task)
        if not tasks and not done.done():
            done.set_result(None)

    for _ in range(min(n, max_parallel or n)):
        task = loop.create_task(worker())
        task.add_done_callback(ended)
        tasks.add(task)
    try:
        await done
    except asyncio.CancelledError:
        part.stopping = True
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if not _parked(part):  # a waiting run's items not started yet are pending
            _settle(part, "the map stage was cancelled")
        raise
    if part.stopping:
        _settle(part, "not started: another item failed")


def _parked(part: RunServices) -> bool:
    """Whether the run stopped to wait for input (see RunState.park)."""
    return getattr(part.root, "parked", False) is True


def _failed(part: RunServices) -> dict[str, list[Any]]:
    """The items that failed (under "skip" or "collect"): index -> [reason, attempts]."""
    outcomes = part.outcomes
    return {
        str(k): [outcomes.reasons.get(k, ""), outcomes.attempts[k]]
        for k, code in enumerate(outcomes.status)
        if code == FAILED
    }


def _restore_items(
    part: RunServices, output: Mapping[str, Any], failed: Mapping[str, list[Any]]
) -> None:
    """The items of a map restored whole, as their stored records (and, for the items
    that failed, the map's state) say they ended."""
    durable = part.durable
    assert durable is not None
    outcomes = part.outcomes
    restored = outcomes.restored = {}
    for k, name in enumerate(outcomes.names):
        record = durable.restored.get(name)
        if record is None:  # it failed: not stored as an item, kept in the map's state
            reason, attempts = failed.get(str(k), ["failed in an earlier driver", 1])
            outcomes.status[k] = FAILED
            outcomes.reasons[k] = reason
            restored[k] = (attempts, None, None)
            continue
        outcomes.status[k] = SKIPPED if record.status is StageStatus.SKIPPED else COMPLETED
        outcomes.outputs[k] = output["results"][k] if record.status is StageStatus.COMPLETED else {}
        if record.reason is not None:
            outcomes.reasons[k] = record.reason
        restored[k] = (record.attempts, record.started, record.ended)


def _record(part: RunServices, k: int, out: object) -> int:
    outcomes = part.outcomes
    try:
        output = normalize_output(outcomes.names[k], out)
    except InvalidOutputError as error:
        return _fail(part, k, error)
    if output.reason is not None:
        outcomes.reasons[k] = output.reason
    if output.status is StageStatus.FAILED:
        return _fail(part, k, StageFailedError.of(outcomes.names[k], output.reason or ""))
    outcomes.outputs[k] = output.data
    code = SKIPPED if output.status is StageStatus.SKIPPED else COMPLETED
    outcomes.status[k] = code
    return code


def _fail(part: RunServices, k: int, error: BaseException) -> int:
    outcomes = part.outcomes
    outcomes.status[k] = FAILED
    outcomes.errors[k] = error
    outcomes.reasons[k] = redacted(f"{type(error).__name__}: {error}")
    return FAILED


def _settle(part: RunServices, reason: str) -> None:
    outcomes = part.outcomes
    for k, code in enumerate(outcomes.status):
        if code == NONE:
            outcomes.status[k] = SKIPPED
            outcomes.reasons[k] = reason


def _item_event(part: RunServices, name: str, k: int) -> None:
    outcomes = part.outcomes
    code = outcomes.status[k]
    kind = _ITEM_EVENT[code]
    if kind is None:
        return
    data: dict[str, Any] = {"item": part.items[1][k], "index": k}  # type: ignore[index]
    attempts, started, ended = outcomes.taken(k)
    if started is not None and ended is not None:
        data["duration"] = ended - started
    reason = outcomes.reasons.get(k)
    if reason is not None:
        data["reason"] = reason
    part.event(kind, name, attempts, data)


def _collected(part: RunServices, name: str, policy: str) -> dict[str, Any]:
    """The map's output: the items' data in item order (None where an item has none)."""
    outcomes = part.outcomes
    status = outcomes.status
    results = [
        dict(out) if code == COMPLETED and out is not None else None
        for code, out in zip(status, outcomes.outputs, strict=True)
    ]
    failed = [k for k, code in enumerate(status) if code == FAILED]
    if failed and policy == "fail":
        k = failed[0]
        error = outcomes.errors[k]
        key = part.items[1][k]  # type: ignore[index]
        text = f"{type(error).__name__}: {error}"
        raise MapItemError(
            f"stage {name!r}: item {key!r} (index {k}) failed: {text}",
            stage=name,
            item=key,
            index=k,
            error=text,
        ) from error
    output: dict[str, Any] = {"results": results}
    if policy == "collect":
        keys = part.items[1]  # type: ignore[index]
        output["errors"] = [
            {"index": k, "key": keys[k], "error": outcomes.reasons.get(k, "")} for k in failed
        ]
    return output


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --------------------------------------------------------------------------- loops, subgraphs


def nested_call(spec: StageSpec, body_calls: BodyCalls) -> StageCall:
    """The call of loop or subgraph stage ``spec``: its body, once per iteration."""
    declared = spec.dynamic
    assert isinstance(declared, LoopSpec)
    body = declared.body
    out = body.index[declared.output]
    until = declared.until
    names = body.names
    single = lone(body)  # run in the loop's own task, by one part (see RunState.again)

    async def nested(ctx: StageContext) -> Any:
        run = ctx._run
        assert isinstance(run, RunState)
        name = ctx.stage
        calls = body_calls(body, run.flags)
        durable = run.durable
        verdicts: list[bool] = []  # the until verdicts stored by earlier drivers
        if durable is not None and until is not None:
            stored = await durable.load_state(name)
            if stored is not None:
                verdicts = list(stored["until"])
        previous: Mapping[str, Any] | None = None
        part: RunState | None = None
        for iteration in range(1, declared.max_iterations + 1):
            prefix = declared.prefix(name, iteration)
            if single and part is not None:  # one part serves every iteration of a lone body
                part.again((prefix + names[0],))
            else:
                part = run.part(body, calls, tuple([prefix + n for n in names]), ctx)
            if until is not None:
                part.loop_info = _loop_info(LoopInfo, (iteration, previous))
                if run.sink is not None:
                    run.event(EventType.LOOP_ITERATION, name, ctx.attempt, {"iteration": iteration})
            run.parts.append((None, part.outcomes))
            if single:
                await part.execute_lone()
            else:
                await part.execute_part()
            _check_part(name, part)
            outcomes = part.outcomes
            output = outcomes.outputs[out] if outcomes.status[out] == COMPLETED else None
            if until is None:  # a subgraph
                if output is None:
                    return StageOutput.skip(
                        f"its output stage {outcomes.names[out]!r} did not complete: "
                        f"{outcomes.reasons.get(out, 'skipped')}"
                    )
                return output
            if iteration <= len(verdicts):
                finished = verdicts[iteration - 1]
            else:
                finished = bool(until(output or {}))
                verdicts.append(finished)
                if durable is not None:
                    await durable.save_state(name, {"until": verdicts})
            previous = output
            if finished:
                return output or {}
        if declared.on_exhausted == "complete":
            return previous or {}
        raise LoopExhaustedError(
            f"stage {name!r}: {declared.max_iterations} iterations ran and until never held",
            stage=name,
            iterations=declared.max_iterations,
        )

    nested.__qualname__ = f"nested({spec.name})"
    return nested


def _check_part(name: str, part: RunState) -> None:
    """Fail the enclosing stage when a stage of its part failed."""
    if not part.failed:
        return
    outcomes = part.outcomes
    i = next(i for i, code in enumerate(outcomes.status) if code == FAILED)
    inner = outcomes.names[i]
    error = outcomes.errors.get(i)
    reason = outcomes.reasons.get(i, "failed")
    raise SubgraphFailedError(
        f"stage {name!r}: its stage {inner!r} failed: {reason}",
        stage=name,
        inner=inner,
        reason=reason,
    ) from error
