"""The benchmark runner, on small sizes: kanthorq (with and without its metrics, and under
``kanthorq run --workers 2``) and the raw floor, W1 and W2, one round.

It needs no benchmark extra: the peers are imported only when selected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import cli


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_quick_round_reports_positive_figures(server_dsn: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = cli.parser().parse_args(
        [
            "--quick",
            "--rounds=1",
            "--only=W1,W2",
            "--systems=kanthorq,kanthorq+metrics,raw",
            f"--dsn={server_dsn}",
            f"--out={out}",
        ]
    )
    assert await cli.run(args) == 0
    report = json.loads(out.read_text())
    results = report["results"]
    for system in ("kanthorq", "raw"):
        (w1,) = results["W1"][system]
        assert w1["events_per_s"] > 0
        (w2,) = results["W2"][system]
        assert w2["tasks_per_s"] > 0
        assert w2["tasks"] == 2_000
    (w2,) = results["W2"]["kanthorq+metrics"]
    assert w2["tasks"] == 2_000
    assert "W1" not in results or "kanthorq+metrics" not in results["W1"]
    [ratio] = [r for r in report["ratios"] if "kanthorq+metrics" in r["ratio"]]
    assert ratio["median"] > 0
    assert report["meta"]["failures"] == []
    assert out.with_suffix(".md").read_text().startswith("# kanthorq benchmarks")


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_w2_with_two_worker_processes(server_dsn: str, tmp_path: Path) -> None:
    """kanthorq-x2: W2 drained by ``kanthorq run --workers 2``, beside one process. Its
    figures of CPU and of the processes come from psutil (the bench extra)."""
    pytest.importorskip("psutil")
    out = tmp_path / "bench.json"
    args = cli.parser().parse_args(
        [
            "--quick",
            "--rounds=1",
            "--only=W2",
            "--systems=kanthorq,kanthorq-x2",
            "--events=1000",
            f"--dsn={server_dsn}",
            f"--out={out}",
        ]
    )
    assert await cli.run(args) == 0
    report = json.loads(out.read_text())
    assert report["meta"]["failures"] == []
    (w2,) = report["results"]["W2"]["kanthorq-x2"]
    assert w2["tasks"] == 1_000  # a result only once the database shows them all completed
    assert w2["workers"] == 2
    assert w2["tasks_per_s"] > 0
    assert w2["worker_cpu_pct"] > 0
    [ratio] = [r for r in report["ratios"] if "kanthorq-x2 / kanthorq" in r["ratio"]]
    assert ratio["median"] > 0
    assert "kanthorq-x2" in out.with_suffix(".md").read_text()


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_w8_publishes_over_http_beside_w5(server_dsn: str, tmp_path: Path) -> None:
    """W8: ``kanthorq serve`` in a process of its own, single events and batches over HTTP,
    and its ratio to W5 of the same round."""
    out = tmp_path / "bench.json"
    args = cli.parser().parse_args(
        [
            "--quick",
            "--rounds=1",
            "--only=W5,W8",
            "--systems=kanthorq",
            "--publish-seconds=1",
            f"--dsn={server_dsn}",
            f"--out={out}",
        ]
    )
    assert await cli.run(args) == 0
    report = json.loads(out.read_text())
    assert report["meta"]["failures"] == []
    results = report["results"]["W8"]
    (single,) = results["kanthorq single over HTTP"]
    (batch,) = results["kanthorq batches over HTTP"]
    assert single["events_per_s"] > 0
    assert batch["events"] == 2_000
    [ratio] = [r for r in report["ratios"] if r["ratio"].startswith("W8 single")]
    assert ratio["median"] > 0
    assert "single over HTTP" in out.with_suffix(".md").read_text()
