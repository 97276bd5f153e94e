"""A real PostgreSQL server for the tests, started once per session (imported by conftest.py).

The server binaries (initdb, pg_ctl) come from PATH or /usr/lib/postgresql/<version>/bin. PostgreSQL refuses to
run as root, so under root it runs as the ``postgres`` system user. It listens on a unix socket in a temporary
folder only (no TCP port is opened), with trust authentication, except for the role ``zoo_pw``, which must give
its password ('secret'), so a wrong password can be tested.

Fixtures: ``postgres_server`` (the server), ``pg_url`` (a new empty database per test, as a zoo registry URL) and
``registry_location`` (parametrised: a SQLite file, then a PostgreSQL database).
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import pytest

PASSWORD_ROLE, PASSWORD = "zoo_pw", "secret"


def find_binaries() -> Optional[Path]:
    """The folder with initdb and pg_ctl, or None."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def _free_port() -> int:
    """A port number no local server uses (it names the socket file: .s.PGSQL.<port>)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    socket_dir: Path
    port: int
    binaries: Optional[Path] = None
    data: Optional[Path] = None
    options: str = ""

    def stop(self) -> None:
        """Stop the server at once, as a crash would (``pg_ctl -m immediate``): every connection is cut."""
        subprocess.run(_as_server_user([str(self.binaries / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                                        "-w", "stop"]), check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        subprocess.run(_as_server_user([str(self.binaries / "pg_ctl"), "-D", str(self.data), "-l",
                                        str(self.data.parent / "server.log"), "-w", "-t", "60", "-o", self.options,
                                        "start"]), check=True, capture_output=True, text=True, timeout=90)

    def url(self, database: str, user: str = "postgres", password: Optional[str] = None) -> str:
        auth = f"{user}:{password}" if password is not None else user
        return f"postgresql+psycopg://{auth}@/{database}?host={self.socket_dir}&port={self.port}"

    def execute(self, sql: str, database: str = "postgres") -> list[tuple]:
        import psycopg

        with psycopg.connect(host=str(self.socket_dir), port=self.port, user="postgres", dbname=database,
                             autocommit=True) as conn:
            cursor = conn.execute(sql)
            return cursor.fetchall() if cursor.description else []

    def new_database(self) -> str:
        name = "zoo_" + uuid.uuid4().hex[:12]
        self.execute(f"CREATE DATABASE {name}")
        return name


def _fast_tmp() -> Optional[str]:
    """/dev/shm when it has room (a cluster and its test databases in memory: no disk waits), else the default."""
    try:
        return "/dev/shm" if shutil.disk_usage("/dev/shm").free > 2 << 30 and os.access("/dev/shm", os.W_OK) else None
    except OSError:
        return None


def _as_server_user(args: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return args
    runuser = shutil.which("runuser")
    return [runuser, "-u", "postgres", "--", *args] if runuser else ["su", "postgres", "-c", shlex.join(args)]


@pytest.fixture(scope="session")
def postgres_server():
    binaries = find_binaries()
    if binaries is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed; .ci/run installs them")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed: pip install -e '.[postgres]'")
    owner = None
    if os.geteuid() == 0:
        import pwd

        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' system user to run the server as")
    # Not under pytest's tmp_path: its folders are private to the test user, and the server user must enter it.
    root = Path(tempfile.mkdtemp(prefix="zoo-pg-", dir=_fast_tmp()))
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    data, log, port = root / "data", root / "server.log", _free_port()
    try:
        subprocess.run(_as_server_user([str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8",
                                        "--auth=trust", "--no-sync"]),
                       check=True, capture_output=True, text=True, timeout=120)
        hba = data / "pg_hba.conf"
        hba.write_text(f"local all {PASSWORD_ROLE} scram-sha-256\nlocal all all trust\n")
        options = f"-k {root} -p {port} -c listen_addresses='' -c max_connections=200 -F"
        subprocess.run(_as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                                        "-o", options, "start"]),
                       check=True, capture_output=True, text=True, timeout=90)
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {exc.stderr or exc.stdout}") from None
    server = PostgresServer(root, port, binaries, data, options)
    try:
        server.execute(f"CREATE ROLE {PASSWORD_ROLE} LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
        yield server
    finally:
        subprocess.run(_as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(postgres_server, tmp_path, monkeypatch) -> Iterator[str]:
    """A new, empty database on the session's server, as a registry URL; ZOO_ARTIFACTS points into tmp_path (a
    server registry has no file to put its checkpoints beside)."""
    monkeypatch.setenv("ZOO_ARTIFACTS", str(tmp_path / "artifacts"))
    database = postgres_server.new_database()
    yield postgres_server.url(database)
    postgres_server.execute(f"DROP DATABASE {database} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_location(request, tmp_path) -> str:
    """Where a test's registry lives: a SQLite file, then a new PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "registry.db")
    return request.getfixturevalue("pg_url")
