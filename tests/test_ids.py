"""Ids: lowercase ULIDs that decode to their time, sort by it, and never repeat."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ulid import ULID

from kanthorq.ids import ID_RE, event_id_at, new_id, new_ids


def ms_of(event_id: str) -> int:
    return ULID.from_str(event_id.split("_", 1)[1].upper()).milliseconds


@given(st.integers(min_value=0, max_value=2**48 - 1))
def test_event_id_at_decodes_to_its_millisecond_and_sorts_first(ms: int) -> None:
    cursor = event_id_at(ms)
    assert ID_RE.fullmatch(cursor)
    assert ms_of(cursor) == ms
    if ms < 2**48 - 1:
        assert cursor < event_id_at(ms + 1)


def test_new_ids_are_valid_unique_and_of_now() -> None:
    before = time.time_ns() // 1_000_000
    ids = new_ids("event", 5000) + [new_id("event") for _ in range(500)]
    after = time.time_ns() // 1_000_000
    assert all(ID_RE.fullmatch(i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert all(before <= ms_of(i) <= after for i in ids)
    assert all(event_id_at(ms_of(i)) <= i for i in ids)
    assert new_ids("consumer", 1)[0].startswith("consumer_")
    assert new_ids("event", 0) == []


def test_the_random_part_uses_every_character_evenly() -> None:
    counts = Counter("".join(i[-16:] for i in new_ids("event", 20_000)))
    assert len(counts) == 32
    expected = 20_000 * 16 / 32
    assert all(abs(n - expected) < expected * 0.1 for n in counts.values())


def test_ids_of_a_later_millisecond_sort_after() -> None:
    first = new_id("event")
    time.sleep(0.002)
    assert new_id("event") > first


@pytest.mark.parametrize("ms", [-1, 2**48])
def test_times_outside_48_bits_are_refused(ms: int) -> None:
    with pytest.raises(ValueError, match="48 bits"):
        event_id_at(ms)


def test_ids_of_one_process_sort_in_the_order_they_were_made() -> None:
    made = [new_id("event") for _ in range(3000)]
    for _ in range(20):
        made += new_ids("event", 100)
        made.append(new_id("event"))
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_ids_made_by_threads_at_once_never_repeat() -> None:
    import threading

    made: list[str] = []

    def make() -> None:
        made.extend(new_id("event") for _ in range(3000))
        made.extend(new_ids("event", 500))

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(made)) == len(made) == 4 * 3500
