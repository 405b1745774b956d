"""The benchmark payload: a JSON object of about 100 bytes, the same for every system."""

from __future__ import annotations

import time
from typing import Any

import msgspec

SUBJECT = "bench.order.created"
ENTRYPOINT = "bench"  # pgqueuer's entrypoint and procrastinate's task name


def payload(i: int) -> dict[str, Any]:
    """Event ``i``: about 100 bytes once encoded as JSON."""
    return {
        "order_id": i,
        "customer": f"cust-{i % 100_000:06d}",
        "amount_cents": 1000 + i % 9000,
        "currency": "EUR",
        "note": "bench payload",
    }


def encode(body: dict[str, Any]) -> bytes:
    return msgspec.json.encode(body)


def stamped(i: int) -> dict[str, Any]:
    """A payload that carries its send time (W3), in milliseconds since the epoch."""
    body = payload(i)
    body["sent_ms"] = time.time() * 1000
    return body


def latency_ms(body: dict[str, Any]) -> float:
    """Milliseconds from the send time a W3 payload carries until now."""
    return time.time() * 1000 - float(body["sent_ms"])


def batches(count: int, size: int) -> list[list[dict[str, Any]]]:
    """``count`` payloads in batches of ``size``."""
    return [[payload(i) for i in range(s, min(s + size, count))] for s in range(0, count, size)]
