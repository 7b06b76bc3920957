"""The two store ports: what they are, who implements them, and adapters kept apart."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import stageflow
from stageflow import CheckpointStore, RunCatalog, RunStore
from stageflow.adapters.memory import MemoryStore

ADAPTERS = Path(stageflow.__file__).parent / "adapters"


class _DriverOnly:
    """A RunStore by shape alone (it inherits from nothing): no listing, no deleting."""

    async def get_run(self, run_id): ...
    async def stage_records(self, run_id): ...
    async def load_usage(self, run_id): ...
    async def aclose(self): ...
    async def create_run(self, run): ...
    async def acquire_lease(self, run_id, owner, ttl): ...
    async def renew_lease(self, lease, ttl): ...
    async def release_lease(self, lease): ...
    async def record_stage(self, lease, record): ...
    async def record_usage(self, lease, records): ...
    async def set_status(self, lease, status, error=None): ...
    async def save_state(self, lease, stage, state): ...
    async def load_state(self, run_id, stage): ...


class TestThePorts:
    def test_memory_store_is_both_ports(self):
        store = MemoryStore()

        assert isinstance(store, RunStore)
        assert isinstance(store, RunCatalog)
        assert isinstance(store, CheckpointStore)

    def test_a_run_store_by_shape_is_one_and_is_no_catalog(self):
        store = _DriverOnly()

        assert isinstance(store, RunStore)
        assert not isinstance(store, RunCatalog)
        assert not isinstance(store, CheckpointStore)

    def test_the_ports_split_the_methods_and_share_only_the_reads(self):
        def members(port: type) -> set[str]:
            return {
                name
                for klass in port.__mro__
                if klass.__module__ == "stageflow.ports._store"
                for name, value in vars(klass).items()
                if callable(value) and not name.startswith("_")
            }

        run_store, catalog = members(RunStore), members(RunCatalog)

        assert run_store & catalog == {"get_run", "stage_records", "load_usage", "aclose"}
        assert catalog - run_store == {"list_runs", "usage", "delete_run", "prune"}
        assert len(run_store) == 13
        assert members(CheckpointStore) == run_store | catalog

    def test_lease_ttl_is_no_member_of_the_protocol(self):
        assert not hasattr(MemoryStore(), "lease_ttl")
        assert isinstance(MemoryStore(), RunStore)


def _imports(path: Path, source: str | None = None) -> set[str]:
    """The stageflow.adapters modules ``path`` imports (relative imports resolved)."""
    parts = ["stageflow", *path.parent.relative_to(ADAPTERS.parent).parts]
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8") if source is None else source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            prefix = ".".join(parts[: len(parts) - (node.level - 1)])
            base = f"{prefix}.{node.module}" if node.module else prefix
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add(node.module or "")
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("stageflow.adapters.")}


_ADAPTERS = ("memory", "sqlalchemy", "otel")


@pytest.mark.parametrize(
    "path",
    sorted(p for p in ADAPTERS.rglob("*.py") if p.relative_to(ADAPTERS).parts[0] != "__init__.py"),
    ids=lambda p: str(p.relative_to(ADAPTERS)),
)
def test_an_adapter_imports_no_other_adapter(path):
    own = path.relative_to(ADAPTERS).parts[0].removesuffix(".py")
    others = {
        name
        for name in _imports(path)
        if name.split(".")[2] in _ADAPTERS and name.split(".")[2] != own
    }

    assert others == set(), f"{path.name} imports another adapter: {sorted(others)}"


def test_the_import_check_sees_an_adapter_importing_another():
    path = ADAPTERS / "sqlalchemy" / "_store.py"

    assert "stageflow.adapters.memory" in _imports(path, "from ..memory import usage_of_run")
    assert "stageflow.adapters.memory" in _imports(path, "from .. import memory")
