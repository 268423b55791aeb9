"""A throw-away PostgreSQL cluster for the tests: `initdb` into a temporary folder,
`pg_ctl start` on a Unix socket in that folder (no TCP: `listen_addresses=''`), fsync
off (nothing here must survive a power cut), stopped at the end of the session.

Each test gets a database of its own, cloned from a template migrated once to the
newest revision (`CREATE DATABASE ... TEMPLATE`): fast, and every test starts from an
empty ledger. The cluster runs as the `postgres` user when the tests run as root
(PostgreSQL refuses root). Without the binaries the tests that need it skip, saying
so, except under CI, where that is a failure (.ci/run installs them).
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

TEMPLATE = "ledger_template"
SUPERUSER = "postgres"


def binaries() -> Path | None:
    """The folder holding initdb and pg_ctl: the distribution's, else on PATH."""
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    found = shutil.which("pg_ctl")
    return Path(found).parent if found and shutil.which("initdb") else None


class Cluster:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="kravmottak-pg-"))
        self.data = self.root / "data"
        self.socket = self.root
        self._as_postgres = os.getuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, SUPERUSER, SUPERUSER)
        self._names = itertools.count(1)
        self._admin = None

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", SUPERUSER, "--"] if self._as_postgres else []
        done = subprocess.run(
            [*prefix, *command], capture_output=True, text=True, timeout=120, cwd=self.root
        )
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed:\n{done.stdout}\n{done.stderr}")

    def url(self, dbname: str) -> str:
        return f"postgresql:///{dbname}?host={self.socket}&user={SUPERUSER}"

    def start(self) -> Cluster:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        options = (
            f"-c listen_addresses='' -k {self.socket} -c fsync=off -c synchronous_commit=off"
            " -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
            "-w",
            "start",
        )
        import psycopg

        from daemon.ledger import migrate

        self._admin = psycopg.connect(self.url("postgres"), autocommit=True)
        self._admin.execute(f"CREATE DATABASE {TEMPLATE}")
        migrate.upgrade(self.url(TEMPLATE))
        return self

    def new_database(self) -> str:
        """A new, empty ledger at the newest revision; its URL."""
        name = f"ledger_{os.getpid()}_{next(self._names)}"
        self._admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        return self.url(name)

    def empty_database(self) -> str:
        """A new database with no ledger in it (for `db upgrade` and `db copy`)."""
        name = f"empty_{os.getpid()}_{next(self._names)}"
        self._admin.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.close()
        with_data = self.data.exists()
        if with_data:
            with contextlib.suppress(RuntimeError):
                self._run(
                    str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"
                )
        shutil.rmtree(self.root, ignore_errors=True)
