"""Rounds: every selected workload, its systems in turn, the order rotated each round."""

from __future__ import annotations

import logging
import os
import time
import traceback
from typing import Any

from benchmarks import backlog, http_publish, idle, systems
from benchmarks.config import Config
from benchmarks.report import Results
from benchmarks.workloads import WORKLOADS

logger = logging.getLogger("benchmarks")


def rotated(items: list[str], by: int) -> list[str]:
    if not items:
        return items
    k = by % len(items)
    return items[k:] + items[:k]


def series_of(workload: str, cfg: Config) -> list[str]:
    """What runs in ``workload``: systems, or the backlog variants of W6."""
    if workload == "W6":
        return list(backlog.VARIANTS) if "kanthorq" in cfg.systems else []
    if workload == "W7":
        return list(idle.VARIANTS) if "kanthorq" in cfg.systems else []
    if workload == "W8":
        return list(http_publish.VARIANTS) if "kanthorq" in cfg.systems else []
    return [name for name in cfg.systems if workload in systems.load(name).workloads]


async def measure(workload: str, series: str, cfg: Config) -> dict[str, Any]:
    if workload == "W6":
        return await backlog.w6_backlog(series, cfg)
    if workload == "W7":
        return await idle.w7_idle(series, cfg)
    if workload == "W8":
        return await http_publish.w8_http(series, cfg)
    return await WORKLOADS[workload](systems.load(series), cfg)


def _label(workload: str, series: str) -> str:
    return f"kanthorq {series}" if workload in ("W6", "W7", "W8") else series


def _brief(result: dict[str, Any]) -> str:
    keys = ("events_per_s", "tasks_per_s", "tx_per_s", "p50_ms", "p99_ms", "rss_peak_mb")
    return ", ".join(f"{k}={result[k]:.1f}" for k in keys if k in result)


async def one_round(cfg: Config, index: int, results: Results, failures: list[str]) -> None:
    for workload in cfg.only:
        if workload == "W6" and index >= cfg.backlog_rounds:
            continue
        for series in rotated(series_of(workload, cfg), index):
            label = _label(workload, series)
            started = time.perf_counter()
            load = os.getloadavg()[0]  # how busy the machine was (other users too)
            try:
                result = await measure(workload, series, cfg)
            except Exception as exc:  # one failed measurement must not lose the others
                failures.append(f"round {index + 1} {workload} {label}: {exc!r}")
                logger.error("%s %s failed:\n%s", workload, label, traceback.format_exc())
                continue
            result["round"] = index
            result["load_1m_before"] = load
            results.setdefault(workload, {}).setdefault(label, []).append(result)
            logger.info(
                "round %d %s %-22s %s (%.0fs)",
                index + 1,
                workload,
                label,
                _brief(result),
                time.perf_counter() - started,
            )


async def run_rounds(cfg: Config) -> tuple[Results, list[str]]:
    results: Results = {}
    failures: list[str] = []
    for index in range(cfg.rounds):
        await one_round(cfg, index, results, failures)
    return results, failures
