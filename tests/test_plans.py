"""Plan guards: the hot statements never scan a whole task or stream table.

The tables are filled and analysed first, so the planner chooses as it would in production
(on empty tables a sequential scan is always cheapest). Plans are generic, as they become
for the prepared statements the workers run again and again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

import kanthorq
from kanthorq.sqlfiles import render
from kanthorq.store import ConsumerSpec
from tests.conftest import registry

EVENTS = 30_000


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


@pytest.fixture
async def seeded(make_app: Any, db: asyncpg.Connection) -> tuple[str, str]:
    async with make_app() as app:
        assert isinstance(app, kanthorq.App)
        spec = ConsumerSpec("c", "default", ("order.>",), ("order.internal",), 4, 300_000)
        queries = await registry(app.pool, app.dsn).consumer(spec)
        for _ in range(0, EVENTS, 5000):
            await app.publish_many([("order.created", b"{}")] * 5000)
        # half the events become tasks, in every state; the rest wait to be converted
        await queries.convert(app.pool, EVENTS // 2)
        table = f'"kanthorq_{queries.consumer_id}"'
        await db.execute(
            f"UPDATE {table} SET state = (ARRAY[101, 101, 101, 1, 2, 102, -102])"
            "[1 + abs(hashtext(event_id)) % 7]"
        )
        await db.execute(f'ANALYZE {table}; ANALYZE "kanthorq_{queries.stream_id}"')
        return queries.stream_id, queries.consumer_id


STATEMENTS = {
    "convert": ("c", 1000, 20, 300_000),
    "claim": (20, 300_000, 0, 0, 0, "c", "TABLE"),
    "claim limited": (20, 300_000, 5, 100, 1000, "c", "TABLE"),
    "next_due": (),
    "rescue": (4, "c"),
    "complete": (["event_x"], [1]),
}


@pytest.mark.parametrize("name", sorted(STATEMENTS))
async def test_no_sequential_scan_of_a_task_or_stream_table(
    db: asyncpg.Connection, seeded: tuple[str, str], name: str
) -> None:
    stream_id, consumer_id = seeded
    tables = {f"kanthorq_{stream_id}", f"kanthorq_{consumer_id}"}
    sql = render(name.split()[0], stream_id=stream_id, consumer_id=consumer_id)
    await db.execute("SET plan_cache_mode = force_generic_plan")
    statement = await db.prepare(f"EXPLAIN (FORMAT JSON) {sql}")
    args = [f'"kanthorq_{consumer_id}"' if a == "TABLE" else a for a in STATEMENTS[name]]
    raw = await statement.fetchval(*args)
    plan = json.loads(raw)[0]["Plan"]
    scans = [
        n["Relation Name"]
        for n in nodes(plan)
        if n["Node Type"] == "Seq Scan" and n.get("Relation Name") in tables
    ]
    assert scans == [], f"{name}: sequential scan of {scans}:\n{json.dumps(plan, indent=1)}"
