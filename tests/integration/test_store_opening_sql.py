"""SQLAlchemyStore: URL hints, damaged SQLite files in one line, opening at an explicit open()."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from stageflow import ConfigurationError, Engine, Pipeline, SchemaError, StoreError
from stageflow.adapters.sqlalchemy import SQLAlchemyStore


def made(path: Path) -> bytes:
    """A real store file at ``path``, closed; its bytes."""

    async def main():
        store = SQLAlchemyStore(f"sqlite:///{path}")
        await store.open()
        await store.aclose()

    asyncio.run(main())
    with sqlite3.connect(path) as conn:  # everything in the main file, no WAL left over
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.read_bytes()


def opened(path: Path) -> StoreError:
    async def main():
        store = SQLAlchemyStore(f"sqlite:///{path}")
        await store.open()

    with pytest.raises(StoreError) as caught:
        asyncio.run(main())
    return caught.value


def one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text
    assert "sqlalche.me" not in text
    assert "Background on this error" not in text
    assert "[SQL:" not in text
    return text


class TestURLs:
    @pytest.mark.parametrize("url", ["sqlite://runs.db", "sqlite+aiosqlite://runs.db"])
    def test_two_slashes_get_a_hint_about_three(self, url):
        with pytest.raises(ConfigurationError) as caught:
            SQLAlchemyStore(url)
        error = caught.value
        assert error.field == "url"
        assert error.value == url
        assert "names a host 'runs.db', not a file" in str(error)
        assert "sqlite:///runs.db" in str(error)

    def test_three_slashes_make_a_relative_file(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)

        async def main():
            store = SQLAlchemyStore("sqlite:///runs.db")
            await store.open()
            await store.aclose()

        asyncio.run(main())
        assert (tmp_path / "runs.db").is_file()


class TestDamagedFiles:
    def test_another_kind_of_file_is_refused_when_the_store_is_made(self, tmp_path):
        path = tmp_path / "notes.db"
        path.write_text("my notes\n" * 50)
        with pytest.raises(StoreError) as caught:
            SQLAlchemyStore(f"sqlite:///{path}")
        text = one_line(caught.value)
        assert text.startswith(f"{path} cannot be used as a store: it is no SQLite database")
        assert path.read_text() == "my notes\n" * 50

    def test_a_directory_is_refused_when_the_store_is_made(self, tmp_path):
        with pytest.raises(StoreError, match="it is a directory"):
            SQLAlchemyStore(f"sqlite:///{tmp_path}")

    @pytest.mark.parametrize("keep", [100, 5000])
    def test_a_truncated_file_fails_at_open_in_one_line(self, tmp_path, keep):
        data = made(tmp_path / "good.db")
        path = tmp_path / "cut.db"
        path.write_bytes(data[:keep])
        text = one_line(opened(path))
        assert text == (
            f"{path} cannot be used as a store: the SQLite file is corrupt or truncated "
            "(database disk image is malformed)"
        )

    def test_a_corrupt_file_fails_at_open_in_one_line(self, tmp_path):
        data = bytearray(made(tmp_path / "good.db"))
        data[100:4096] = b"\xff" * (4096 - 100)
        path = tmp_path / "bad.db"
        path.write_bytes(bytes(data))
        text = one_line(opened(path))
        assert text.startswith(f"{path} cannot be used as a store: the SQLite file is corrupt")

    def test_an_empty_file_is_a_new_database(self, tmp_path):
        path = tmp_path / "empty.db"
        path.write_bytes(b"")

        async def main():
            store = SQLAlchemyStore(f"sqlite:///{path}")
            await store.open()
            runs = await store.list_runs()
            await store.aclose()
            return runs

        assert asyncio.run(main()) == []


class TestOpen:
    def test_open_creates_the_schema_and_twice_is_nothing(self, tmp_path):
        path = tmp_path / "runs.db"

        async def main():
            store = SQLAlchemyStore(f"sqlite:///{path}")
            assert not path.exists()  # made lazily: constructing writes nothing
            await store.open()
            await store.open()
            await store.aclose()

        asyncio.run(main())
        with sqlite3.connect(path) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert "stageflow_runs" in tables

    def test_a_newer_schema_fails_at_open_not_in_a_run(self, tmp_path):
        path = tmp_path / "runs.db"
        made(path)
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE stageflow_meta SET value = '99' WHERE key = 'schema_version'")
        ran = []

        async def stage(ctx):
            ran.append(1)

        async def main():
            store = SQLAlchemyStore(f"sqlite:///{path}")
            with pytest.raises(SchemaError, match="99"):
                await store.open()
            with pytest.raises(SchemaError):  # and again when a run is tried: nothing runs
                await Engine(store=store).run(Pipeline().with_stage("s", stage).build())

        asyncio.run(main())
        assert ran == []

    def test_a_damaged_file_fails_a_run_before_any_stage(self, tmp_path):
        data = made(tmp_path / "good.db")
        path = tmp_path / "cut.db"
        path.write_bytes(data[:5000])
        ran = []

        async def stage(ctx):
            ran.append(1)

        async def main():
            store = SQLAlchemyStore(f"sqlite:///{path}")
            await Engine(store=store).run(Pipeline().with_stage("s", stage).build())

        with pytest.raises(StoreError, match="corrupt or truncated"):
            asyncio.run(main())
        assert ran == []
