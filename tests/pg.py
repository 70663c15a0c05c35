"""A private PostgreSQL cluster on loopback, for tests and benchmarks; removed when stopped.

``initdb`` makes a cluster in a temporary directory, ``pg_ctl`` starts it on one
free loopback port (and a Unix socket in the same directory), and ``stop``
shuts it down and deletes everything. No system cluster is used or needed:
only Debian's server binaries (``make test`` installs the ``postgresql``
package). PostgreSQL refuses to run as root, so under root the cluster runs as
the ``postgres`` user Debian's package creates.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql


def server_bin() -> Path | None:
    """The newest installed PostgreSQL server's bin directory (Debian: /usr/lib/postgresql/<n>/bin)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresCluster:
    """``start()``, then ``url(dbname)`` / ``create_database(name)``; ``stop()`` removes it all."""

    def __init__(self, port: int | None = None, fsync: bool = True, settings: dict[str, str] | None = None) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="relay-pg-"))
        self.base.chmod(0o755)
        self.data = self.base / "data"
        self.port = port or free_port()
        self.log_path = self.base / "postgres.log"
        self.settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.base}'",
            "fsync": "on" if fsync else "off",  # off only where durability is not what is measured
            "max_connections": "200",
            "shared_buffers": "128MB",
            **(settings or {}),
        }
        self._bin = server_bin()
        self._user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        assert self._bin is not None
        command = [str(self._bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", self._user, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)

    def start(self, timeout: float = 30.0) -> None:
        if self._bin is None:
            raise RuntimeError("PostgreSQL is not installed: run the README's set-up (make test installs it)")
        if os.geteuid() == 0:
            shutil.chown(self.base, self._user)
        done = self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "relay",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-instructions",
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{done.stdout}\n{done.stderr}")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{k} = {v}\n" for k, v in self.settings.items())
        done = self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log_path),
            "-w",
            "-t",
            str(int(timeout)),
            "start",
            timeout=timeout + 5,
        )
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed:\n{done.stdout}\n{done.stderr}\n{self.log()}")

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://relay@127.0.0.1:{self.port}/{dbname}"

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run ``sql`` with psql; its output (tuples only, unaligned)."""
        done = self._run(
            "psql",
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "relay",
            "-d",
            dbname,
            "-c",
            sql,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr}")
        return done.stdout.strip()

    def create_database(self, name: str, template: str | None = None) -> str:
        """A new database, empty or a copy of ``template`` (which nobody may be connected to); its URL."""
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        with psycopg.connect(self.url(), autocommit=True) as conn:
            if template is not None:
                statement = sql.SQL("{} TEMPLATE {}").format(statement, sql.Identifier(template))
                if conn.info.server_version >= 150000:  # a copy of the files: 4x faster than WAL_LOG for a small one
                    statement = sql.SQL("{} STRATEGY FILE_COPY").format(statement)
            conn.execute(statement)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Remove the database ``name`` (if it is there), cutting any session still connected to it."""
        statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(statement)

    def restart(self, down_for: float = 0.0) -> None:
        """Stop (fast: sessions are cut), wait ``down_for`` seconds, start again: an outage for fault tests."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        time.sleep(down_for)
        done = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-w", "start")
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed:\n{done.stderr}\n{self.log()}")

    def stop(self) -> None:
        if self.data.exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.base, ignore_errors=True)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except (FileNotFoundError, PermissionError):
            return ""
