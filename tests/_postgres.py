"""A throwaway PostgreSQL server for the tests, started and stopped by the tests themselves.

The server binaries come from the Debian ``postgresql`` package, which installs them off the
PATH in ``/usr/lib/postgresql/<version>/bin``; the newest version there is used, or the
directory named by ``STAGEFLOW_PG_BIN``. PostgreSQL refuses to run as root and CI runs as
root, so when we are root the cluster is created and run as the ``postgres`` system user.

Every session gets a fresh directory and a free port, so a cluster left behind by a killed
run cannot get in the way; the server is also told to quit when the process that started it
dies, and directories left by dead sessions are removed at the next start. The cluster is
tuned for speed, not durability (``fsync=off``): it holds nothing worth keeping.

Typical use (the fixtures in ``tests/conftest.py`` do this)::

    cluster = PostgresCluster.start()
    try:
        database = cluster.create_database()
        database.url  # postgresql+asyncpg://postgres@127.0.0.1:PORT/NAME, for SQLAlchemy
        database.dsn  # postgresql://postgres@127.0.0.1:PORT/NAME, for asyncpg.connect
        cluster.drop_database(database)
    finally:
        cluster.stop()
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import glob
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

PG_BIN_ENV = "STAGEFLOW_PG_BIN"
REQUIRE_ENV = "STAGEFLOW_REQUIRE_POSTGRES"
DEFAULT_BIN_GLOB = "/usr/lib/postgresql/*/bin"
SERVER_USER = "postgres"
DIR_PREFIX = "stageflow-pg-"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

# Speed over durability: the data is thrown away at the end of the session anyway.
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",  # room for the many-concurrent-runs tests
    "shared_buffers": "32MB",
    "logging_collector": "off",
}


class PostgresUnavailable(Exception):
    """The machine cannot run a PostgreSQL server: binaries or the ``postgres`` user missing.

    Tests skip on it, unless ``STAGEFLOW_REQUIRE_POSTGRES=1`` makes it a failure.
    """


class PostgresStartError(RuntimeError):
    """The binaries are there but the server did not come up; the message has the log tail."""


def postgres_required() -> bool:
    """Whether a missing server must fail the tests rather than skip them (CI sets this)."""
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in {"1", "true", "yes"}


def find_bin_dir() -> Path:
    """The directory holding ``initdb`` and ``postgres``: ``$STAGEFLOW_PG_BIN`` or the newest.

    Raises:
        PostgresUnavailable: No such directory has the server binaries.
    """
    override = os.environ.get(PG_BIN_ENV)
    candidates = [Path(override)] if override else _by_version(glob.glob(DEFAULT_BIN_GLOB))
    for bin_dir in candidates:
        if all(_is_executable(bin_dir / name) for name in ("initdb", "postgres", "pg_isready")):
            return bin_dir
    where = f"{override} (from {PG_BIN_ENV})" if override else DEFAULT_BIN_GLOB
    raise PostgresUnavailable(
        f"PostgreSQL server binaries not found under {where}; install the postgresql package"
    )


def _by_version(paths: list[str]) -> list[Path]:
    def version(path: str) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", Path(path).parent.name))

    return [Path(path) for path in sorted(paths, key=version, reverse=True)]


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


@dataclass(frozen=True)
class PostgresDatabase:
    """One database in the throwaway cluster, with the URLs to reach it."""

    name: str
    host: str
    port: int
    user: str

    @property
    def url(self) -> str:
        """A SQLAlchemy URL with the asyncpg driver."""
        return f"postgresql+asyncpg://{self.user}@{self.host}:{self.port}/{self.name}"

    @property
    def dsn(self) -> str:
        """A plain libpq DSN, as ``asyncpg.connect`` and ``psql`` take it."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.name}"


