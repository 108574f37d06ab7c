"""Store fixtures: a fresh database per test on SQLite (a temporary file) and on a real PostgreSQL server.

The server is a throwaway one started once per test run from Debian's binaries (``.ci/run`` installs them):
initdb into a temporary directory, then pg_ctl on 127.0.0.1 at a free port, its socket in that directory.
PostgreSQL will not run as root, so as root both run as the ``postgres`` user (made by the Debian package).
``RINGLINE_TEST_POSTGRES_URL`` names a server to use instead. Without either the tests fail: no skips.

tests/conftest.py makes them available to every test: ``store``, ``store_url``, ``store_backend``,
``store_clock`` and ``postgres_url``.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from ringline.api.store import Store, open_store

ENV_URL = "RINGLINE_TEST_POSTGRES_URL"
BACKENDS = ["sqlite", "postgres"]


class SteppingClock:
    """A wall clock that moves 1 ms each time it is read, so rows made one after another sort in order."""

    def __init__(self, start: datetime = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)) -> None:
        self._start = start
        self._ticks = itertools.count()

    def __call__(self) -> datetime:
        return self._start + timedelta(milliseconds=next(self._ticks))


def _pg_bin() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if candidates:
        return Path(candidates[-1]).parent
    if (initdb := shutil.which("initdb")) is not None:
        return Path(initdb).parent
    pytest.fail(
        f"PostgreSQL is not installed: run `apt-get install -y postgresql` (as .ci/run does) or set {ENV_URL}",
        pytrace=False,
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """A throwaway cluster in a temporary directory. ``start()`` returns its admin URL."""

    def __init__(self) -> None:
        self.bin = _pg_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="ringline-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail("running as root, and there is no `postgres` user to run PostgreSQL as", pytrace=False)
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        command = [*self._as, *args]
        result = subprocess.run(command, cwd=self.dir, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            log = self.dir / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            pytest.fail(
                f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}{tail}",
                pytrace=False,
            )

    def start(self) -> str:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--locale=C", "--no-sync")  # fmt: skip
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.dir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"  # a test server: speed over safety
        )
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"), "-o", options,
                  "-w", "-t", "60", "start")  # fmt: skip
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                [*self._as, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
                cwd=self.dir,
                capture_output=True,
                timeout=60,
                check=False,
            )
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The admin URL of a PostgreSQL server for this test run."""
    if url := os.environ.get(ENV_URL):
        yield url
        return
    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.stop()


def _with_database(url: str, name: str) -> str:
    """``url`` naming database ``name`` instead (query options kept)."""
    address, question, query = url.partition("?")
    return f"{address.rpartition('/')[0]}/{name}{question}{query}"


async def _admin(url: str, sql: str) -> None:
    try:
        conn = await asyncpg.connect(url, timeout=30)
    except (OSError, asyncpg.PostgresError) as e:
        pytest.fail(f"cannot reach the test PostgreSQL server at {url}: {e}", pytrace=False)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def store_clock() -> SteppingClock:
    return SteppingClock()


@pytest.fixture
async def store_url(store_backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A URL to an empty database of the backend the test runs on."""
    if store_backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'ringline.db'}"
        return
    admin = request.getfixturevalue("postgres_url")
    name = f"ringline_test_{uuid.uuid4().hex[:12]}"
    await _admin(admin, f"CREATE DATABASE {name}")
    try:
        yield _with_database(admin, name)
    finally:
        await _admin(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=BACKENDS)
def store_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def store(store_url: str, store_clock: Callable[[], datetime]) -> AsyncIterator[Store]:
    """A migrated store on a fresh database (of each backend in turn), stamping rows with ``store_clock``."""
    store = await open_store(store_url, now=store_clock)
    try:
        yield store
    finally:
        await store.close()
