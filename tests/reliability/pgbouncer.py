"""A PgBouncer of one test's own, in transaction pooling mode, in front of the test server.

Its configuration and auth file live in a temporary folder; it listens on a free local
port and routes every database name to the same name on the test server (a ``*`` entry),
through a small pool used round robin, so that clients share server connections the way
they do in production, and one client's consecutive transactions meet different ones.
PgBouncer refuses to run as root, so under root it runs as an unprivileged user; with
``setpriv`` it dies with the test process.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from tests.reliability.private_pg import free_port

POOL_SIZE = 3


def binary() -> str | None:
    """The pgbouncer executable, or None (the Debian package puts it in /usr/sbin)."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    fallback = Path("/usr/sbin/pgbouncer")
    return str(fallback) if os.access(fallback, os.X_OK) else None


def _run_as(socket_dir: str | None) -> str | None:
    """Under root: the unprivileged user to run as: the owner of the server's socket folder
    (the embedded server's is private to it), else the one PostgreSQL's packages make, else
    the one the private server uses, created when missing."""
    if os.geteuid() != 0:
        return None
    import pwd

    if socket_dir is not None:
        with contextlib.suppress(OSError, KeyError):
            owner = pwd.getpwuid(os.stat(socket_dir).st_uid).pw_name
            if owner != "root":
                return owner
    for name in ("postgres", "pgserver"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    subprocess.run(["useradd", "-s", "/bin/bash", "pgserver"], check=True, capture_output=True)
    return "pgserver"


def _quote_value(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class Bouncer:
    """``Bouncer(server_dsn).start()``; ``dsn(database)`` is the way through it."""

    def __init__(self, server_dsn: str, *, pool_size: int = POOL_SIZE) -> None:
        exe = binary()
        if exe is None:
            raise RuntimeError("pgbouncer is not installed")
        self.exe = exe
        parts = urlsplit(server_dsn)
        self.user = unquote(parts.username or "postgres")
        self.password = unquote(parts.password or "")
        # a socket folder (the embedded server: ?host=/path) or a TCP host
        self.upstream_host = (parse_qs(parts.query).get("host") or [""])[0] or (
            parts.hostname or "127.0.0.1"
        )
        self.upstream_port = parts.port or 5432
        self.pool_size = pool_size
        self.root = Path(tempfile.mkdtemp(prefix="kq_pgb_"))
        self.root.chmod(0o755)
        self.log = self.root / "pgbouncer.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> Path:
        target = f"host={self.upstream_host} port={self.upstream_port} user={self.user}"
        if self.password:
            target += f" password={_quote_value(self.password)}"
        users = self.root / "users.txt"
        users.write_text(f'"{self.user}" ""\n')
        ini = self.root / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = {target}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {users}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {self.pool_size}\n"
            # each transaction takes the next idle server connection, not the one used last
            # (LIFO, the default), so one client's statements do land on different ones
            "server_round_robin = 1\n"
            "max_client_conn = 1000\n"
        )
        for path in (users, ini):
            path.chmod(0o644)
        return ini

    def start(self) -> Bouncer:
        ini = self._write_config()
        command = [self.exe, str(ini)]
        setpriv = shutil.which("setpriv")
        if setpriv is not None:  # it dies with this process, even one killed by a CI timeout
            command = [setpriv, "--pdeathsig", "KILL", "--", *command]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                command,
                user=_run_as(self.upstream_host if self.upstream_host.startswith("/") else None),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.root,
            )
        deadline = time.monotonic() + 20
        while not self._listening():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pgbouncer did not start:\n{self.output()}")
            time.sleep(0.02)
        return self

    def _listening(self) -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def dsn(self, database: str) -> str:
        return f"postgresql://{quote(self.user)}@127.0.0.1:{self.port}/{quote(database)}"

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(30)
            self.proc = None
        shutil.rmtree(self.root, ignore_errors=True)
