"""A catalog of pipeline files and entry points: what a service, an MCP server or a file's
``subgraph: name`` finds pipelines in."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points as _entry_points
from pathlib import Path
from typing import Any, Final

from ..._catalog import Catalog, CatalogEntry
from ..._graph import StageGraph
from ..._pipeline import Pipeline
from ...errors import ConfigurationError
from ._build import LoadedPipeline, build_document
from ._source import Source, read_source

__all__ = ["ENTRY_POINTS", "SUFFIXES", "FileCatalog", "load_catalog"]

ENTRY_POINTS: Final = "stageflow.pipelines"
"""The entry-point group a catalog reads pipelines from (``entry_points=True``)."""

SUFFIXES: Final = (".yaml", ".yml", ".json", ".toml")
"""The suffixes of the files a folder's catalog holds."""


class FileCatalog(Catalog):
    """A :class:`~stageflow.Catalog` of pipeline files and of Python entry points.

    Each file is an entry under its ``name:``, with its ``description:``, ``category:``,
    ``tags:`` and its ``inputs:`` as the run data's model. Files find each other by name
    (``subgraph: name``, ``loop.body: name``), in any order. A template whose
    parameters all have defaults is an entry with those values; one with a required
    parameter is only a template: :meth:`template` instantiates either.

    Build one with :func:`load_catalog`.
    """

    __slots__ = (
        "_errors", "_files", "_handlers", "_loaded", "_loading", "_parsed", "_sources",
        "_strict", "_templates",
    )  # fmt: skip

    def __init__(self, handlers: Mapping[str, Any] | None = None, *, strict: bool = True) -> None:
        super().__init__()
        self._handlers = handlers
        self._strict = strict
        self._errors: dict[str, ConfigurationError] = {}  # strict=False: what did not load
        self._files: dict[str, Path] = {}  # every file's pipeline, by name
        self._parsed: dict[str, Source] = {}  # and its text, parsed once
        self._loaded: dict[str, LoadedPipeline] = {}
        self._loading: list[str] = []  # the files being loaded, outermost first (cycles)
        self._templates: set[str] = set()  # files with a required parameter: no entry
        self._sources: dict[str, str] = {}  # where each entry came from

    # ----------------------------------------------------------------- reading

    def add_files(self, source: str | Path) -> FileCatalog:
        """Add a pipeline file, or every pipeline file of a folder (not its subfolders).

        Raises:
            PipelineFileError: a file does not load (its file, line, column, field).
            ConfigurationError: ``source`` is neither a folder nor a pipeline file, or
                two pipelines share a name (both sources named).
        """
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.iterdir()
                           if p.is_file() and p.name.lower().endswith(SUFFIXES))  # fmt: skip
        elif path.is_file() and path.name.lower().endswith(SUFFIXES):
            files = [path]
        else:
            what = "not found" if not path.exists() else "neither a folder nor a pipeline file"
            raise ConfigurationError(f"catalog source {str(source)!r}: {what} (a folder of "
                                     f"{', '.join(SUFFIXES)} files, or one of them)",
                                     field="sources", value=str(source))  # fmt: skip
        names = []
        for file in files:
            try:
                parsed = read_source(file)
            except ConfigurationError as error:
                self._failed(str(file), error)
                continue
            name = _name_of(parsed, file)
            self._claim(name, str(file))
            self._files[name] = file
            self._parsed[name] = parsed
            names.append(name)
        for name in names:  # after all are known: a file may name one read after it
            try:
                self._load(name)
            except ConfigurationError as error:
                self._failed(str(self._files.pop(name)), error)
        return self

    def _failed(self, where: str, error: ConfigurationError) -> None:
        if self._strict:
            raise error
        self._errors[where] = error

    def add_entry_points(self, group: str = ENTRY_POINTS) -> FileCatalog:
        """Add what the installed distributions declare in the entry-point ``group``.

        An entry point may give a :class:`~stageflow.Pipeline` or graph (under its own
        name), a :class:`~stageflow.Catalog` (all of its entries), a loaded file, a path
        to a folder or file of pipelines (``Path(__file__).parent / "pipelines"``), or a
        function of no arguments returning one of these.

        Raises:
            ConfigurationError: an entry point does not load or gives something else
                (naming it), or a name is taken.
        """
        for point in sorted(_entry_points(group=group), key=lambda p: p.name):
            where = f"entry point {point.name!r} ({point.value})"
            try:
                value = point.load()
                if callable(value) and not isinstance(value, Catalog | Pipeline | StageGraph):
                    value = value()
                self._add_value(value, where, point.name)
            except ConfigurationError as error:
                self._failed(where, error)
            except Exception as error:  # noqa: BLE001 - the distribution's code, named
                self._failed(where, ConfigurationError(
                    f"{where}: loading it raised {type(error).__name__}: {error}",
                    field=point.name, value=point.value,
                ))  # fmt: skip
        return self

    def _add_value(self, value: object, where: str, label: str) -> None:
        if isinstance(value, str | Path):
            self.add_files(value)
        elif isinstance(value, LoadedPipeline):
            self._claim(value.name, where)
            self._loaded[value.name] = value
            self._add_entry(value.catalog_entry(), where)
        elif isinstance(value, Pipeline | StageGraph):
            graph = value.build() if isinstance(value, Pipeline) else value
            self._claim(graph.name, where)
            self._add_entry(CatalogEntry(graph.name, graph), where)
        elif isinstance(value, Catalog):
            for entry in value:
                self._claim(entry.name, where)
                self._add_entry(entry, where)
        else:
            raise ConfigurationError(
                f"{where}: gives {type(value).__name__} {value!r}, not a Pipeline, a "
                "StageGraph, a Catalog, a loaded file or a path of pipeline files",
                field=label,
                value=value,
            )

    def _claim(self, name: str, where: str) -> None:
        if name in self._sources:
            raise ConfigurationError(f"two pipelines are named {name!r}: {self._sources[name]} "
                                     f"and {where}", field="name", value=name)  # fmt: skip
        self._sources[name] = where

    def _add_entry(self, entry: CatalogEntry, where: str) -> None:
        self.add(entry.name, entry.graph, description=entry.description,
                 category=entry.category, data=entry.data, tags=entry.tags)  # fmt: skip

    def _load(self, name: str) -> None:
        if name in self._loaded or name in self._templates:
            return
        if name in self._loading:
            chain = " -> ".join((*self._loading[self._loading.index(name) :], name))
            raise ConfigurationError(f"the catalog's pipelines include each other: {chain}",
                                     field="pipeline", value=name)  # fmt: skip
        file = self._files[name]
        source = self._parsed[name]
        if _required_parameters(source.data):
            self._templates.add(name)
            return
        self._loading.append(name)
        try:
            loaded = build_document(source, handlers=self._handlers, catalog=self,
                                    _reading=(file.resolve(),))  # fmt: skip
        finally:
            self._loading.pop()
        self._loaded[name] = loaded
        self._add_entry(loaded.catalog_entry(), str(file))

    # ----------------------------------------------------------------- asking

    def __getitem__(self, name: str) -> CatalogEntry:
        if name in self._files:  # a file read but not loaded yet: one naming it loads first
            self._load(name)
        return super().__getitem__(name)

    def template(self, name: str, parameters: Mapping[str, Any] | None = None) -> LoadedPipeline:
        """The file ``name``, loaded with ``parameters`` (a template's values).

        Raises:
            UnknownPipelineError: no file of the catalog is named so (with what is close).
            ConfigurationError: a parameter is missing, unknown or of the wrong type.
        """
        if name not in self._files:
            super().__getitem__(name)  # raises, with the names it knows
            raise ConfigurationError(f"pipeline {name!r} is not a file: it takes no "
                                     "parameters", field="pipeline", value=name)  # fmt: skip
        return build_document(self._parsed[name], handlers=self._handlers,
                              parameters=parameters or {}, catalog=self,
                              _reading=(self._files[name].resolve(),))  # fmt: skip

    def loaded(self, name: str) -> LoadedPipeline | None:
        """The loaded file of entry ``name`` (its ``outputs``, its declaration), or None for
        an entry that is no file."""
        self.__getitem__(name)  # loads it, or raises naming what is close
        return self._loaded.get(name)

    @property
    def errors(self) -> dict[str, ConfigurationError]:
        """With ``strict=False``: what did not load, by file or entry point (else empty)."""
        return dict(self._errors)

    @property
    def templates(self) -> tuple[str, ...]:
        """The files that need parameters to load (they are no entries)."""
        return tuple(sorted(self._templates))

    def source(self, name: str) -> str:
        """Where entry or template ``name`` was read from (a file, an entry point)."""
        if name not in self._sources:
            super().__getitem__(name)  # raises UnknownPipelineError, naming what is close
        return self._sources[name]

    def __repr__(self) -> str:
        return f"FileCatalog({list(self.names)!r}, templates={list(self.templates)!r})"


