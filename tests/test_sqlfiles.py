"""The SQL loader: every query file found and used, placeholders rendered with quoted
names, unknown placeholders refused, every migration with an up and a down."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from kanthorq import sqlfiles
from kanthorq.errors import InvalidName
from kanthorq.ids import new_id
from kanthorq.sqlfiles import (
    load,
    migrations,
    quote_ident,
    render,
    stream_names,
    task_names,
)
from kanthorq.store import ConsumerSpec
from tests.conftest import registry

ROOT = Path(__file__).resolve().parent.parent
QUERIES = sorted(p.stem for p in (ROOT / "sql" / "queries").glob("*.sql"))
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
STREAM_ID = "stream_01j5q7zzzzzzzzzzzzzzzzzzzz"
CONSUMER_ID = "consumer_01j5q7zzzzzzzzzzzzzzzzzzzz"


def test_the_loader_reads_the_source_tree() -> None:
    root = sqlfiles._root()
    assert Path(str(root)) == ROOT / "sql"
    assert QUERIES


@pytest.mark.parametrize("name", QUERIES)
def test_every_query_file_loads(name: str) -> None:
    assert load(name) == (ROOT / "sql" / "queries" / f"{name}.sql").read_text(encoding="utf-8")


def test_every_query_file_is_used_and_every_used_name_exists() -> None:
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "kanthorq").rglob("*.py"))
    # load("x"), render("x", ...), and the admin's info.sql("x")
    used = set(re.findall(r"""\b(?:load|render|sql)\(\s*["'](\w+)["']""", source))
    assert used <= set(QUERIES), f"the code names missing query files: {used - set(QUERIES)}"
    assert set(QUERIES) <= used, f"query files nothing uses: {set(QUERIES) - used}"


def test_a_missing_query_file_is_an_error() -> None:
    with pytest.raises(FileNotFoundError):
        load("no_such_query")


KNOWN = set(stream_names(STREAM_ID)) | set(task_names(CONSUMER_ID))


@pytest.mark.parametrize("name", QUERIES)
def test_render_fills_every_placeholder_with_quoted_names(name: str) -> None:
    wanted = set(PLACEHOLDER.findall(load(name)))
    assert wanted <= KNOWN
    sql = render(name, stream_id=STREAM_ID, consumer_id=CONSUMER_ID)
    assert "{{" not in sql
    assert "}}" not in sql
    if "stream" in wanted:
        assert f'"kanthorq_{STREAM_ID}"' in sql
    if "tasks" in wanted:
        assert f'"kanthorq_{CONSUMER_ID}"' in sql
    # every table name that reaches SQL is quoted
    for match in re.finditer(r"kanthorq_(?:stream|consumer)_01j5q7z{20}\w*", sql):
        assert sql[match.start() - 1] == '"', (name, match.group())


def test_render_names() -> None:
    assert stream_names(STREAM_ID) == {
        "stream": f'"kanthorq_{STREAM_ID}"',
        "stream_txid_idx": f'"kanthorq_{STREAM_ID}_txid"',
        "stream_dedup_idx": f'"kanthorq_{STREAM_ID}_dedup"',
    }
    assert task_names(CONSUMER_ID)["tasks"] == f'"kanthorq_{CONSUMER_ID}"'
    # indexes and tables stay within PostgreSQL's 63 bytes (no silent truncation)
    for name in [*stream_names(STREAM_ID).values(), *task_names(CONSUMER_ID).values()]:
        assert len(name.strip('"').encode()) <= 63


def test_render_refuses_a_placeholder_that_was_not_given() -> None:
    with pytest.raises(KeyError, match="tasks"):
        render("claim", stream_id=STREAM_ID)
    with pytest.raises(KeyError, match="stream"):
        render("publish_one")


@pytest.fixture
def fake_query(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    texts = {
        "kq_test_unknown": "SELECT * FROM {{stream}} JOIN {{bogus}} USING (id)",
        "kq_test_plain": "SELECT 1 -- {not a placeholder} {{ spaced }}",
    }
    monkeypatch.setattr(sqlfiles, "load", texts.__getitem__)
    yield
    render.cache_clear()


@pytest.mark.usefixtures("fake_query")
def test_render_refuses_an_unknown_placeholder() -> None:
    with pytest.raises(KeyError, match="bogus"):
        render("kq_test_unknown", stream_id=STREAM_ID, consumer_id=CONSUMER_ID)
    assert render("kq_test_plain") == "SELECT 1 -- {not a placeholder} {{ spaced }}"


@pytest.mark.parametrize(
    "bad",
    [
        'stream_01j5q7zzzzzzzzzzzzzzzzzzzz"; DROP TABLE x; --',
        "stream_x",
        "orders",
        "event_01j5q7zzzzzzzzzzzzzzzzzzzz\n",
        "STREAM_01J5Q7ZZZZZZZZZZZZZZZZZZZZ",
        "stream_01j5q7zzzzzzzzzzzzzzzzzzzu",  # u is not Crockford base32
    ],
)
def test_render_refuses_ids_that_are_not_ids(bad: str) -> None:
    with pytest.raises(InvalidName):
        render("publish_one", stream_id=bad)
    with pytest.raises(InvalidName):
        render("complete", consumer_id=bad.replace("stream", "consumer"))


def test_quote_ident() -> None:
    assert quote_ident("plain") == '"plain"'
    assert quote_ident('we"ird') == '"we""ird"'
    assert quote_ident("a" * 63) == '"' + "a" * 63 + '"'
    with pytest.raises(ValueError, match="63"):
        quote_ident("a" * 64)
    with pytest.raises(ValueError, match="63"):
        quote_ident("é" * 32)  # 64 bytes


def test_every_migration_has_up_and_down() -> None:
    found = migrations()
    assert found
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    for migration in found:
        assert migration.up.strip()
        assert migration.down.strip()
        assert re.fullmatch(r"\w+", migration.name)
    files = sorted(p.name for p in (ROOT / "sql" / "migrations").iterdir())
    expected = sorted(
        f"{m.version:04d}_{m.name}.{kind}.sql" for m in found for kind in ("up", "down")
    )
    assert files == expected


@pytest.fixture
def broken_migrations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "migrations").mkdir()
    monkeypatch.setattr(sqlfiles, "_root", lambda: tmp_path)
    migrations.cache_clear()
    yield tmp_path / "migrations"
    migrations.cache_clear()


def test_a_migration_without_its_down_is_refused(broken_migrations: Path) -> None:
    (broken_migrations / "0001_first.up.sql").write_text("SELECT 1")
    (broken_migrations / "0001_first.down.sql").write_text("SELECT 1")
    (broken_migrations / "0002_second.up.sql").write_text("SELECT 2")
    (broken_migrations / "README.md").write_text("not a migration")
    with pytest.raises(RuntimeError, match="0002_second lacks its up or down"):
        migrations()


def test_migrations_are_ordered_by_version(broken_migrations: Path) -> None:
    for version, name in [(10, "ten"), (2, "two"), (1, "one")]:
        for kind in ("up", "down"):
            (broken_migrations / f"{version:04d}_{name}.{kind}.sql").write_text(f"-- {kind}")
    assert [(m.version, m.name) for m in migrations()] == [(1, "one"), (2, "two"), (10, "ten")]
    assert migrations()[0].down == "-- down"


async def test_every_rendered_query_is_valid_sql(dsn: str, db: asyncpg.Connection) -> None:
    """Prepare each statement against real tables, so a typo in any file fails here."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    assert pool is not None
    try:
        reg = registry(pool, dsn)
        queries = await reg.consumer(
            ConsumerSpec(
                name="checker",
                stream="checked",
                includes=("a.>",),
                excludes=("a.b",),
                attempt_max=2,
                visibility_timeout_ms=1000,
            )
        )
    finally:
        await pool.close()
    ids = {"stream_id": queries.stream_id, "consumer_id": queries.consumer_id}
    for name in QUERIES:
        wanted = set(PLACEHOLDER.findall(load(name)))
        given = {
            key: value
            for key, value in ids.items()
            if (key == "stream_id" and wanted & set(stream_names(value)))
            or (key == "consumer_id" and wanted & set(task_names(value)))
        }
        sql = render(name, **given)
        if name in ("stream_table", "task_table"):
            await db.execute(sql)  # several statements, each idempotent
        else:
            await db.prepare(sql)
    # rendering for a new id is also fine before the tables exist
    assert '"kanthorq_' in render("publish_one", stream_id=new_id("stream"))
