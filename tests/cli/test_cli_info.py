"""``stageflow info``: version, store, catalog and extras, in process (CliRunner)."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stageflow import __version__
from stageflow.adapters.sqlalchemy import SQLAlchemyStore
from stageflow.adapters.sqlalchemy._schema import SCHEMA_VERSION
from stageflow.cli import EXIT_USAGE, app
from stageflow.cli._info import EXTRAS, installed

pytestmark = pytest.mark.usefixtures("isolated")

CATALOG = """\
from stageflow import Catalog, Pipeline

async def one(ctx):
    return {}

catalog = Catalog({"alpha": Pipeline("alpha").with_stage("one", one),
                   "beta": Pipeline("beta").with_stage("one", one)})
empty = {}
"""


def info(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["info", *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def as_json(*args: str) -> dict:
    code, out, _ = info(*args, "--json")
    assert code == 0, out
    return json.loads(out)


def _made(url: str) -> None:
    async def main() -> None:
        store = SQLAlchemyStore(url)
        await store.open()
        await store.aclose()

    asyncio.run(main())


def test_a_store_that_does_not_exist_is_reported_and_not_created(tmp_path: Path) -> None:
    shown = as_json()
    assert shown["version"] == __version__
    assert shown["store"]["url"] == "sqlite:///./.stageflow/runs.db"
    assert shown["store"]["reachable"] is False
    assert "not created" in shown["store"]["error"]
    assert shown["catalog"] is None
    assert not (tmp_path / ".stageflow").exists()


def test_a_reachable_store_and_its_schema_version(url: str) -> None:
    _made(url)
    shown = as_json("--store", url)
    assert shown["store"] == {
        "url": url, "reachable": True, "schema_version": SCHEMA_VERSION, "error": None,
    }  # fmt: skip
    code, out, _ = info("--store", url)
    assert code == 0
    assert f"store:    {url} (reachable, schema version {SCHEMA_VERSION})" in out
    assert out.startswith(f"stageflow {__version__} (Python ")


def test_the_store_env_is_used(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _made(url)
    monkeypatch.setenv("STAGEFLOW_STORE", url)
    assert as_json()["store"]["url"] == url


def test_a_file_that_is_no_database_is_not_reachable(tmp_path: Path) -> None:
    path = tmp_path / "not.db"
    path.write_text("this is no SQLite database " * 100)
    shown = as_json("--store", f"sqlite:///{path}")
    assert shown["store"]["reachable"] is False
    assert str(path) in shown["store"]["error"]


def test_a_password_is_never_shown() -> None:
    with socket.socket() as probe:  # a port no one listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://owl:s3cr3t-pw@127.0.0.1:{port}/db"
    code, out, err = info("--store", url, "--json", "--timeout", "5")
    assert code == 0
    assert "s3cr3t-pw" not in out + err
    shown = json.loads(out)["store"]
    assert shown["url"] == f"postgresql://owl:***@127.0.0.1:{port}/db"
    assert shown["reachable"] is False
    code, out, err = info("--store", url, "--timeout", "5")
    assert "not reachable" in out
    assert "s3cr3t-pw" not in out + err


def test_a_url_that_is_no_store_is_not_reachable() -> None:
    shown = as_json("--store", "nosuch://x")
    assert shown["store"]["reachable"] is False
    assert shown["store"]["error"]


def test_the_catalog_is_listed(tmp_path: Path) -> None:
    (tmp_path / "flows.py").write_text(CATALOG)
    spec = f"{tmp_path / 'flows.py'}:catalog"
    shown = as_json("--pipelines", spec)
    assert shown["catalog"] == {"spec": spec, "pipelines": ["alpha", "beta"]}
    code, out, _ = info("--pipelines", spec)
    assert code == 0
    assert f"catalog:  {spec}: 2 pipelines: alpha, beta" in out


@pytest.mark.parametrize("attr", ["empty", "missing"])
def test_a_catalog_that_does_not_load_is_an_error(tmp_path: Path, attr: str) -> None:
    (tmp_path / "flows.py").write_text(CATALOG)
    code, out, err = info("--pipelines", f"{tmp_path / 'flows.py'}:{attr}")
    assert code == EXIT_USAGE
    assert out == ""
    assert err.startswith("error: ")


def test_the_extras() -> None:
    shown = as_json()["extras"]
    assert list(shown) == [
        "sqlite", "postgres", "otel", "cli", "jsonschema", "server", "mcp", "testing",
    ]  # fmt: skip
    assert all(shown.values())  # the dev extra installs them all
    code, out, _ = info()
    assert code == 0
    assert "extras:   sqlite, postgres, otel, cli, jsonschema, server, mcp, testing" in out
    assert "missing:" not in out


def test_a_missing_extra_is_found_missing() -> None:
    assert installed(("json", "asyncio"))
    assert not installed(("json", "no_such_module_of_stageflow"))
    assert not installed(("no_such_package_of_stageflow.sub",))
    assert set(EXTRAS) >= {"sqlite", "server", "mcp"}