def load_catalog(
    *sources: str | Path,
    entry_points: bool | str = False,
    handlers: Mapping[str, Any] | None = None,
    strict: bool = True,
) -> FileCatalog:
    """A catalog of pipeline files (folders, files) and entry points.

    Args:
        *sources: folders of pipeline files (``.yaml``, ``.yml``, ``.json``, ``.toml``;
            not their subfolders) and single files.
        entry_points: also read the entry points of the group ``stageflow.pipelines``
            (True) or of the group named.
        handlers: registered handler names the files may use (``load_pipeline``'s).
        strict: raise the first error (True); or keep what loads and record the rest in
            :attr:`FileCatalog.errors` (False: what ``stageflow pipelines`` lists).

    Raises:
        PipelineFileError: a file does not load (its file, line, column, field, value).
        ConfigurationError: a source is missing, two pipelines share a name, files
            include each other, an entry point does not load.

    Example:
        >>> catalog = load_catalog("examples/declarative")
        >>> catalog["review"].category
        'editorial'
    """
    catalog = FileCatalog(handlers, strict=strict)
    for source in _sources(sources):
        catalog.add_files(source)
    if entry_points:
        catalog.add_entry_points(ENTRY_POINTS if entry_points is True else str(entry_points))
    return catalog


def _sources(sources: Iterable[object]) -> list[str | Path]:
    checked: list[str | Path] = []
    for source in sources:
        if not isinstance(source, str | Path):
            raise ConfigurationError(f"a catalog source is a folder or a file path, not "
                                     f"{source!r}", field="sources", value=source)  # fmt: skip
        checked.append(source)
    return checked


def _name_of(source: Source, file: Path) -> str:
    """A file's ``name:`` (read, not built: the catalog knows every name before it loads)."""
    data = source.data
    name = data.get("name") if isinstance(data, Mapping) else None
    return name if isinstance(name, str) and name else file.stem


def _required_parameters(data: object) -> bool:
    declared = data.get("parameters") if isinstance(data, Mapping) else None
    if not isinstance(declared, Mapping):
        return False
    return any(not isinstance(spec, Mapping) or "default" not in spec
               for spec in declared.values())  # fmt: skip
