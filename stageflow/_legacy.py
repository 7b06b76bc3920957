"""stageflow-core's names, kept so that its code runs while it migrates.

Every name here is deprecated: using one emits one :class:`DeprecationWarning`
naming what replaces it (docs/migration.md lists them all). Nothing here is
imported by a run that does not use these names: the modules above this one
import it on first use only.
"""

from __future__ import annotations

import contextlib
import time
import uuid
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Final, NamedTuple

from ._check import refuse
from .errors import ConfigurationError

__all__ = [
    "ContextSnapshot",
    "Entry",
    "EntryInputs",
    "PipelineTimer",
    "RunIdentity",
    "deprecated",
    "entry",
    "entry_run",
    "snapshot_of",
]

_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})
_IDS: Final = (
    "pipeline_run_id",
    "request_id",
    "session_id",
    "user_id",
    "org_id",
    "interaction_id",
)


def deprecated(old: str, new: str, stacklevel: int = 3) -> None:
    """Warn, once for this use, that ``old`` is stageflow-core's and ``new`` replaces it."""
    warnings.warn(
        f"{old} is stageflow-core's and is deprecated; {new} (see docs/migration.md)",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


@dataclass(frozen=True, slots=True)
class RunIdentity:
    """stageflow-core's bundle of a run's ids (deprecated).

    stageflow has one id per run, ``run_id`` (``Engine.run(graph, data, run_id=...)``,
    ``ctx.run_id``); ``pipeline_run_id``, when set, becomes it. Put the other ids in
    the run's data.
    """

    pipeline_run_id: uuid.UUID | None = None
    request_id: uuid.UUID | None = None
    session_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    org_id: uuid.UUID | None = None
    interaction_id: uuid.UUID | None = None

    def __post_init__(self) -> None:
        for name in _IDS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, uuid.UUID):
                refuse(name, "a uuid.UUID or None", value)


