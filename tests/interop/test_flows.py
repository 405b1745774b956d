"""Events between KanthorQ for Go (plain SQL: tests/interop/gosql.py) and kanthorq, both ways,
and a consumer that moves from one to the other. Every event reaches every consumer once;
the rows are checked value by value, not only counted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta

import asyncpg

import kanthorq
from kanthorq.cli import main
from tests.conftest import Running, task_table, wait_until
from tests.interop import gosql

AppFactory = Callable[..., kanthorq.App]
Starter = Callable[..., Awaitable[Running]]


def recorder(seen: list[kanthorq.Message]) -> Callable[[kanthorq.Message], Awaitable[None]]:
    async def handle(msg: kanthorq.Message) -> None:
        seen.append(msg)

    return handle


async def test_go_publishes_and_a_kanthorq_consumer_handles_every_event_once(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    stream = await gosql.register_stream(db, "orders")
    app = make_app()
    seen: list[kanthorq.Message] = []
    app.subscribe("order.*", consumer="py_mailer", stream="orders")(recorder(seen))
    await start_app(app)
    sent = {}
    for n in range(200):
        subject = "order.created" if n % 2 else "order.cancelled"
        event_id = await gosql.publish(db, stream, subject, b'{"n": %d}' % n, {"n": n})
        sent[event_id] = (subject, n)
    await gosql.publish(db, stream, "user.created", b"{}")  # not this consumer's
    await wait_until(lambda: len(seen) >= 200, timeout=30)
    await asyncio.sleep(0.2)
    assert sorted(m.event.id for m in seen) == sorted(sent)  # each once
    for msg in seen:
        subject, n = sent[msg.event.id]
        assert (msg.event.subject, msg.json(), msg.event.metadata) == (subject, {"n": n}, {"n": n})
    table = await task_table(db, "py_mailer")
    await wait_until(
        lambda: db.fetchval(f"SELECT count(*) = 200 FROM {table} WHERE state = 101"), timeout=10
    )
    rows = await db.fetch(f"SELECT * FROM {table}")
    assert {r["event_id"] for r in rows} == set(sent)
    for row in rows:
        assert row["subject"] == sent[row["event_id"]][0]
        assert (row["attempt_count"], row["deadline_at"]) == (1, 0)
        assert row["finalized_at"] >= row["attempted_at"] > 0


async def test_a_go_consumer_sees_the_first_event_of_a_stream_that_kanthorq_created(
    make_app: AppFactory, db: asyncpg.Connection
) -> None:
    """Its cursor starts at the stream's created_at; every event id sorts after it."""
    async with make_app() as app:
        firsts = {}
        for n in range(20):  # each a new stream, its first event published at once
            firsts[f"s{n}"] = await app.publish("order.created", {"n": n}, stream=f"s{n}")
    for name, event_id in firsts.items():
        row = await db.fetchrow(
            "SELECT id, name, created_at FROM kanthorq_stream_registry WHERE name = $1", name
        )
        stream = gosql.GoStream(row["id"], row["name"], row["created_at"])
        consumer = await gosql.GoConsumer.register(db, stream, f"go_{name}", ("order.>",))
        assert await consumer.run_all() == [event_id], name


async def test_kanthorq_publishes_and_a_go_consumer_gets_every_event_once(
    make_app: AppFactory, db: asyncpg.Connection
) -> None:
    async with make_app() as app:
        ids = await app.publish_many(
            [("order.created", {"n": n}, {"n": n}) for n in range(150)], stream="orders"
        )
        ids += [
            await app.publish("order.paid", {"n": n}, stream="orders", metadata={"n": n})
            for n in range(150, 200)
        ]
        delayed = await app.publish("order.paid", {"n": 200}, stream="orders", delay=3600)
    row = await db.fetchrow(
        "SELECT id, name, created_at FROM kanthorq_stream_registry WHERE name = 'orders'"
    )
    stream = gosql.GoStream(row["id"], row["name"], row["created_at"])
    consumer = await gosql.GoConsumer.register(db, stream, "go_mailer", ("order.*",))
    done = await consumer.run_all()
    # Go ignores kanthorq.schedule_at: the delayed event runs at once there
    assert sorted(done) == sorted([*ids, delayed])
    tasks = {r["event_id"]: r for r in await db.fetch(f"SELECT * FROM {consumer.table}")}
    events = {r["id"]: r for r in await db.fetch(f"SELECT * FROM {stream.table}")}
    for event_id, task in tasks.items():
        event = events[event_id]
        assert task["subject"] == event["subject"]
        assert json.loads(task["metadata"]) == json.loads(event["metadata"])  # copied by Go
        assert (task["state"], task["attempt_count"]) == (101, 1)
        assert event["created_at"] > stream.created_at
    assert json.loads(tasks[delayed]["metadata"])["kanthorq.schedule_at"] > 0


async def test_both_publishers_and_both_consumers_on_one_stream(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection, dsn: str
) -> None:
    stream = await gosql.register_stream(db, "orders")
    go = await gosql.GoConsumer.register(db, stream, "go_audit", (">",))
    app = make_app()
    seen: list[kanthorq.Message] = []
    app.subscribe(">", consumer="py_audit", stream="orders")(recorder(seen))
    await start_app(app)
    go_conn = await asyncpg.connect(dsn)
    try:

        async def go_publisher() -> list[str]:
            return [await gosql.publish(go_conn, stream, "go.sent", b"go") for _ in range(150)]

        async def py_publisher() -> list[str]:
            ids = []
            for n in range(0, 150, 10):
                if n % 20:
                    ids += await app.publish_many([("py.sent", b"py")] * 10, stream="orders")
                else:
                    ids += [await app.publish("py.sent", b"py", stream="orders") for _ in range(10)]
            return ids

        go_ids, py_ids = await asyncio.gather(go_publisher(), py_publisher())
    finally:
        await go_conn.close()
    everything = {*go_ids, *py_ids}
    assert len(everything) == 300
    await wait_until(lambda: len(seen) >= 300, timeout=30)
    await asyncio.sleep(0.2)
    assert sorted(m.event.id for m in seen) == sorted(everything)
    # Go's consumer runs once the publishers are done: it skips events whose transactions
    # commit out of id order, which kanthorq's conversion never does (README)
    assert sorted(await go.run_all()) == sorted(everything)
    bodies = {m.event.id: (m.event.subject, m.event.body) for m in seen}
    assert {bodies[i] for i in go_ids} == {("go.sent", b"go")}
    assert {bodies[i] for i in py_ids} == {("py.sent", b"py")}


