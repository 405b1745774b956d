"""Item 6: events another client writes with a plain INSERT (no NOTIFY) are found by the poll."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Awaitable, Callable

import asyncpg

import kanthorq
from kanthorq.ids import new_id
from tests.conftest import Running, stream_table, wait_until
from tests.reliability.private_pg import bin_dir

Starter = Callable[..., Awaitable[Running]]
POLL = 1.0
SLACK = 0.75  # a claim and a handler's transaction after the poll finds the event, on a busy box


def psql() -> str:
    shipped = bin_dir() / "psql"
    if shipped.exists():
        return str(shipped)
    found = shutil.which("psql")
    assert found, "no psql: install kanthorq[embedded] (pgserver) or PostgreSQL's client"
    return found


async def run_psql(dsn: str, sql: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        psql(),
        dsn,
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        sql,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, (out, err)


async def test_plain_inserts_are_processed_within_the_poll_interval(
    dsn: str, ledger_db: asyncpg.Connection, start_app: Starter
) -> None:
    db = ledger_db
    app = kanthorq.App(dsn, poll_interval=POLL)

    @app.subscribe("job.>", consumer="jobs")
    async def handle(msg: kanthorq.Message) -> None:
        async with app.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO ledger (event_id, seq, attempt, pid) VALUES ($1, $2, $3, 0)",
                msg.event.id,
                msg.json()["seq"],
                msg.task.attempt_count,
            )
            await msg.ack(conn=conn)

    await start_app(app)
    table = await stream_table(db, "default")
    statements = [
        # only the columns of the storage contract; the defaults fill the rest
        f"INSERT INTO {table} (id, subject, body) VALUES ('{{id}}', 'job.psql', "
        "convert_to('{{\"seq\": {seq}}}', 'UTF8'))",
        f"INSERT INTO {table} (id, subject, body, metadata, created_at) VALUES ('{{id}}', "
        "'job.psql.full', convert_to('{{\"seq\": {seq}}}', 'UTF8'), '{{\"by\": \"psql\"}}', "
        "(extract(epoch FROM now()) * 1000)::BIGINT)",
        # several events in one transaction
        f"BEGIN; INSERT INTO {table} (id, subject, body) VALUES ('{{id}}', 'job.psql', "
        "convert_to('{{\"seq\": {seq}}}', 'UTF8')); "
        f"INSERT INTO {table} (id, subject, body) VALUES ('{{id2}}', 'job.psql', "
        "convert_to('{{\"seq\": {seq2}}}', 'UTF8')); COMMIT;",
    ]
    for seq, template in enumerate(statements):
        event_id = new_id("event")
        sql = template.format(id=event_id, seq=seq, id2=new_id("event"), seq2=seq + 100)
        await run_psql(dsn, sql)
        written = time.monotonic()
        await wait_until(lambda seq=seq: _handled(db, seq), timeout=POLL * 5, interval=0.01)
        took = time.monotonic() - written
        assert took <= POLL + SLACK, f"{took:.2f}s for an event written by psql"
        row = await db.fetchrow("SELECT event_id, attempt FROM ledger WHERE seq = $1", seq)
        assert tuple(row) == (event_id, 1)
    await wait_until(lambda: _handled(db, 102), timeout=POLL * 5)
    assert await db.fetchval("SELECT count(*) FROM ledger") == 4


async def _handled(db: asyncpg.Connection, seq: int) -> bool:
    return bool(await db.fetchval("SELECT count(*) FROM ledger WHERE seq = $1", seq))
