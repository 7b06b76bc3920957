"""The layer contract: core stageflow imports only the standard library and its few deps."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import grimp
import pytest

import stageflow

PACKAGE = Path(stageflow.__file__).parent
EDGES = ("adapters", "cli", "testing")  # may import heavy dependencies; core may not import them
ALLOWED_THIRD_PARTY = ("pydantic", "pydantic_core", "opentelemetry", "typing_extensions")
FORBIDDEN = ("opentelemetry.sdk",)


def _core_modules() -> list[Path]:
    return [
        path
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).parts[0] not in EDGES
    ]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[str]:
    """Every module ``path`` imports, absolute (relative imports resolved)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base)
                if node.module:
                    found.append(f"{prefix}.{node.module}")
                else:  # from . import x: each x may be a module
                    found.extend(f"{prefix}.{alias.name}" for alias in node.names)
            else:
                found.append(node.module or "")
    return found


def _allowed(name: str) -> bool:
    top = name.partition(".")[0]
    if any(name == f or name.startswith(f + ".") for f in FORBIDDEN):
        return False
    if top == "stageflow":
        return not any(name.startswith(f"stageflow.{edge}") for edge in EDGES)
    return top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY


CORE = _core_modules()


class TestLayers:
    def test_the_core_is_found(self):
        names = {_module_name(p) for p in CORE}

        assert {"stageflow", "stageflow._engine", "stageflow.errors"} <= names
        assert "stageflow.interceptors._base" in names
        assert not any(n.startswith(("stageflow.testing", "stageflow.adapters")) for n in names)

    @pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(PACKAGE)))
    def test_core_imports_only_stdlib_pydantic_opentelemetry_api_and_itself(self, path):
        refused = [name for name in _imports(path) if not _allowed(name)]

        assert refused == [], f"{_module_name(path)} imports {refused}"


class TestLayerRules:
    @pytest.mark.parametrize(
        "name",
        ["asyncio", "collections.abc", "__future__", "pydantic", "pydantic_core",
         "opentelemetry.trace", "typing_extensions", "stageflow._stage"],
    )  # fmt: skip
    def test_allowed(self, name):
        assert _allowed(name)

    @pytest.mark.parametrize(
        "name",
        ["opentelemetry.sdk", "opentelemetry.sdk.trace", "sqlalchemy", "hypothesis", "ray",
         "stageflow.testing", "stageflow.adapters.memory", "stageflow.cli"],
    )  # fmt: skip
    def test_refused(self, name):
        assert not _allowed(name)

    def test_relative_imports_are_resolved(self):
        module = PACKAGE / "interceptors" / "_base.py"

        imports = _imports(module)

        assert "stageflow._spec" in imports
        assert "stageflow.errors" in imports


def _cycles(imports: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in sorted(imports.get(module, ())):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(imports):
        if module not in index:
            visit(module)
    return sorted(found)


class TestNoImportCycles:
    def test_no_module_of_stageflow_is_part_of_an_import_cycle(self):
        # Function-local imports count; imports under `if TYPE_CHECKING:` do not.
        graph = grimp.build_graph("stageflow", exclude_type_checking_imports=True)
        imports = {
            module: {m for m in graph.find_modules_directly_imported_by(module)
                     if m.startswith("stageflow")}
            for module in graph.modules
        }  # fmt: skip

        assert _cycles(imports) == []

    def test_a_cycle_is_found(self):
        imports = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}

        assert _cycles(imports) == [["a", "b", "c"]]
