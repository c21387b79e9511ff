"""A throwaway Postgres server for tests: Debian's `postgresql` binaries, a data
directory under /tmp, TCP on 127.0.0.1 for user `tether` with password `PASSWORD`
(scram-sha-256, so a wrong one is refused as by a real server).

`hack/install-deps` installs the package; without it the tests that need a server
are skipped locally and fail under CI (`CI` set), so a missing install is noticed.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PASSWORD = "tether-test-password"


def binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    """One running server; `dsn(db)` reaches database `db` as user `tether`."""

    bin: Path
    data: Path
    port: int

    def dsn(self, database: str = "postgres", password: str = "") -> str:
        return f"postgresql://tether:{password or PASSWORD}@127.0.0.1:{self.port}/{database}"

    def _as_owner(self, *cmd: str) -> list[str]:
        # Postgres refuses to run as root: run its tools as the package's user.
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *cmd]
        return list(cmd)

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(
            self._as_owner(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", *args),
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data}"
        self.pg_ctl("-o", options, "-l", str(self.data / "log"), "start")

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("-m", mode, "stop")

    def kill(self) -> None:
        """Stop at once, as a deleted pod would (no shutdown checkpoint)."""
        self.pg_ctl("-m", "immediate", "stop")

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run(
            [str(self.bin / "psql"), "-X", "-A", "-t", "-d", self.dsn(database), "-c", sql],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()


def start_server() -> PostgresServer:
    bin_dir = binaries()
    if bin_dir is None:
        raise FileNotFoundError("no /usr/lib/postgresql/*/bin/initdb: run hack/install-deps")
    data = Path(tempfile.mkdtemp(prefix="tether-pg-"))
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    server = PostgresServer(bin_dir, data, _free_port())
    pwfile = data / "pwfile"
    pwfile.write_text(PASSWORD)
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres", "postgres")
    subprocess.run(
        server._as_owner(
            *(str(bin_dir / "initdb"), "-D", str(data / "db"), "-U", "tether", "-E", "UTF8"),
            *("--pwfile", str(pwfile), "--auth-host=scram-sha-256", "--auth-local=trust"),
        ),
        check=True,
        capture_output=True,
    )
    server.data = data / "db"
    server.start()
    deadline = time.monotonic() + 30
    while True:
        try:
            server.psql("SELECT 1")
            return server
        except subprocess.CalledProcessError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def remove(server: PostgresServer) -> None:
    with contextlib.suppress(subprocess.CalledProcessError):
        server.stop("immediate")
    shutil.rmtree(server.data.parent, ignore_errors=True)
