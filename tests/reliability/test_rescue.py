"""Item 4: one rescue pass over tasks on both sides of the visibility timeout."""

from __future__ import annotations

import json
from dataclasses import dataclass

import asyncpg

import kanthorq
from kanthorq.ids import new_id
from kanthorq.store import ConsumerQueries, ConsumerSpec
from tests.conftest import registry, task_table

MARGIN = 1500  # ms on either side of the timeout, for the time the test itself takes


@dataclass(frozen=True)
class Case:
    name: str
    state: int
    attempt: int
    age_ms: int  # how long ago attempted_at was, relative to the timeout when negative
    expect: str  # "same", "retryable" or "discarded"


def cases(vt_ms: int, attempt_max: int) -> list[Case]:
    inside, outside = vt_ms - MARGIN, vt_ms + MARGIN
    old = 10 * vt_ms
    return [
        Case("running just inside", 2, 1, inside, "same"),
        Case("running just outside", 2, 1, outside, "retryable"),
        Case("running long outside", 2, 1, old, "retryable"),
        Case("running outside, one attempt left", 2, attempt_max - 1, outside, "retryable"),
        Case("running outside, attempts used up", 2, attempt_max, outside, "discarded"),
        Case("running inside, attempts used up", 2, attempt_max, inside, "same"),
        Case("cancelled long ago", -101, 1, old, "same"),
        Case("completed long ago", 101, 1, old, "same"),
        Case("discarded long ago", -102, attempt_max, old, "same"),
        Case("retryable long ago", 102, 1, old, "same"),
        Case("available", 1, 0, old, "same"),
        Case("pending", 0, 0, old, "same"),
    ]


async def register(
    pool: asyncpg.Pool, dsn: str, name: str, vt_ms: int, attempt_max: int
) -> ConsumerQueries:
    spec = ConsumerSpec(
        name=name,
        stream="default",
        includes=("job.>",),
        excludes=(),
        attempt_max=attempt_max,
        visibility_timeout_ms=vt_ms,
    )
    return await registry(pool, dsn).consumer(spec)


async def arrange(db: asyncpg.Connection, consumer: str, table_cases: list[Case]) -> dict[str, str]:
    """Insert one task per case; returns case name -> event id."""
    table = await task_table(db, consumer)
    now = await db.fetchval("SELECT kanthorq_now_ms()")
    ids: dict[str, str] = {}
    for case in table_cases:
        event_id = new_id("event")
        ids[case.name] = event_id
        finalized = now - case.age_ms if case.state in (-102, -101, 101) else 0
        await db.execute(
            f"INSERT INTO {table} (event_id, subject, state, schedule_at, finalized_at, "
            "attempt_count, attempted_at, created_at, updated_at) "
            "VALUES ($1, 'job.run', $2, $3, $4, $5, $6, $3, $3)",
            event_id,
            case.state,
            now - case.age_ms - 1000,
            finalized,
            case.attempt,
            now - case.age_ms,
        )
    return ids


async def check(
    db: asyncpg.Connection,
    consumer: str,
    table_cases: list[Case],
    ids: dict[str, str],
    before: dict[str, asyncpg.Record],
    passed_at: int,
) -> list[str]:
    """Every row as expected; returns the mismatches."""
    table = await task_table(db, consumer)
    wrong: list[str] = []
    for case in table_cases:
        row = await db.fetchrow(f"SELECT * FROM {table} WHERE event_id = $1", ids[case.name])
        old = before[case.name]
        if case.expect == "same":
            if dict(row) != dict(old):
                wrong.append(f"{consumer}/{case.name}: changed {dict(old)} -> {dict(row)}")
            continue
        state = 102 if case.expect == "retryable" else -102
        errors = [json.loads(e) for e in row["attempted_error"]]
        checks = {
            "state": row["state"] == state,
            "attempt kept": row["attempt_count"] == case.attempt,
            "schedule_at now": old["schedule_at"] < row["schedule_at"] <= passed_at,
            "finalized": (row["finalized_at"] > 0) == (state == -102),
            "error recorded": len(errors) == 1 and "visibility timeout" in errors[0]["error"],
            "error attempt": errors[-1].get("attempt") == case.attempt if errors else False,
        }
        failed = [k for k, ok in checks.items() if not ok]
        if failed:
            wrong.append(f"{consumer}/{case.name}: {failed} in {dict(row)}")
    return wrong


async def test_one_rescue_pass_moves_exactly_the_expired_tasks(
    dsn: str, db: asyncpg.Connection
) -> None:
    app = kanthorq.App(dsn)
    async with app:
        consumers = {
            "short": (10_000, 3, await register(app.pool, dsn, "short", 10_000, 3)),
            # its own, longer timeout: a 30 s old claim is still inside it
            "long": (60_000, 5, await register(app.pool, dsn, "long", 60_000, 5)),
        }
        tables: dict[str, list[Case]] = {}
        for name, (vt_ms, attempt_max, _) in consumers.items():
            tables[name] = cases(vt_ms, attempt_max)
        tables["long"].append(Case("running 30 s, inside its own timeout", 2, 1, 30_000, "same"))
        tables["short"].append(
            Case("running 30 s, outside the short timeout", 2, 1, 30_000, "retryable")
        )

        ids, before = {}, {}
        for name in consumers:
            ids[name] = await arrange(db, name, tables[name])
            table = await task_table(db, name)
            before[name] = {
                case: await db.fetchrow(f"SELECT * FROM {table} WHERE event_id = $1", event_id)
                for case, event_id in ids[name].items()
            }

        results = {}
        for name, (_, attempt_max, queries) in consumers.items():
            results[name] = await queries.rescue(app.pool, attempt_max)
        passed_at = await db.fetchval("SELECT kanthorq_now_ms()")

    wrong: list[str] = []
    for name in consumers:
        wrong += await check(db, name, tables[name], ids[name], before[name], passed_at)
    assert not wrong, "\n".join(wrong)

    for name in consumers:
        retried, discarded = results[name]
        expected = tables[name]
        assert retried == sum(c.expect == "retryable" for c in expected)
        assert sorted(discarded) == sorted(
            ids[name][c.name] for c in expected if c.expect == "discarded"
        )
