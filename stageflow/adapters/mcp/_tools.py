"""The tools: their names, descriptions, input schemas, and their arguments checked."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from mcp_types import Tool, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..._catalog import CatalogEntry
from ...errors import ConfigurationError

__all__ = [
    "PIPELINE_TOOL_PREFIX",
    "PipelineTool",
    "check_arguments",
    "fixed_tools",
    "pipeline_tools",
    "tool_name",
]

PIPELINE_TOOL_PREFIX: Final = "run_"
"""A pipeline's own tool is named ``run_<pipeline>`` (see :func:`pipeline_tools`)."""

_TOOL_NAME: Final = re.compile(r"[^A-Za-z0-9_.-]")  # what MCP tool names may not hold (SEP-986)
_MAX_NAME: Final = 128


class _Arguments(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListPipelines(_Arguments):
    """``list_pipelines`` takes no arguments."""


class StartRun(_Arguments):
    pipeline: str = Field(description="The name of a pipeline (see list_pipelines).")
    data: dict[str, Any] = Field(
        default_factory=dict, description="The run's data, valid for the pipeline's data_schema."
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Str to str, kept with the run (to find it again)."
    )
    run_id: str | None = Field(
        None, description="The run's id (default: a new one); a second start with it is refused."
    )
    wait: float = Field(0, ge=0, description="Seconds to wait for the run to end (0: none).")


class GetRun(_Arguments):
    run_id: str = Field(description="The run's id (what start_run returned).")
    wait: float = Field(
        0, ge=0, description="Seconds to wait for the run to end or stop for input (0: none)."
    )


class CancelRun(_Arguments):
    run_id: str = Field(description="The run's id.")


class SendInput(_Arguments):
    run_id: str = Field(description="The run's id.")
    name: str = Field(description="The input's name (get_run's waiting_for lists them).")
    value: Any = Field(description="The input's value, valid for its schema (in waiting_for).")


_READS: Final = ToolAnnotations(read_only_hint=True, open_world_hint=False)


def fixed_tools(bound: float) -> dict[str, tuple[type[_Arguments], Tool]]:
    """The tools every server has, by name: their argument model and their listing."""
    waits = (
        f"Waits at most {bound:g} s in one call (a larger wait counts as {bound:g}); the run "
        "goes on after the call returns, whatever happens to the call."
    )
    described: dict[str, tuple[type[_Arguments], str, ToolAnnotations]] = {
        "list_pipelines": (
            ListPipelines,
            "The pipelines this server runs: name, description, number of stages, the JSON "
            "Schema of their data, and the name of each one's own tool.",
            _READS,
        ),
        "start_run": (
            StartRun,
            "Start a run of a pipeline with its data. With wait > 0, wait for it to end (with "
            "progress notifications as its stages finish) and return the run with its outputs; "
            f"else, or when it takes longer, return its run_id and status: poll get_run. {waits}",
            ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True),
        ),
        "get_run": (
            GetRun,
            "A run: status, stages (status, attempts, durations), outputs of completed stages, "
            "usage, error, and the inputs it waits for (waiting_for: name, prompt, schema). "
            f"With wait > 0, first wait for it to end or stop for input. {waits}",
            _READS,
        ),
        "cancel_run": (
            CancelRun,
            "Cancel a run this server drives; returns its status once recorded (cancelled).",
            ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True),
        ),
        "send_input": (
            SendInput,
            "Give a run's input its value (validated against the input's schema, stored once): "
            "a run that waits for it goes on. Poll get_run to follow it.",
            ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False),
        ),
    }
    return {
        name: (model, Tool(
            name=name, description=description, input_schema=_schema(model), annotations=hints
        ))
        for name, (model, description, hints) in described.items()
    }  # fmt: skip


@dataclass(frozen=True, slots=True)
class PipelineTool:
    """A pipeline's own tool: its arguments are the run's data."""

    entry: CatalogEntry
    tool: Tool


def pipeline_tools(entries: Iterable[CatalogEntry], bound: float) -> dict[str, PipelineTool]:
    """One tool per pipeline, by tool name: ``run_<pipeline>``, each character MCP does not
    allow in a tool name replaced by ``_`` and cut to 128 characters; a name taken already
    (two pipelines that differ only there) gets ``_2``, ``_3``, ..."""
    tools: dict[str, PipelineTool] = {}
    for entry in entries:
        name = tool_name(entry.name, taken=tools)
        said = entry.description.strip().rstrip(".") or f"Run the pipeline {entry.name!r}"
        description = (
            f"{said}. Starts a run of the stageflow pipeline {entry.name!r} "
            f"({len(entry.graph.stages)} stages) with these arguments as its data and waits "
            f"at most {bound:g} s for it to end, with progress notifications as its stages "
            "finish: returns the run with its outputs, or, when it takes longer or stops for "
            "input, its run_id and status (poll get_run; give inputs with send_input). The run "
            "goes on after the call returns."
        )
        tool = Tool(
            name=name,
            title=entry.name,
            description=description,
            input_schema=entry.data_schema(),
            annotations=ToolAnnotations(
                read_only_hint=False, destructive_hint=False, open_world_hint=True
            ),
        )
        tools[name] = PipelineTool(entry, tool)
    return tools


def tool_name(pipeline: str, *, taken: Mapping[str, object] | None = None) -> str:
    """The name of ``pipeline``'s own tool (see :func:`pipeline_tools`)."""
    base = (PIPELINE_TOOL_PREFIX + _TOOL_NAME.sub("_", pipeline))[:_MAX_NAME]
    name, n = base, 1
    while taken is not None and name in taken:
        n += 1
        suffix = f"_{n}"
        name = base[: _MAX_NAME - len(suffix)] + suffix
    return name


def check_arguments(model: type[BaseModel], arguments: Mapping[str, Any], tool: str) -> Any:
    """``arguments`` as ``model``, or a ConfigurationError naming the first bad one."""
    try:
        return model.model_validate(dict(arguments))
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "arguments"
        given = first.get("input")
        said = "missing" if first["type"] == "missing" else f"given {given!r}"
        raise ConfigurationError(
            f"{tool}: {field}: {first['msg']} ({said})",
            field=field,
            value=None if first["type"] == "missing" else given,
        ) from None


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema.pop("title", None)
    schema.pop("description", None)
    schema.setdefault("properties", {})
    return schema
