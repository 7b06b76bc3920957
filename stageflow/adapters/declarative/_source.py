"""Reading a pipeline file: its data, and where in the file each value is (line, column)."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ...errors import PipelineFileError

__all__ = ["MAX_FILE_BYTES", "MAX_NODES", "Location", "Source", "read_source"]

MAX_FILE_BYTES = 8 * 1024 * 1024
"""The largest pipeline file read (bytes)."""
MAX_NODES = 1_000_000
"""The most values a file may expand to (YAML aliases included: no billion laughs)."""

Path_ = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Location:
    """A place in a file: 1-based line and column."""

    line: int
    column: int


_START = Location(1, 1)


@dataclass(slots=True)
class Source:
    """A parsed file: its data, and the location of each value by its path of keys."""

    name: str
    data: Any
    locations: dict[Path_, Location] = field(default_factory=dict)
    key_locations: dict[Path_, Location] = field(default_factory=dict)
    base: Path | None = None
    text: str | None = None

    def locate(self, path: Sequence[str | int], *, key: bool = False) -> Location:
        """The location of the value at ``path`` (or of its key), else of its nearest
        ancestor that has one."""
        where = tuple(path)
        table = self.key_locations if key else self.locations
        while where:
            found = table.get(where) or self.locations.get(where)
            if found is not None:
                return found
            where = where[:-1]
        return self.locations.get((), _START)

    def error(
        self, path: Sequence[str | int], message: str, value: object = None, *, key: bool = False
    ) -> PipelineFileError:
        """A :class:`~stageflow.errors.PipelineFileError` at ``path``."""
        where = self.locate(path, key=key)
        dotted = dotted_path(path)
        return PipelineFileError(
            f"{self.name}:{where.line}:{where.column}: {dotted}: {message}" if dotted
            else f"{self.name}:{where.line}:{where.column}: {message}",
            file=self.name,
            line=where.line,
            column=where.column,
            field=dotted,
            value=value,
        )  # fmt: skip


def dotted_path(path: Sequence[str | int]) -> str:
    """``("stages", 2, "with", "text")`` -> ``stages[2].with.text``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def read_source(path: str | Path, text: str | None = None, *, name: str | None = None) -> Source:
    """Parse a pipeline file (``.yaml``/``.yml``, ``.json`` or ``.toml``; by its suffix).

    Raises:
        PipelineFileError: the file cannot be read, is too large, or does not parse.
    """
    file = Path(path)
    label = name or str(path)
    base = None if text is not None else file.parent
    if text is None:
        try:
            size = file.stat().st_size
        except OSError as error:
            raise _file_error(label, f"cannot read the file: {error.strerror}", str(path)) from None
        if size > MAX_FILE_BYTES:
            raise _file_error(label, f"the file is {size} bytes, more than {MAX_FILE_BYTES}", size)
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise _file_error(
                label, f"cannot read the file as UTF-8 text: {error}", str(path)
            ) from None
    elif len(text) > MAX_FILE_BYTES:
        raise _file_error(label, f"the text is {len(text)} characters, more than {MAX_FILE_BYTES}",
                          len(text))  # fmt: skip
    suffix = file.suffix.lower()
    if suffix == ".json":
        source = _read_json(label, text)
    elif suffix == ".toml":
        source = _read_toml(label, text)
    else:
        source = _read_yaml(label, text)
    source.base = base
    source.text = text
    return source


def _file_error(
    name: str, message: str, value: object, line: int = 1, column: int = 1, field: str = ""
) -> PipelineFileError:
    return PipelineFileError(f"{name}:{line}:{column}: {message}", file=name, line=line,
                             column=column, field=field, value=value)  # fmt: skip


# --------------------------------------------------------------------------- YAML


_BASE: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when built


class _Loader(_BASE):  # type: ignore[misc]
    """Safe YAML (no Python tags), keeping every node's position."""


