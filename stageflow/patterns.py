"""Patterns: small functions returning the pipelines people write again and again.

Each returns an ordinary :class:`~stageflow.Pipeline` (or, given a graph, a graph): extend
it with ``with_stage``, ``compose`` it after other stages, or run it as one stage of a
bigger pipeline with ``with_subgraph`` (its stages then appear as ``name.stage``).

- :func:`fan_out_fan_in`: branches (or one stage per item of a list) in parallel, then a
  stage that joins their outputs.
- :func:`conditional`: a decision made once and recorded, then one branch or the other.
- :func:`with_retry`: a retry policy on every stage that has none of its own.

Example:
    >>> async def news(ctx):
    ...     return {"n": 2}
    >>> async def papers(ctx):
    ...     return {"n": 3}
    >>> async def total(ctx):
    ...     return {"n": sum(ctx.inputs.get_from(b, "n") for b in ("news", "papers"))}
    >>> flow = fan_out_fan_in("gather", branches={"news": news, "papers": papers}, join=total)
    >>> flow.build().names
    ('news', 'papers', 'join')
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, overload

from ._dynamic import MapSpec
from ._graph import StageGraph
from ._pipeline import Pipeline
from ._policies import RetryPolicy
from ._status import StageKind
from .errors import ConfigurationError

if TYPE_CHECKING:
    from ._context import StageContext

__all__ = ["conditional", "fan_out_fan_in", "with_retry"]

Branch = Any  # a stage (function, class, object), or a Pipeline / StageGraph run as one stage


def fan_out_fan_in(
    name: str,
    *,
    join: Any,
    branches: Mapping[str, Branch] | None = None,
    items: Any = None,
    each: Any = None,
    field: str = "items",
    key: Callable[[Any], str] | None = None,
    max_parallel: int | None = None,
    on_item_error: str = "fail",
    dependencies: Iterable[str] = (),
) -> Pipeline:
    """Stages in parallel, then ``join``: the static or the dynamic fan-out.

    Static: ``branches={"news": fetch_news, "papers": fetch_papers}`` are stages of
    those names (a :class:`~stageflow.Pipeline` or graph as a value is a subgraph), all
    started at once; ``join`` depends on every one and reads their outputs with
    ``ctx.inputs.get_from(branch, field)``.

    Dynamic: ``items`` is a stage named ``split`` whose output ``field`` (default
    ``"items"``) is a list; ``each`` runs once per item as the map stage ``each``
    (``ctx.item``; ``key``, ``max_parallel`` and ``on_item_error`` as in
    :meth:`Pipeline.with_map`), and ``join`` reads ``ctx.inputs.get_from("each",
    "results")``. Each item is its own durable stage: a resumed run redoes only the items
    that had not completed.

    Args:
        name: the pipeline's name.
        join: the stage that runs once the fan-out has ended (named ``join``).
        branches: the static fan-out, ``{name: stage}``.
        items: the dynamic fan-out's first stage (named ``split``).
        each: the dynamic fan-out's per-item stage (named ``each``).
        field: the output field of ``split`` holding the list.
        key: the items' stable identity (``item -> str``; default: the index).
        max_parallel: at most this many items at once.
        on_item_error: ``"fail"``, ``"skip"`` or ``"collect"`` (see ``with_map``).
        dependencies: what the first stages wait for, when this pipeline is composed
            after others (``Pipeline.compose``).

    Raises:
        ConfigurationError: neither or both of ``branches`` and ``items``/``each``, or
            one of ``items`` and ``each`` without the other.
        GraphError: a branch name is invalid or taken (``join``); an option is invalid.
    """
    deps = tuple(dependencies)
    pipeline = Pipeline(name)
    if branches is not None:
        if items is not None or each is not None:
            raise ConfigurationError(
                f"fan_out_fan_in {name!r}: give branches= (static) or items= and each= "
                "(dynamic), not both",
                field="branches",
                value=branches,
            )
        if not isinstance(branches, Mapping) or not branches:
            raise ConfigurationError(
                f"fan_out_fan_in {name!r}: branches must be a non-empty mapping of stage "
                f"names to stages, not {branches!r}",
                field="branches",
                value=branches,
            )
        for branch, stage in branches.items():
            pipeline = _add(pipeline, branch, stage, dependencies=deps)
        return pipeline.with_stage("join", join, StageKind.TRANSFORM,
                                   dependencies=tuple(branches))  # fmt: skip
    if items is None or each is None:
        missing = "items=" if items is None else "each="
        raise ConfigurationError(
            f"fan_out_fan_in {name!r}: give branches= (static), or items= and each= "
            f"(dynamic); {missing} is missing",
            field="items" if items is None else "each",
            value=None,
        )
    return (
        pipeline.with_stage("split", items, dependencies=deps)
        .with_map(
            "each",
            each,
            over=f"split.{field}",
            key=key,
            max_parallel=max_parallel,
            on_item_error=on_item_error,
            dependencies=("split",),
        )
        .with_stage("join", join, StageKind.TRANSFORM, dependencies=("each",))
    )


def conditional(
    name: str,
    condition: Callable[[StageContext], bool | Awaitable[bool]],
    then: Branch,
    otherwise: Branch | None = None,
    *,
    dependencies: Iterable[str] = (),
) -> Pipeline:
    """A decision, then ``then`` when it holds, else ``otherwise``.

    The decision is a stage named ``check`` (a GUARD) that calls ``condition(ctx)``
    (sync or async: it may ask a model) once and records ``{"value": bool}``; ``then``
    (and ``otherwise``, if given) are stages of those names, each with a ``when=`` that
    reads the recorded answer, so the branch not taken is skipped (``condition false``)
    and a resumed run never asks again. The branches depend on ``check`` and on
    ``dependencies``: they read the same inputs the condition did. A
    :class:`~stageflow.Pipeline` or graph as a branch is a subgraph. Their outputs reach
    later stages as any optional dependency's do: ``ctx.inputs.get("then")``.

    Args:
        name: the pipeline's name.
        condition: ``ctx -> bool`` (or an awaitable of a bool); its ``ctx.inputs`` are
            ``dependencies``' outputs.
        then: the branch taken when it holds.
        otherwise: the branch taken when it does not (None: nothing).
        dependencies: what ``check`` waits for, when this pipeline is composed after
            others.

    Raises:
        ConfigurationError: ``condition`` is not callable.
    """
    if not callable(condition):
        raise ConfigurationError(f"conditional {name!r}: condition must be a callable "
                                 f"ctx -> bool, not {condition!r}", field="condition",
                                 value=condition)  # fmt: skip

    async def check(ctx: StageContext) -> dict[str, bool]:
        answer = condition(ctx)
        if inspect.isawaitable(answer):
            answer = await answer
        if not isinstance(answer, bool):
            raise ConfigurationError(
                f"conditional {name!r}: its condition gave {answer!r}, not a bool",
                field="condition",
                value=answer,
            )
        return {"value": answer}

    check.__qualname__ = check.__name__ = f"check[{getattr(condition, '__name__', name)}]"
    deps = tuple(dependencies)
    branch_deps = ("check", *deps)  # a branch sees what the decision saw
    pipeline = Pipeline(name).with_stage("check", check, StageKind.GUARD, dependencies=deps)
    pipeline = _add(pipeline, "then", then, dependencies=branch_deps, when=_held)
    if otherwise is not None:
        pipeline = _add(pipeline, "otherwise", otherwise, dependencies=branch_deps,
                        when=_not_held)  # fmt: skip
    return pipeline


def _held(ctx: StageContext) -> bool:
    return ctx.inputs.get_from("check", "value") is True


def _not_held(ctx: StageContext) -> bool:
    return ctx.inputs.get_from("check", "value") is False


@overload
def with_retry(target: Pipeline, retry: RetryPolicy | int = ..., *,
               stages: Iterable[str] | None = ...) -> Pipeline: ...  # fmt: skip
@overload
def with_retry(target: StageGraph, retry: RetryPolicy | int = ..., *,
               stages: Iterable[str] | None = ...) -> StageGraph: ...  # fmt: skip
def with_retry(
    target: Pipeline | StageGraph,
    retry: RetryPolicy | int = 3,
    *,
    stages: Iterable[str] | None = None,
) -> Pipeline | StageGraph:
    """``target`` with ``retry`` on each stage that has no retry policy of its own.

    A stage's own ``retry=`` wins (it was said closer to the stage); ``stages`` limits
    the change to those names. Stages that call code get it (a map: per item); input,
    loop and subgraph stages do not, and the stages of bodies keep theirs (give the body
    its own ``with_retry``). Retries wait on the engine's clock: tested on
    virtual time, never with real sleeps.

    Args:
        target: a pipeline (a new one is returned) or a graph (a new graph).
        retry: a :class:`~stageflow.RetryPolicy`, or a number of attempts (the
            default backoff).
        stages: the stages to change (default: all).

    Raises:
        ConfigurationError: ``target`` is neither; ``stages`` names a stage ``target``
            lacks (with what it has); ``retry`` is invalid.
    """
    if isinstance(target, StageGraph):
        pipeline = Pipeline(target.name)
        for spec in target.stages:
            pipeline = pipeline._extend(spec)
        return with_retry(pipeline, retry, stages=stages).build()
    if not isinstance(target, Pipeline):
        raise ConfigurationError(f"with_retry takes a Pipeline or a StageGraph, not "
                                 f"{type(target).__name__} {target!r}", field="target",
                                 value=target)  # fmt: skip
    policy = _policy(retry)
    specs = target.stages
    chosen = None if stages is None else _names(stages)
    if chosen is not None:
        known = [spec.name for spec in specs]
        unknown = [name for name in chosen if name not in known]
        if unknown:
            raise ConfigurationError(
                f"with_retry: no stage {unknown[0]!r} in pipeline {target.name!r} (its "
                f"stages: {', '.join(known)})",
                field="stages",
                value=unknown[0],
            )
    result = Pipeline(target.name)
    for spec in specs:
        retried = spec.dynamic is None or isinstance(spec.dynamic, MapSpec)  # what calls code
        if retried and spec.retry is None and (chosen is None or spec.name in chosen):
            spec = spec._replace(retry=policy)  # noqa: PLW2901 - the changed copy
        result = result._extend(spec)
    return result


def _policy(retry: object) -> RetryPolicy:
    if isinstance(retry, RetryPolicy):
        return retry
    if isinstance(retry, int) and not isinstance(retry, bool):
        return RetryPolicy(attempts=retry)  # its own check: attempts >= 1
    raise ConfigurationError(f"retry must be a RetryPolicy or a number of attempts, not "
                             f"{retry!r}", field="retry", value=retry)  # fmt: skip


def _names(stages: object) -> frozenset[str]:
    if isinstance(stages, str) or not isinstance(stages, Iterable):
        raise ConfigurationError(f"stages must be a list of stage names, not {stages!r}",
                                 field="stages", value=stages)  # fmt: skip
    return frozenset(stages)


def _add(pipeline: Pipeline, name: str, stage: Branch, **options: Any) -> Pipeline:
    """``stage`` as a stage, or a pipeline/graph as a subgraph."""
    if isinstance(stage, Pipeline | StageGraph):
        return pipeline.with_subgraph(name, stage, **options)
    return pipeline.with_stage(name, stage, **options)
