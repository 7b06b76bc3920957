"""Catalog: the named pipelines a service, an MCP server or a worker may run."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._check import refuse
from ._graph import StageGraph
from ._pipeline import Pipeline
from .errors import ConfigurationError, UnknownPipelineError

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = ["Catalog", "CatalogEntry"]


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One pipeline of a :class:`Catalog`.

    Attributes:
        name: what clients call it by (``POST /runs {"pipeline": name}``).
        graph: the built graph a run of it runs.
        description: what it does, in words (shown by ``GET /pipelines``, MCP tools).
        category: a group to list it under (None: none).
        data: a pydantic model of the run's data: a run's data is validated against it
            before anything starts (an error names the field), and its JSON Schema is
            what clients are shown (None: any JSON object).
        tags: free-form labels for listing and search.
    """

    name: str
    graph: StageGraph
    description: str = ""
    category: str | None = None
    data: type[BaseModel] | None = None
    tags: tuple[str, ...] = field(default=())

    def data_schema(self) -> dict[str, Any]:
        """The JSON Schema of the run data (``{"type": "object"}`` without a model)."""
        if self.data is None:
            return {"type": "object"}
        return self.data.model_json_schema()

    def validate_data(self, data: Mapping[str, Any] | None) -> dict[str, Any]:
        """``data`` checked against :attr:`data` and returned as JSON-ready values.

        Raises:
            ConfigurationError: ``data`` is no mapping, or does not match the model
                (``field`` names the first field in error, dotted, ``value`` its value).
        """
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            refuse("data", f"a JSON object (the data of pipeline {self.name!r})", data)
        if self.data is None:
            return dict(data)
        from pydantic import ValidationError

        try:
            return self.data.model_validate(dict(data)).model_dump(mode="json")
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "data"
            raise ConfigurationError(
                f"data of pipeline {self.name!r}: {where}: {first['msg']} "
                f"(given {first.get('input')!r})",
                field=f"data.{where}" if where != "data" else "data",
                value=first.get("input"),
            ) from None


class Catalog:
    """Named pipelines: what a service (``stageflow serve``), an MCP server
    (``stageflow mcp``) or a worker may start runs of, by name.

    Made from a mapping of names to pipelines or graphs, then added to; it is read by
    name (``catalog["etl"]``), iterated in the order entries were added, and never
    changed once a server uses it (``add`` returns the catalog itself, for chaining).

    Example:
        >>> async def hello(ctx):
        ...     return {"greeting": f"hello {ctx.data.get('name', 'you')}"}
        >>> catalog = Catalog({"hello": Pipeline("hello").with_stage("hello", hello)})
        >>> catalog.add("hi", Pipeline("hi").with_stage("hi", hello), description="Greets")
        Catalog(['hello', 'hi'])
        >>> catalog["hi"].description, "hello" in catalog, len(catalog)
        ('Greets', True, 2)

    Args:
        pipelines: names to :class:`~stageflow.Pipeline` s (built here) or built
            :class:`~stageflow.StageGraph` s.
    """

    __slots__ = ("_entries",)

    def __init__(self, pipelines: Mapping[str, Pipeline | StageGraph] | None = None) -> None:
        self._entries: dict[str, CatalogEntry] = {}
        if pipelines is None:
            return
        if not isinstance(pipelines, Mapping):
            refuse("pipelines", "a mapping of names to pipelines or graphs", pipelines)
        for name, pipeline in pipelines.items():
            self.add(name, pipeline)

    def add(
        self,
        name: str,
        pipeline: Pipeline | StageGraph,
        *,
        description: str = "",
        category: str | None = None,
        data: type[BaseModel] | None = None,
        tags: Sequence[str] = (),
    ) -> Catalog:
        """Add a pipeline under ``name`` (a Pipeline is built now: its errors are raised here).

        Raises:
            ConfigurationError: a name that is not a non-empty str or is taken, a
                pipeline that is neither a Pipeline nor a StageGraph, a ``data`` that is
                no pydantic model class, a description or category that is no str.
        """
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            refuse("name", "a non-empty str of at most 200 characters", name)
        if name in self._entries:
            refuse("name", "a name not in the catalog yet", name)
        if isinstance(pipeline, Pipeline):
            graph = pipeline.build()
        elif isinstance(pipeline, StageGraph):
            graph = pipeline
        else:
            refuse(name, "a Pipeline or a built StageGraph", pipeline, label=f"pipeline {name!r}")
        if not isinstance(description, str):
            refuse("description", "a str", description)
        if category is not None and not isinstance(category, str):
            refuse("category", "a str or None", category)
        if data is not None:
            from pydantic import BaseModel

            if not (isinstance(data, type) and issubclass(data, BaseModel)):
                refuse("data", "a pydantic model class or None", data)
        if isinstance(tags, str) or not all(isinstance(tag, str) for tag in tags):
            refuse("tags", "a sequence of str", tags)
        self._entries[name] = CatalogEntry(name, graph, description, category, data, tuple(tags))
        return self

    def __getitem__(self, name: str) -> CatalogEntry:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownPipelineError.of(name, list(self._entries)) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[CatalogEntry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def names(self) -> tuple[str, ...]:
        """The pipelines' names, in the order they were added."""
        return tuple(self._entries)

    @classmethod
    def of(cls, value: object, *, field: str = "catalog") -> Catalog:
        """``value`` as a catalog: a Catalog, or a mapping of names to pipelines/graphs."""
        if isinstance(value, Catalog):
            return value
        if isinstance(value, Mapping):
            return cls(value)
        return refuse(field, "a stageflow Catalog or a mapping of names to pipelines", value)

    def __repr__(self) -> str:
        return f"Catalog({list(self._entries)!r})"
