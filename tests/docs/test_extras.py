"""Every docs page whose examples need an extra says which; the extras hold what they import.

A page's ```python blocks (illustrative ones included: a reader copies them too) that
import an optional dependency must sit on a page that names the extra that installs it
(``pip install 'stageflow[otel]'``, ``'.[cli,sqlite]'`` or "the `otel` extra"), and that
extra must list the distribution the import comes from.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]

# An import (module prefix) -> the extras any of which installs it, and the distribution.
NEEDS: dict[str, tuple[frozenset[str], str]] = {
    "opentelemetry.sdk": (frozenset({"otel"}), "opentelemetry-sdk"),
    "opentelemetry.exporter.otlp.proto.grpc": (
        frozenset({"otel"}),
        "opentelemetry-exporter-otlp-proto-grpc",
    ),
    "opentelemetry.exporter.otlp.proto.http": (
        frozenset({"otel"}),
        "opentelemetry-exporter-otlp-proto-http",
    ),
    "stageflow.adapters.sqlalchemy": (frozenset({"sqlite", "postgres"}), "sqlalchemy"),
    "sqlalchemy": (frozenset({"sqlite", "postgres"}), "sqlalchemy"),
    "typer": (frozenset({"cli"}), "typer"),
    "stageflow.cli": (frozenset({"cli"}), "typer"),
    "hypothesis": (frozenset({"testing"}), "hypothesis"),
    "stageflow.testing.strategies": (frozenset({"testing"}), "hypothesis"),
    "mcp": (frozenset({"mcp"}), "mcp"),
    "ray": (frozenset({"ray"}), "ray"),
    "stageflow.adapters.ray": (frozenset({"ray"}), "ray"),
    "stageflow.adapters.mcp": (frozenset({"mcp"}), "mcp"),
    "fastapi": (frozenset({"server"}), "fastapi"),
    "stageflow.adapters.http": (frozenset({"server"}), "fastapi"),
    "stageflow.adapters.declarative": (frozenset({"declarative"}), "cel-expr-python"),
    "cel_expr_python": (frozenset({"declarative"}), "cel-expr-python"),
    "yaml": (frozenset({"declarative"}), "pyyaml"),
}

_IMPORT = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import|import\s+([\w.]+))", re.M)
_NAMED = (
    re.compile(r"(?:stageflow|\.)\[([\w,\s-]+)\]"),  # stageflow[otel], '.[cli,sqlite]'
    re.compile(r"the `([\w-]+)` extra"),
)


def python_blocks(text: str) -> list[str]:
    """Every ```python block of a Markdown text, titled ones included."""
    blocks: list[str] = []
    current: list[str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if current is None:
            if stripped.startswith("```") and re.match(r"```\s*\{?\.?py(thon)?\b", stripped):
                current = []
        elif stripped.startswith("```"):
            blocks.append("\n".join(current))
            current = None
        else:
            current.append(line)
    return blocks


def named_extras(text: str) -> set[str]:
    found: set[str] = set()
    for pattern in _NAMED:
        for match in pattern.finditer(text):
            found.update(part.strip() for part in match.group(1).split(","))
    return found


def imports(source: str) -> set[str]:
    return {a or b for a, b in _IMPORT.findall(source)}


def needed(module: str) -> tuple[frozenset[str], str] | None:
    for prefix, need in NEEDS.items():
        if module == prefix or module.startswith(prefix + "."):
            return need
    return None


def extras() -> dict[str, list[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return dict(project["optional-dependencies"])


def distribution(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_a_page_that_imports_an_extra_names_it_and_the_extra_has_it(page: Path) -> None:
    text = page.read_text()
    named = named_extras(text)
    declared = {name: {distribution(r) for r in reqs} for name, reqs in extras().items()}
    for block in python_blocks(text):
        for module in imports(block):
            need = needed(module)
            if need is None:
                continue
            choices, dist = need
            assert named & choices, (
                f"{page.name} imports {module}, which needs the {'/'.join(sorted(choices))} "
                f"extra, and never says so (e.g. pip install 'stageflow[{min(choices)}]')"
            )
            for extra in named & choices:
                assert dist in declared[extra], f"the {extra} extra lacks {dist} ({module})"


def test_the_checks_find_what_they_look_for() -> None:
    text = "Install `pip install 'stageflow[otel]'` or '.[cli, sqlite]'; the `testing` extra.\n"
    assert named_extras(text) == {"otel", "cli", "sqlite", "testing"}
    page = "```python\nfrom opentelemetry.sdk.trace import X\nimport hypothesis\n```\n"
    page += '```python title="t"\nimport typer\n```\n```text\nimport sqlalchemy\n```\n'
    assert [imports(b) for b in python_blocks(page)] == [
        {"opentelemetry.sdk.trace", "hypothesis"},
        {"typer"},
    ]
    assert needed("opentelemetry.exporter.otlp.proto.grpc.trace_exporter") == (
        frozenset({"otel"}),
        "opentelemetry-exporter-otlp-proto-grpc",
    )
    assert needed("opentelemetry.trace") is None  # the API: a dependency of stageflow


def test_the_otlp_snippet_imports_with_the_otel_extra() -> None:
    """The OTLP start-up block only sets the global providers (which tests never do); its
    imports are what the otel extra must provide."""
    text = (ROOT / "docs" / "observability.md").read_text()
    [block] = [b for b in python_blocks(text) if "OTLPSpanExporter" in b and "grpc" in b]
    lines = [line for line in block.splitlines() if line.startswith(("from ", "import "))]
    assert any("opentelemetry.exporter.otlp.proto.grpc" in line for line in lines)
    exec("\n".join(lines), {})
