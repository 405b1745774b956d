"""A PostgreSQL server of one test's own, which the test may stop and start.

The binaries are the ones the ``pgserver`` package ships (they work on a machine with no
system PostgreSQL), else a system installation's. PostgreSQL refuses to run as root, so
under root the server runs as the unprivileged user pgserver itself uses. With ``setpriv``
(util-linux) the server is a child that dies with the test process.
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
import warnings
from pathlib import Path

RUN_AS = "pgserver"


def bin_dir() -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        try:
            import pgserver._commands as commands

            shipped = Path(commands.POSTGRES_BIN_PATH)
        except ImportError:
            shipped = Path("/nonexistent")
    if (shipped / "pg_ctl").exists():
        return shipped
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise RuntimeError("no PostgreSQL binaries: install kanthorq[embedded] (pgserver)")
    return Path(found[-1]).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateServer:
    def __init__(self) -> None:
        self.bin = bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="kq_pg_"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.user: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        if os.geteuid() == 0:
            self._prepare_for_root()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _prepare_for_root(self) -> None:
        import pwd

        try:
            entry = pwd.getpwnam(RUN_AS)
        except KeyError:
            subprocess.run(["useradd", "-s", "/bin/bash", RUN_AS], check=True, capture_output=True)
            entry = pwd.getpwnam(RUN_AS)
        self.user = RUN_AS
        self.root.chmod(0o755)
        os.chown(self.root, entry.pw_uid, entry.pw_gid)
        # the binaries must be readable and executable by that user
        for path in (self.bin, self.bin.parent / "lib", self.bin.parent / "share"):
            for parent in [path, *path.parents]:
                with contextlib.suppress(OSError):
                    parent.chmod(parent.stat().st_mode | 0o055)

    def _run(self, *args: str, timeout: float = 60) -> None:
        result = subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            user=self.user,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed ({result.returncode}): {result.stderr}\n{self.server_log()}"
            )

    def server_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def init(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections. Call it from the main
        thread: the server is killed when the thread that started it ends (below)."""
        options = [
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-k",
            str(self.root),
            "-c",
            "fsync=off",
        ]
        setpriv = shutil.which("setpriv")
        if setpriv is None:  # no way to tie its life to ours: pg_ctl, and destroy() stops it
            self._run(
                "pg_ctl",
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-o",
                " ".join(options),
                "-w",
                "-t",
                "60",
                "start",
            )
            return
        # the postmaster is our child, killed if this test process dies (a CI timeout),
        # so a killed run leaves no server behind
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    setpriv,
                    "--pdeathsig",
                    "KILL",
                    "--",
                    str(self.bin / "postgres"),
                    "-D",
                    str(self.data),
                    *options,
                ],
                user=self.user,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.root,
            )
        deadline = time.monotonic() + 60
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{self.server_log()}")
            time.sleep(0.05)

    def _ready(self) -> bool:
        probe = subprocess.run(
            [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
            capture_output=True,
            timeout=10,
        )
        return probe.returncode == 0

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
        if self.proc is not None:
            self.proc.wait(30)
            self.proc = None

    def destroy(self) -> None:
        """Stop the server, whatever its state, and remove its files."""
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self.stop("immediate")
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(30)
        shutil.rmtree(self.root, ignore_errors=True)
