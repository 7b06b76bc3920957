"""User code under ``mypy --strict``: what must pass, what must fail, and where.

- ``pass/*.py``: typed user code (every stage form, every option, typed inputs, the
  documented interceptor patterns) must pass ``mypy --strict`` with no error.
- ``fail/*.py``: misuse; every line that ends in ``# E: <fragment>`` must get an error
  whose message contains the fragment, and no other line may get one.
- the docs: the ``python`` blocks of each page (those tests/docs runs), in order, as
  one module whose line numbers are the page's; a later block may redefine an earlier
  block's name. They are checked under full ``--strict``, annotated as a typed user
  writes them (``async def fetch(ctx: StageContext) -> dict[str, int]:``). A page of
  ``RELAXED_PAGES``, or a block of ``RELAXED_BLOCKS``, is checked with ``--strict``
  relaxed for untyped and partly typed definitions, and calls of them, only (their
  bodies are still checked, and everything they pass to stageflow).

mypy runs once, in-process, over all of them, with its cache in a temporary directory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from mypy import api

from tests.docs.test_examples import ROOT, _page_id, _pages, extract_blocks

HERE = Path(__file__).resolve().parent
PASS = sorted((HERE / "pass").glob("*.py"))
FAIL = sorted((HERE / "fail").glob("*.py"))
DOCS = _pages()

# Pages whose examples do not pass their check yet: each is an expected
# failure, strict, so that a page that comes to pass must leave this list.
DOCS_NOT_YET_TYPED: frozenset[str] = frozenset()

# Pages checked with --strict relaxed for untyped definitions (every page is strict
# now; a page that cannot be, say why here). A new page is strict.
RELAXED_PAGES: frozenset[str] = frozenset()

# Blocks checked relaxed inside a strict page, by page: the block that holds the line,
# and why. docs/migration.md's stageflow-core quickstart is that project's README
# character for character (its ``async def main():`` unannotated): annotating it would
# make it no longer the code users bring over, so only that block is relaxed.
RELAXED_BLOCKS: dict[str, tuple[str, str]] = {
    "docs/migration.md": (
        "from stageflow.context import ContextSnapshot, RunIdentity",
        "stageflow-core's README quickstart, verbatim: it must run as users have it",
    ),
}
# What the relaxation allows, by error code: untyped and partly typed definitions
# (no-untyped-def) and calls of untyped functions (no-untyped-call).
_RELAXED_CODES = ("[no-untyped-def]", "[no-untyped-call]")

# untyped_calls_exclude: the OpenTelemetry SDK's constructors (InMemorySpanExporter(), ...)
# have no "-> None", and a call of them is no misuse of stageflow: a strict user of the
# SDK excludes it the same way.
_CONFIG = """\
[mypy]
strict = True
python_version = 3.11
warn_unreachable = True
untyped_calls_exclude = opentelemetry

[mypy-docs_strict.*]
allow_redefinition_new = True
local_partial_types = True

[mypy-docs_pages.*]
allow_untyped_defs = True
allow_incomplete_defs = True
allow_untyped_calls = True
allow_redefinition_new = True
local_partial_types = True
"""

_EXPECTED = re.compile(r"#\s*E:\s*(?P<fragment>.+?)\s*$")
_LINE = re.compile(r"^(?P<path>.+?):(?P<line>\d+): error: (?P<message>.*)$")


@dataclass(frozen=True)
class Checked:
    """mypy's errors by file (the docs' by page), as (line, message)."""

    errors: dict[Path, list[tuple[int, str]]]
    output: str
    canary: Path  # an untyped definition in docs_strict

    def of(self, path: Path) -> list[tuple[int, str]]:
        return self.errors.get(path.resolve(), [])


def _docs_module(page: Path, directory: Path) -> Path:
    """The page's runnable blocks as one module, each block on the page's own lines."""
    parts: list[str] = []
    line = 1
    for block in extract_blocks(page.read_text(encoding="utf-8"), page):
        parts.append("\n" * (block.line - line) + block.source)
        line = block.line + block.source.count("\n")
    stem = re.sub(r"\W", "_", _page_id(page))
    module = directory / f"{stem}.py"
    module.write_text("".join(parts), encoding="utf-8")
    return module


def _relaxed_lines(page: Path) -> range:
    """The lines of the page's block of RELAXED_BLOCKS (empty when it has none)."""
    if _page_id(page) not in RELAXED_BLOCKS:
        return range(0)
    marker, _ = RELAXED_BLOCKS[_page_id(page)]
    blocks = extract_blocks(page.read_text(encoding="utf-8"), page)
    found = [b for b in blocks if marker in b.source.splitlines()]
    assert len(found) == 1, f"{_page_id(page)}: {len(found)} blocks hold {marker!r}"
    return range(found[0].line, found[0].line + found[0].source.count("\n"))