class PostgresCluster:
    """A running throwaway cluster; make one with `start` and end it with `stop`."""

    host = "127.0.0.1"
    user = "postgres"  # the superuser initdb creates; trust auth, no password

    def __init__(self, bin_dir: Path, root: Path, port: int, process: subprocess.Popen[bytes]):
        self.bin_dir = bin_dir
        self.root = root
        self.port = port
        self.process = process
        self._names = itertools.count(1)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    @classmethod
    def start(cls, bin_dir: Path | None = None) -> PostgresCluster:
        """Create a cluster in a fresh temporary directory and start it on a free port.

        Raises:
            PostgresUnavailable: No server binaries, or we are root and there is no
                ``postgres`` user to run the server as.
            PostgresStartError: The server did not come up; the message ends with its log.
        """
        bin_dir = bin_dir or find_bin_dir()
        run_as = _server_user()
        base = _temp_base(run_as)
        _remove_stale_dirs(base)
        root = Path(tempfile.mkdtemp(prefix=DIR_PREFIX, dir=base))
        try:
            (root / "owner.pid").write_text(f"{os.getpid()}\n")
            if run_as is not None:
                os.chown(root, run_as.uid, run_as.gid)
            cluster = cls._start_in(bin_dir, root, run_as)
        except PostgresStartError:
            # Kept for a look at the log and data; the next session removes it.
            raise
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        # A backstop for callers that never reach their own stop(); stop() is idempotent.
        atexit.register(cluster.stop)
        return cluster

    @classmethod
    def _start_in(cls, bin_dir: Path, root: Path, run_as: _User | None) -> PostgresCluster:
        data_dir = root / "data"
        log_file = root / "server.log"
        initdb = subprocess.run(
            [
                str(bin_dir / "initdb"),
                f"--pgdata={data_dir}",
                f"--username={cls.user}",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            cwd=root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            **_as_user(run_as),
        )
        if initdb.returncode != 0:
            raise PostgresStartError(
                f"initdb failed with exit code {initdb.returncode}:\n{initdb.stdout}{initdb.stderr}"
            )

        # A port found free can be taken before the server binds it; try again with another.
        for attempt in range(1, 4):
            port = _free_port()
            settings = {**SERVER_SETTINGS, "port": str(port), "unix_socket_directories": str(root)}
            options = [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]
            with log_file.open("ab") as log:
                process = subprocess.Popen(
                    [str(bin_dir / "postgres"), "-D", str(data_dir), *options],
                    cwd=root,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads yet at start
                    **_as_user(run_as),
                )
            cluster = cls(bin_dir, root, port, process)
            try:
                cluster._wait_until_ready()
            except PostgresStartError:
                cluster._terminate()
                if attempt < 3 and "already in use" in log_file.read_text(errors="replace"):
                    log_file.unlink()
                    continue
                raise
            return cluster
        raise AssertionError("unreachable")

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise PostgresStartError(
                    f"the PostgreSQL server exited with code {self.process.returncode} "
                    f"while starting\n{self.log_tail()}"
                )
            # Asked on the unix socket, which the server opens after its TCP socket: a port
            # someone else holds would leave a TCP probe hanging for seconds.
            ready = subprocess.run(
                [
                    str(self.bin_dir / "pg_isready"),
                    *("--host", str(self.socket_dir), "--port", str(self.port)),
                    f"--username={self.user}",
                    "--dbname=postgres",
                    "--quiet",
                ],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                check=False,
            )
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise PostgresStartError(
                    f"the PostgreSQL server did not accept connections within "
                    f"{START_TIMEOUT:.0f} s\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server log, for error messages."""
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError as error:
            return f"(no server log at {self.log_file}: {error})"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- last lines of {self.log_file} ---\n{tail}"

    def create_database(self, name: str | None = None) -> PostgresDatabase:
        """Create an empty database (named ``test_<n>`` unless a name is given)."""
        database = PostgresDatabase(
            name or f"test_{next(self._names)}", self.host, self.port, self.user
        )
        self._sql(f'CREATE DATABASE "{database.name}"')
        return database

    def drop_database(self, database: PostgresDatabase) -> None:
        """Drop a database, disconnecting whoever is still connected to it."""
        self._sql(f'DROP DATABASE IF EXISTS "{database.name}" WITH (FORCE)')

    def _sql(self, statement: str) -> None:
        # psql from the same bin dir: the harness needs no Python driver of its own.
        psql = self.bin_dir / "psql"
        result = subprocess.run(
            [
                str(psql),
                *("--host", self.host, "--port", str(self.port), "--username", self.user),
                "--dbname=postgres",
                "--no-psqlrc",
                "--quiet",
                "--set=ON_ERROR_STOP=1",
                f"--command={statement}",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
        )
        if result.returncode != 0:
            raise RuntimeError(f"{statement!r} failed: {result.stderr.strip()}")

    def stop(self) -> None:
        """Stop the server and delete its directory; safe to call more than once."""
        self._terminate()
        shutil.rmtree(self.root, ignore_errors=True)
        atexit.unregister(self.stop)

    def _terminate(self) -> None:
        if self.process.poll() is None:
            # SIGINT is PostgreSQL's "fast" shutdown: disconnect clients, stop cleanly.
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass(frozen=True)
class _User:
    uid: int
    gid: int
    groups: tuple[int, ...]  # its own supplementary groups, not root's


def _as_user(run_as: _User | None) -> dict[str, Any]:
    """subprocess arguments that run a command as the server user (or as ourselves)."""
    if run_as is None:
        return {}
    return {"user": run_as.uid, "group": run_as.gid, "extra_groups": run_as.groups}


def _server_user() -> _User | None:
    """The user to run the server as: ``postgres`` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise PostgresUnavailable(
            f"running as root and there is no {SERVER_USER!r} user to run the PostgreSQL "
            "server as (PostgreSQL refuses to run as root); install the postgresql package"
        ) from None
    return _User(entry.pw_uid, entry.pw_gid, tuple(os.getgrouplist(SERVER_USER, entry.pw_gid)))


def _temp_base(run_as: _User | None) -> str:
    base = tempfile.gettempdir()
    # The server user must be able to reach its directory; root's own TMPDIR may be closed.
    if run_as is not None and not os.stat(base).st_mode & 0o001:
        base = "/tmp"
    return base


def _remove_stale_dirs(base: str) -> None:
    """Delete cluster directories whose session and server are both gone (a killed run)."""
    for root in Path(base).glob(f"{DIR_PREFIX}*"):
        owner = _pid_in(root / "owner.pid")
        server = _pid_in(root / "data" / "postmaster.pid")
        if owner is not None and not _alive(owner) and (server is None or not _alive(server)):
            shutil.rmtree(root, ignore_errors=True)


def _pid_in(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    # Loaded here, in the parent: dlopen between fork and exec is not safe.
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return cast("Callable[..., int]", libc.prctl)
    except (OSError, AttributeError):
        return None


_prctl = _load_prctl()


def _die_with_parent() -> None:
    """In the server's process: get SIGQUIT (immediate shutdown) if the test process dies.

    subprocess runs this after switching to the server user, a switch that would otherwise
    clear the setting.
    """
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGQUIT)
