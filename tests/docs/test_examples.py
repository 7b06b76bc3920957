"""Every ```python block of the documentation runs.

Each Markdown file of ``docs/`` (and the README) is one test case: its blocks run in
order, in one fresh module namespace, so a later block may use what an earlier one
defined. A block is illustrative only, and skipped, when its fence carries a title
(```python title="...") or when the line before the fence is ``<!-- no-test -->``.
"""

from __future__ import annotations

import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
NO_TEST = "<!-- no-test -->"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>.*)$")


@dataclass(frozen=True)
class Block:
    """One runnable code block: its source and the line of the file it starts on."""

    path: Path
    line: int  # 1-based line number of the block's first code line
    source: str


def _is_python(info: str) -> bool:
    words = info.strip().lstrip("{").split()
    return bool(words) and words[0].lstrip(".") in {"python", "py"}


def _is_illustrative(info: str, previous: str | None) -> bool:
    return "title=" in info or (previous is not None and previous.strip() == NO_TEST)


def _dedent(lines: list[str], indent: str) -> str:
    return "".join(line[len(indent) :] if line.startswith(indent) else line for line in lines)


def extract_blocks(text: str, path: Path = Path("<text>")) -> list[Block]:
    """The runnable ```python blocks of a Markdown text, in order."""
    blocks: list[Block] = []
    lines = text.splitlines(keepends=True)
    previous: str | None = None  # the last non-blank line outside a block
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i].rstrip("\r\n"))
        if match is None:
            if lines[i].strip():
                previous = lines[i]
            i += 1
            continue
        indent, fence, info = match["indent"], match["fence"], match["info"]
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not closing.match(lines[j].rstrip("\r\n")):
            body.append(lines[j])
            j += 1
        if _is_python(info) and not _is_illustrative(info, previous):
            blocks.append(Block(path, i + 2, _dedent(body, indent)))
        previous = None
        i = j + 1
    return blocks


def _pages() -> list[Path]:
    """The pages that hold runnable blocks (prose-only pages have nothing to run)."""
    pages = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]
    return [p for p in pages if extract_blocks(p.read_text(encoding="utf-8"), p)]


def _page_id(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def run_blocks(blocks: list[Block], module_name: str) -> None:
    """Run blocks in order in one fresh module; line numbers in tracebacks are the file's."""
    module = types.ModuleType(module_name)
    module.__dict__["__builtins__"] = __builtins__
    sys.modules[module_name] = module  # dataclasses, pickling and typing look modules up
    try:
        for block in blocks:
            # Pad with newlines so that a traceback points at the Markdown file's own line.
            code = compile("\n" * (block.line - 1) + block.source, str(block.path), "exec")
            exec(code, module.__dict__)
    finally:
        del sys.modules[module_name]


@pytest.mark.parametrize("path", _pages(), ids=_page_id)
def test_code_blocks_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # whatever an example writes lands in a scratch directory
    blocks = extract_blocks(path.read_text(encoding="utf-8"), path)
    run_blocks(blocks, "docs_example_" + re.sub(r"\W", "_", path.stem))


def test_the_core_pages_have_runnable_examples() -> None:
    covered = {_page_id(p) for p in _pages()}
    for page in (
        "README.md",
        "docs/quickstart.md",
        "docs/concepts.md",
        "docs/interceptors.md",
        "docs/events.md",
        "docs/testing.md",
        "docs/migration.md",
    ):
        assert page in covered


class TestExtractBlocks:
    def test_python_blocks_are_extracted_in_order_with_their_line(self) -> None:
        text = "# T\n\n```python\nx = 1\n```\n\ntext\n\n```python\ny = x\n```\n"
        blocks = extract_blocks(text)
        assert [b.source for b in blocks] == ["x = 1\n", "y = x\n"]
        assert [b.line for b in blocks] == [4, 10]

    def test_other_languages_are_ignored(self) -> None:
        text = "```console\n$ make test\n```\n```pycon\n>>> 1\n```\n```\nplain\n```\n"
        assert extract_blocks(text) == []

    def test_a_titled_block_is_illustrative(self) -> None:
        assert extract_blocks('```python title="sketch.py"\nundefined_name\n```\n') == []

    def test_the_no_test_marker_skips_only_the_next_block(self) -> None:
        text = f"{NO_TEST}\n```python\nundefined_name\n```\n\n```python\nz = 3\n```\n"
        assert [b.source for b in extract_blocks(text)] == ["z = 3\n"]

    def test_a_block_indented_in_an_admonition_is_dedented(self) -> None:
        text = "!!! note\n\n    ```python\n    if True:\n        a = 1\n    ```\n"
        assert [b.source for b in extract_blocks(text)] == ["if True:\n    a = 1\n"]

    def test_a_longer_fence_may_contain_a_shorter_one(self) -> None:
        text = "````markdown\n```python\nundefined_name\n```\n````\n"
        assert extract_blocks(text) == []

    def test_a_raising_block_fails_the_page(self) -> None:
        blocks = extract_blocks("```python\nraise RuntimeError('boom')\n```\n")
        with pytest.raises(RuntimeError, match="boom"):
            run_blocks(blocks, "docs_example_raising")

    def test_later_blocks_see_earlier_definitions(self) -> None:
        blocks = extract_blocks("```python\nx = 2\n```\n\n```python\nassert x == 2\n```\n")
        run_blocks(blocks, "docs_example_shared")