@pytest.fixture(scope="session")
def checked(tmp_path_factory: pytest.TempPathFactory) -> Checked:
    work = tmp_path_factory.mktemp("typing")
    config = work / "mypy.ini"
    config.write_text(_CONFIG, encoding="utf-8")
    # Packages: the config relaxes docs_pages.*, not docs_strict.*.
    for name in ("docs_pages", "docs_strict"):
        (work / name).mkdir()
        (work / name / "__init__.py").write_text("", encoding="utf-8")
    generated = {
        _docs_module(
            page, work / ("docs_pages" if _page_id(page) in RELAXED_PAGES else "docs_strict")
        ).resolve(): page.resolve()
        for page in DOCS
    }
    relaxed = {page.resolve(): _relaxed_lines(page) for page in DOCS}
    canary = work / "docs_strict" / "canary.py"
    canary.write_text("def untyped(x):\n    return x\n", encoding="utf-8")
    files = [*PASS, *FAIL, *generated, canary]
    stdout, stderr, _ = api.run(
        [
            "--config-file",
            str(config),
            "--cache-dir",
            str(work / "cache"),
            "--no-error-summary",
            "--hide-error-context",
            "--no-pretty",
            "--show-error-codes",
            *map(str, files),
        ]
    )
    assert not stderr, stderr
    errors: dict[Path, list[tuple[int, str]]] = {}
    for text in stdout.splitlines():
        match = _LINE.match(text)
        if match is None:
            continue  # notes
        path = Path(match["path"])
        path = (path if path.is_absolute() else ROOT / path).resolve()
        path = generated.get(path, path)
        line, message = int(match["line"]), match["message"]
        if line in relaxed.get(path, ()) and message.endswith(_RELAXED_CODES):
            continue
        errors.setdefault(path, []).append((line, message))
    return Checked(errors, stdout, canary.resolve())


def _show(errors: list[tuple[int, str]], path: Path) -> str:
    name = path.relative_to(ROOT)
    return "\n".join(f"{name}:{line}: {message}" for line, message in errors)


@pytest.mark.parametrize("path", PASS, ids=lambda p: p.name)
def test_typed_user_code_passes_strict(checked: Checked, path: Path) -> None:
    errors = checked.of(path)
    assert errors == [], "\n" + _show(errors, path)


@pytest.mark.parametrize("path", FAIL, ids=lambda p: p.name)
def test_misuse_fails_with_the_expected_error_on_the_expected_line(
    checked: Checked, path: Path
) -> None:
    expected: dict[int, str] = {}
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        match = _EXPECTED.search(text)
        if match is not None:
            expected[number] = match["fragment"]
    assert expected, f"{path.name} has no '# E:' line"
    got = checked.of(path)
    unexpected = [(n, m) for n, m in got if n not in expected]
    missing = [
        f"line {n}: expected an error containing {fragment!r}, got "
        f"{[m for k, m in got if k == n] or 'none'}"
        for n, fragment in expected.items()
        if not any(k == n and fragment in m for k, m in got)
    ]
    assert not unexpected, "errors on lines without '# E:':\n" + _show(unexpected, path)
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize(
    "page",
    [
        pytest.param(
            page,
            id=_page_id(page),
            marks=[pytest.mark.xfail(reason="examples not typed yet", strict=True)]
            if _page_id(page) in DOCS_NOT_YET_TYPED
            else [],
        )
        for page in DOCS
    ],
)
def test_the_docs_examples_pass_strict(checked: Checked, page: Path) -> None:
    errors = checked.of(page)
    assert errors == [], "\n" + _show(errors, page)


def test_the_harness_sees_errors_at_all(checked: Checked) -> None:
    # A broken harness (no file checked, output not parsed) would pass every test above
    # but the fail/ ones; make it fail loudly here too.
    assert checked.of(FAIL[0]), checked.output
    assert {_page_id(p) for p in DOCS} >= DOCS_NOT_YET_TYPED, "a listed page has no examples"
    assert {_page_id(p) for p in DOCS} >= RELAXED_PAGES, "a relaxed page has no examples"
    # docs_strict is strict indeed: an untyped definition there is an error.
    assert [m for _, m in checked.of(checked.canary) if "[no-untyped-def]" in m], checked.output


def test_a_relaxed_block_is_found_on_its_page() -> None:
    for page in DOCS:
        if _page_id(page) in RELAXED_BLOCKS:
            assert _relaxed_lines(page), _page_id(page)
    assert {_page_id(p) for p in DOCS} >= RELAXED_BLOCKS.keys()
