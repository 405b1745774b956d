"""``kanthorq pub --lines``: stdin read line by line, whatever stdin is, and a clean exit.

The exit tests leave the reader blocked in a read of stdin (a pipe or a terminal that stays
open) while the command ends because its output pipe closed. A reader that held a buffered
stdin's lock in that read made the interpreter abort at shutdown (``Fatal Python error:
_enter_buffered_busy``), every time.
"""

from __future__ import annotations

import asyncio
import os
import pty
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from kanthorq.linereader import line_batches


async def collect(fd: int, size: int) -> list[list[bytes]]:
    return [batch async for batch in line_batches(fd, size)]


@contextmanager
def pipe() -> Iterator[tuple[int, int]]:
    read, write = os.pipe()
    try:
        yield read, write
    finally:
        for fd in (read, write):
            with suppress(OSError):
                os.close(fd)


async def test_lines_of_a_pipe_in_batches() -> None:
    with pipe() as (read, write):
        os.write(write, b"one\ntwo\r\n\nthr")
        os.write(write, b"ee\nfour\nfive")  # a line split across reads; the last one unended
        os.close(write)
        batches = await collect(read, 2)
    assert [line for batch in batches for line in batch] == [
        b"one",
        b"two",
        b"three",
        b"four",
        b"five",
    ]
    assert all(1 <= len(batch) <= 2 for batch in batches)


async def test_lines_of_a_file(tmp_path: Path) -> None:
    path = tmp_path / "lines.txt"
    path.write_bytes(b"".join(b"line %d\n" % n for n in range(50_000)))
    with path.open("rb") as file:
        batches = await collect(file.fileno(), 1000)
    lines = [line for batch in batches for line in batch]
    assert lines == [b"line %d" % n for n in range(50_000)]
    assert max(len(batch) for batch in batches) == 1000


async def test_a_line_longer_than_a_read() -> None:
    long = b"x" * 300_000  # several reads
    with pipe() as (read, write):
        loop = asyncio.get_running_loop()
        sent = loop.run_in_executor(None, os.write, write, long + b"\nshort\n" + long)
        lines = aiter(line async for batch in line_batches(read, 10) for line in batch)
        assert await asyncio.wait_for(anext(lines), 10) == long
        await sent
        os.close(write)
        assert [line async for line in lines] == [b"short", long]


async def test_a_read_error_reaches_the_reader(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY)  # a directory: reading it fails
    try:
        with pytest.raises(IsADirectoryError):
            await collect(fd, 10)
    finally:
        os.close(fd)


async def test_lines_arrive_before_the_input_ends() -> None:
    with pipe() as (read, write):
        batches = aiter(line_batches(read, 100))
        os.write(write, b"first\n")
        assert await asyncio.wait_for(anext(batches), 10) == [b"first"]
        os.write(write, b"second\n")
        assert await asyncio.wait_for(anext(batches), 10) == [b"second"]
        os.close(write)
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(batches), 10)


# ---- the command, into a closed output pipe ---------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("KANTHORQ_DSN", None)
    return env


@pytest.fixture
def closed_output() -> Iterator[int]:
    """The write end of a pipe whose read end is closed: writing to it fails (EPIPE)."""
    read, write = os.pipe()
    os.close(read)
    try:
        yield write
    finally:
        os.close(write)


async def pub_lines(dsn: str, stdin: int, stdout: int) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kanthorq",
        "pub",
        "a.b",
        "--lines",
        "--dsn",
        dsn,
        stdin=stdin,
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, err.decode(errors="replace")


@pytest.fixture
async def open_pipe() -> AsyncIterator[tuple[int, int]]:
    with pipe() as ends:
        yield ends


async def test_pub_stops_quietly_while_a_pipe_stays_open(
    dsn: str, closed_output: int, open_pipe: tuple[int, int]
) -> None:
    read, write = open_pipe
    os.write(write, b"one\n")  # published, then its id cannot be written: the command ends
    for _ in range(3):  # the writer never closes: the reader stays blocked in its read
        code, err = await pub_lines(dsn, read, closed_output)
        assert "Fatal Python error" not in err
        assert (code, err) == (0, "")
        os.write(write, b"again\n")


async def test_pub_stops_quietly_while_a_terminal_stays_open(dsn: str, closed_output: int) -> None:
    leader, follower = pty.openpty()
    try:
        os.write(leader, b"one\n")
        code, err = await pub_lines(dsn, follower, closed_output)
    finally:
        os.close(follower)
        os.close(leader)
    assert "Fatal Python error" not in err
    assert (code, err) == (0, "")


async def test_pub_from_a_file_into_a_closed_pipe(
    dsn: str, closed_output: int, tmp_path: Path
) -> None:
    path = tmp_path / "lines.txt"
    path.write_bytes(b"".join(b"line %d\n" % n for n in range(20_000)))
    with path.open("rb") as file:
        code, err = await pub_lines(dsn, file.fileno(), closed_output)
    assert "Fatal Python error" not in err
    assert (code, err) == (0, "")