def _read_yaml(name: str, text: str) -> Source:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise _file_error(name, f"not valid YAML: {error.problem or error}", None, line,
                          column) from None  # fmt: skip
    except yaml.YAMLError as error:
        raise _file_error(name, f"not valid YAML: {error}", None) from None
    finally:
        loader.dispose()
    source = Source(name, None)
    if node is None:
        return source
    walker = _Walker(name, loader, source)
    source.data = walker.value(node, ())
    return source


class _Walker:
    """Builds plain data from YAML nodes, recording where each value is."""

    def __init__(self, name: str, loader: _Loader, source: Source) -> None:
        self.name = name
        self.loader = loader
        self.source = source
        self.count = 0

    def value(self, node: yaml.Node, path: Path_) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise _file_error(self.name, f"the file expands to more than {MAX_NODES} values "
                              "(YAML aliases?)", self.count)  # fmt: skip
        mark = node.start_mark
        self.source.locations.setdefault(path, Location(mark.line + 1, mark.column + 1))
        if isinstance(node, yaml.MappingNode):
            self.loader.flatten_mapping(node)  # YAML merge keys (<<)
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self._scalar(key_node)
                where = Location(key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                if key in result:
                    field = dotted_path((*path, key))
                    raise _file_error(self.name, f"{field}: the key {key!r} appears twice", key,
                                      where.line, where.column, field)  # fmt: skip
                self.source.key_locations[(*path, key)] = where
                result[key] = self.value(value_node, (*path, key))
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.value(item, (*path, i)) for i, item in enumerate(node.value)]
        return self._scalar(node)

    def _scalar(self, node: yaml.Node) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            where = node.start_mark
            raise _file_error(self.name, "a key must be a plain value, not a list or a mapping",
                              None, where.line + 1, where.column + 1)  # fmt: skip
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as error:
            mark = error.problem_mark or node.start_mark
            raise _file_error(self.name, f"{error.problem}", node.value, mark.line + 1,
                              mark.column + 1) from None  # fmt: skip


# --------------------------------------------------------------------------- JSON, TOML


def _read_json(name: str, text: str) -> Source:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise _file_error(name, f"not valid JSON: {error.msg}", None, error.lineno,
                          error.colno) from None  # fmt: skip
    source = Source(name, data)
    try:  # JSON is YAML: its composer gives the positions (exact for any JSON YAML reads)
        located = _read_yaml(name, text)
    except Exception:  # noqa: BLE001 - positions are a nicety: fall back to line 1
        return source
    if located.data == data:
        source.locations, source.key_locations = located.locations, located.key_locations
    return source


_TABLE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+|\"[^\"]*\")\s*=")


def _read_toml(name: str, text: str) -> Source:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        match = re.search(r"line (\d+), column (\d+)", str(error))
        line, column = (int(match[1]), int(match[2])) if match else (1, 1)
        raise _file_error(name, f"not valid TOML: {error}", None, line, column) from None
    source = Source(name, data)
    _locate_toml(text, data, source)
    return source


def _locate_toml(text: str, data: Mapping[str, Any], source: Source) -> None:
    """Best-effort positions for TOML (tomllib keeps none): each ``[table]``/``[[array]]``
    header and each ``key =`` line, by the table it is in."""
    path: Path_ = ()
    counters: dict[Path_, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        table = _TABLE.match(line)
        if table:
            keys: Path_ = tuple(part.strip().strip('"') for part in table[1].split("."))
            if line.lstrip().startswith("[["):
                index = counters.get(keys, -1) + 1
                counters[keys] = index
                keys = (*keys, index)
            path = keys
            where = Location(number, line.index("[") + 1)
            source.locations.setdefault(path, where)
            source.key_locations.setdefault(path, where)
            continue
        key = _KEY.match(line)
        if key:
            name = key[1].strip('"')
            where = Location(number, line.index(key[1]) + 1)
            source.key_locations.setdefault((*path, name), where)
            source.locations.setdefault((*path, name), where)