async def test_a_kanthorq_worker_takes_over_a_go_consumer_where_it_stopped(
    make_app: AppFactory, start_app: Starter, db: asyncpg.Connection
) -> None:
    stream = await gosql.register_stream(db, "orders")
    go = await gosql.GoConsumer.register(db, stream, "mailer", ("order.>",))
    history = [await gosql.publish(db, stream, "order.created", b"old") for _ in range(100)]
    assert sorted(await go.run_all()) == sorted(history)
    # Go's completed tasks are pruned: the history must not come back from its events
    await db.execute(f"DELETE FROM {go.table}")
    waiting = [await gosql.publish(db, stream, "order.created", b"new") for _ in range(30)]

    app = make_app()
    seen: list[kanthorq.Message] = []
    app.subscribe("order.>", consumer="mailer", stream="orders")(recorder(seen))
    await start_app(app)
    later = [await app.publish("order.created", b"later", stream="orders") for _ in range(20)]
    later += [await gosql.publish(db, stream, "order.created", b"later") for _ in range(20)]
    await wait_until(lambda: len(seen) >= 70, timeout=30)
    await asyncio.sleep(0.5)
    assert sorted(m.event.id for m in seen) == sorted([*waiting, *later])
    row = await db.fetchrow(
        "SELECT cursor, txid_cursor = cursor AS coherent, skip_id FROM kanthorq_consumer_registry "
        "WHERE name = 'mailer'"
    )
    assert row["coherent"]
    assert row["skip_id"] == max(history)  # where Go stopped
    assert await db.fetchval(f"SELECT count(*) FROM {go.table}") == 70  # no history


async def test_show_prune_and_replay_read_a_go_consumer_by_its_cursor(
    make_app: AppFactory, db: asyncpg.Connection
) -> None:
    stream = await gosql.register_stream(db, "orders")
    go = await gosql.GoConsumer.register(db, stream, "go_mailer", ("order.>",))
    ids = [await gosql.publish(db, stream, "order.created", b"x") for _ in range(200)]
    await go.run_all()
    async with make_app() as app:
        [consumer] = (await app.admin.show()).consumers
        assert (consumer.name, consumer.behind, consumer.lag) == ("go_mailer", 0, 0)
        assert consumer.tasks["completed"] == 200
        more = [await gosql.publish(db, stream, "order.created", b"y") for _ in range(5)]
        [consumer] = (await app.admin.show()).consumers
        assert (consumer.behind, consumer.lag) == (5, 5)

        replayed = await app.admin.replay("go_mailer", event_id=ids[150])
        assert replayed.updated == 1
        cursor = await db.fetchval(
            "SELECT cursor FROM kanthorq_consumer_registry WHERE name = 'go_mailer'"
        )
        assert cursor == ids[149]  # Go reads id > cursor: from ids[150] on
        forward = await app.admin.replay("go_mailer", event_id=more[2])
        assert forward.skipped == {"cursor already at or before that point": 1}
        # Go converts the replayed events again (their tasks exist: none is added) and the rest
        assert sorted(await go.run_all()) == sorted(more)
        assert await db.fetchval(f"SELECT count(*) FROM {go.table}") == 205

        [consumer] = (await app.admin.show()).consumers
        assert (consumer.behind, consumer.lag) == (0, 0)
        newest = await gosql.publish(db, stream, "order.created", b"z")
        deleted = await app.admin.delete_events("orders", before=timedelta(0))
        assert (deleted.updated, deleted.skipped) == (
            205,
            {"not converted by every consumer yet": 1},
        )
        assert await db.fetchval(f"SELECT array_agg(id) FROM {stream.table}") == [newest]


async def test_go_error_records_show_their_stack_as_a_traceback(
    dsn: str, db: asyncpg.Connection, capsys: object
) -> None:
    stream = await gosql.register_stream(db, "orders")
    go = await gosql.GoConsumer.register(db, stream, "go_mailer", ("order.>",))
    event_id = await gosql.publish(db, stream, "order.created", b"x")
    await go.convert_all()
    [claimed] = await go.pull()
    stack = "goroutine 7 [running]:\nmain.handle(...)\n\t/app/main.go:42 +0x1d"
    await go.fail(claimed, "smtp: connection refused", stack)

    code = await asyncio.to_thread(
        main, ["tasks", "show", "--consumer", "go_mailer", event_id, "--dsn", dsn]
    )
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert code == 0
    assert "attempt not numbered (a KanthorQ for Go record)" in out
    assert "smtp: connection refused" in out
    assert "      goroutine 7 [running]:\n      main.handle(...)" in out
    assert '"stack"' not in out
    code = await asyncio.to_thread(
        main, ["tasks", "show", "--consumer", "go_mailer", event_id, "--dsn", dsn, "--json"]
    )
    [record] = json.loads(capsys.readouterr().out)["errors"]  # type: ignore[attr-defined]
    assert record["traceback"] == stack
    assert (record["attempt"], record["client"]) == (None, "go")