@dataclass(frozen=True, slots=True)
class ContextSnapshot:
    """stageflow-core's immutable run input (deprecated): a run's data replaces it.

    ``graph.run(ctx)`` with a hand-built entry context runs with the snapshot's
    fields as data (``input_text``, ``topology``, ``execution_mode``,
    ``extensions``, ``metadata`` and the ids of ``run_id``, as strings); in a stage,
    ``ctx.snapshot`` reads them back from ``ctx.data``.
    """

    run_id: RunIdentity = field(default_factory=RunIdentity)
    input_text: str | None = None
    topology: str | None = None
    execution_mode: str | None = None
    extensions: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.run_id, RunIdentity):
            refuse("run_id", "a RunIdentity", self.run_id)
        for name in ("input_text", "topology", "execution_mode"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                refuse(name, "a str or None", value)
        for name in ("extensions", "metadata"):
            if not isinstance(getattr(self, name), Mapping):
                refuse(name, "a Mapping", getattr(self, name))

    def to_data(self) -> dict[str, Any]:
        """The run data this snapshot stands for (None fields and empty mappings left out)."""
        data: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "run_id":
                for name in _IDS:
                    id_ = getattr(value, name)
                    if id_ is not None:
                        data[name] = str(id_)
            elif value is not None and not (isinstance(value, Mapping) and not value):
                data[f.name] = dict(value) if isinstance(value, Mapping) else value
        return data


def snapshot_of(run_id: str, data: Mapping[str, Any]) -> ContextSnapshot:
    """The ContextSnapshot a stageflow-core stage would see in a run with ``data``."""
    ids: dict[str, uuid.UUID] = {}
    for name in _IDS:
        text = run_id if name == "pipeline_run_id" else data.get(name)
        if isinstance(text, str):
            # a run id of stageflow's own shape is no UUID: the snapshot then has none
            with contextlib.suppress(ValueError):
                ids[name] = uuid.UUID(text)
    texts = {
        name: value if isinstance(value := data.get(name), str) else None
        for name in ("input_text", "topology", "execution_mode")
    }
    maps = {
        name: value if isinstance(value := data.get(name), Mapping) else {}
        for name in ("extensions", "metadata")
    }
    return ContextSnapshot(RunIdentity(**ids), **texts, **maps)  # type: ignore[arg-type]


class PipelineTimer:
    """stageflow-core's run timer (deprecated): the engine times runs and stages.

    Read ``result.duration``, ``result[name].started`` / ``.ended`` / ``.duration``,
    or, in a stage, ``ctx.clock`` and ``ctx.run_started``.
    """

    __slots__ = ("started_at",)

    def __init__(self) -> None:
        deprecated(
            "PipelineTimer()",
            "the engine times every run and stage: result.duration, result[name].duration",
        )
        self.started_at = time.monotonic()

    def elapsed_ms(self) -> float:
        """Milliseconds since the timer was made."""
        return (time.monotonic() - self.started_at) * 1000.0

    def __repr__(self) -> str:
        return f"<PipelineTimer {self.elapsed_ms():.1f} ms>"


class EntryInputs(Mapping[str, Mapping[str, Any]]):
    """stageflow-core's ``StageInputs(snapshot=...)`` (deprecated): the inputs of a run's
    entry context, which has no dependencies, so it holds no output."""

    __slots__ = ("snapshot",)

    def __init__(self, *, snapshot: ContextSnapshot) -> None:
        if not isinstance(snapshot, ContextSnapshot):
            refuse("snapshot", "a ContextSnapshot", snapshot)
        self.snapshot = snapshot

    def __getitem__(self, dependency: str) -> Mapping[str, Any]:
        raise KeyError(f"the entry context has no dependencies, so no output of {dependency!r}")

    def get_from(self, dependency: str, key: str, default: Any = None) -> Any:
        """``default``: the entry context has no dependencies."""
        return default

    def __iter__(self) -> Any:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "<StageInputs of the entry context: []>"


class Entry(NamedTuple):
    """What a hand-built entry context holds (``StageContext(snapshot=..., ...)``)."""

    snapshot: ContextSnapshot
    inputs: Mapping[str, Mapping[str, Any]]
    stage_name: str
    timer: PipelineTimer | None


def entry(snapshot: object, inputs: object, stage_name: object, timer: object) -> Entry:
    """Check and warn about ``StageContext(snapshot=, inputs=, stage_name=, timer=)``."""
    if not isinstance(snapshot, ContextSnapshot):
        refuse("snapshot", "a ContextSnapshot (from stageflow.context)", snapshot)
    if inputs is None:
        inputs = EntryInputs(snapshot=snapshot)
    elif not isinstance(inputs, EntryInputs):
        refuse("inputs", "StageInputs(snapshot=...) from stageflow.stages, or None", inputs)
    if not isinstance(stage_name, str) or not stage_name:
        refuse("stage_name", "a non-empty str", stage_name)
    if timer is not None and not isinstance(timer, PipelineTimer):
        refuse("timer", "a PipelineTimer or None", timer)
    deprecated(
        "StageContext(snapshot=, inputs=, stage_name=, timer=)",
        "the engine makes every context; pass the run's data instead: "
        "graph.run({'input_text': ...}) or Engine().run(graph, data)",
        stacklevel=4,
    )
    return Entry(snapshot, inputs, stage_name, timer)


def entry_run(ctx: object, options: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The data and the run options of ``graph.run(ctx, **options)``.

    ``ctx`` is a hand-built entry context, whose snapshot becomes the run's data;
    anything else is passed on as it is, for the engine to refuse.
    """
    held = getattr(ctx, "_run", None)
    if not isinstance(held, Entry):
        return ctx, dict(options)
    deprecated(
        "graph.run(ctx) with a hand-built StageContext",
        "pass the run's data: graph.run({'input_text': ...})",
        stacklevel=4,
    )
    snapshot = held.snapshot
    options = dict(options)
    pipeline_run_id = snapshot.run_id.pipeline_run_id
    if pipeline_run_id is not None:
        wanted = str(pipeline_run_id)
        given = options.setdefault("run_id", wanted)
        if given != wanted:
            raise ConfigurationError(
                f"graph.run(ctx, run_id={given!r}): the snapshot's pipeline_run_id is "
                f"{wanted!r}; give one of them",
                field="run_id",
                value=given,
            )
    return snapshot.to_data(), options
