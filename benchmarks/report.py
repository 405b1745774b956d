"""Medians with min-max, ratios within each round, the targets of issues 3, 11 and 16, and the
output: a Markdown table and a JSON file."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# results[workload][series] = one dict of figures per round it ran in (with "round")
Results = dict[str, dict[str, list[dict[str, Any]]]]

SERIES_ORDER = (
    "kanthorq",
    "kanthorq+keys",
    "kanthorq+metrics",
    "kanthorq-x2",
    "pgqueuer",
    "procrastinate",
    "raw",
)
METRICS: dict[str, tuple[tuple[str, str], ...]] = {
    "W1": (("events_per_s", "events/s"),),
    "W2": (
        ("tasks_per_s", "tasks/s"),
        ("rss_peak_mb", "worker peak RSS MB"),
        ("worker_cpu_pct", "worker CPU %"),
    ),
    "W3": (("p50_ms", "p50 ms"), ("p95_ms", "p95 ms"), ("p99_ms", "p99 ms")),
    "W4": (("tasks_per_s", "tasks/s (all consumers)"), ("rss_peak_mb", "worker peak RSS MB")),
    "W5": (("tx_per_s", "tx/s"),),
    "W6": (
        ("tasks_per_s", "tasks/s"),
        ("rss_start_mb", "worker RSS start MB"),
        ("rss_peak_mb", "worker peak RSS MB"),
        ("rss_end_mb", "worker RSS end MB"),
    ),
    "W7": (("tx_per_s", "tx/s while idle"), ("cpu_pct", "worker CPU % while idle")),
    "W8": (
        ("events_per_s", "events/s"),
        ("server_cpu_us_per_event", "server CPU µs per event"),
        ("client_cpu_us_per_event", "load generator CPU µs per event"),
    ),
}


@dataclass(frozen=True)
class Ratio:
    label: str
    top: tuple[str, str, str]  # workload, series, figure
    bottom: tuple[str, str, str]
    target: str
    at_least: float | None = None  # met when the median ratio >= this
    at_most: float | None = None  # met when the median ratio <= this


RATIOS = (
    Ratio(
        "W1 kanthorq / raw COPY",
        ("W1", "kanthorq", "events_per_s"),
        ("W1", "raw", "events_per_s"),
        "≥ 0.8",
        at_least=0.8,
    ),
    Ratio(
        "W2 kanthorq / pgqueuer",
        ("W2", "kanthorq", "tasks_per_s"),
        ("W2", "pgqueuer", "tasks_per_s"),
        "≥ 3",
        at_least=3.0,
    ),
    Ratio(
        "W2 with metrics / W2 without (kanthorq+metrics / kanthorq, issue 11)",
        ("W2", "kanthorq+metrics", "tasks_per_s"),
        ("W2", "kanthorq", "tasks_per_s"),
        "≥ 0.95",
        at_least=0.95,
    ),
    Ratio(
        "W2 two worker processes / one (kanthorq-x2 / kanthorq: kanthorq run --workers 2)",
        ("W2", "kanthorq-x2", "tasks_per_s"),
        ("W2", "kanthorq", "tasks_per_s"),
        "(stated)",
    ),
    Ratio(
        "W2 kanthorq / raw claim floor",
        ("W2", "kanthorq", "tasks_per_s"),
        ("W2", "raw", "tasks_per_s"),
        "≥ 0.35",
        at_least=0.35,
    ),
    Ratio(
        "W2 kanthorq / procrastinate",
        ("W2", "kanthorq", "tasks_per_s"),
        ("W2", "procrastinate", "tasks_per_s"),
        "(stated)",
    ),
    Ratio(
        "W3 p50 kanthorq / pgqueuer",
        ("W3", "kanthorq", "p50_ms"),
        ("W3", "pgqueuer", "p50_ms"),
        "≤ 0.7",
        at_most=0.7,
    ),
    Ratio(
        "W3 p99 kanthorq / pgqueuer",
        ("W3", "kanthorq", "p99_ms"),
        ("W3", "pgqueuer", "p99_ms"),
        "≤ 1",
        at_most=1.0,
    ),
    Ratio(
        "W4 fan-out / W2 (kanthorq)",
        ("W4", "kanthorq", "tasks_per_s"),
        ("W2", "kanthorq", "tasks_per_s"),
        "≥ 1",
        at_least=1.0,
    ),
    Ratio(
        "W5 kanthorq / raw INSERT",
        ("W5", "kanthorq", "tx_per_s"),
        ("W5", "raw", "tx_per_s"),
        "≥ 0.8",
        at_least=0.8,
    ),
    Ratio(
        "W1 with a key per event / without (kanthorq)",
        ("W1", "kanthorq+keys", "events_per_s"),
        ("W1", "kanthorq", "events_per_s"),
        "(stated: what keys cost)",
    ),
    Ratio(
        "W5 with a key per event / without (kanthorq)",
        ("W5", "kanthorq+keys", "tx_per_s"),
        ("W5", "kanthorq", "tx_per_s"),
        "(stated: what keys cost)",
    ),
    Ratio(
        "W7 tx/s, 200 idle consumers on 1 stream (not a ratio)",
        ("W7", "kanthorq 200 consumers 1 stream", "tx_per_s"),
        ("", "", ""),
        "< 20",
        at_most=20.0,
    ),
    Ratio(
        "W7 tx/s, 200 idle consumers on 200 streams (not a ratio)",
        ("W7", "kanthorq 200 consumers 200 streams", "tx_per_s"),
        ("", "", ""),
        "< 20",
        at_most=20.0,
    ),
    Ratio(
        "W7 worker CPU %, 200 idle consumers on 1 stream (not a ratio)",
        ("W7", "kanthorq 200 consumers 1 stream", "cpu_pct"),
        ("", "", ""),
        "< 3",
        at_most=3.0,
    ),
    Ratio(
        "W7 worker CPU %, 200 idle consumers on 200 streams (not a ratio)",
        ("W7", "kanthorq 200 consumers 200 streams", "cpu_pct"),
        ("", "", ""),
        "< 3",
        at_most=3.0,
    ),
    Ratio(
        "W6 waiting backlog / W2",
        ("W6", "kanthorq waiting", "tasks_per_s"),
        ("W2", "kanthorq", "tasks_per_s"),
        "≥ 0.8",
        at_least=0.8,
    ),
    Ratio(
        "W6 completed backlog / W2",
        ("W6", "kanthorq completed", "tasks_per_s"),
        ("W2", "kanthorq", "tasks_per_s"),
        "≥ 0.8",
        at_least=0.8,
    ),
    Ratio(
        "W8 single events over HTTP / in-process publish() (W5, issue 16)",
        ("W8", "kanthorq single over HTTP", "events_per_s"),
        ("W5", "kanthorq", "tx_per_s"),
        "≥ 0.5",
        at_least=0.5,
    ),
    Ratio(
        "W8 batches over HTTP (W1's, of 500) / in-process publish_many (W1)",
        ("W8", "kanthorq batches over HTTP", "events_per_s"),
        ("W1", "kanthorq", "events_per_s"),
        "(stated)",
    ),
    Ratio(
        "W2 worker peak RSS (MB, not a ratio)",
        ("W2", "kanthorq", "rss_peak_mb"),
        ("", "", ""),
        "< 150",
        at_most=150.0,
    ),
    Ratio(
        "W6 waiting peak RSS / W2 peak RSS",
        ("W6", "kanthorq waiting", "rss_peak_mb"),
        ("W2", "kanthorq", "rss_peak_mb"),
        "flat: ≤ 1.1",
        at_most=1.1,
    ),
    Ratio(
        "W6 completed peak RSS / W2 peak RSS",
        ("W6", "kanthorq completed", "rss_peak_mb"),
        ("W2", "kanthorq", "rss_peak_mb"),
        "flat: ≤ 1.1",
        at_most=1.1,
    ),
)


def _by_round(results: Results, where: tuple[str, str, str]) -> dict[int, float]:
    workload, series, figure = where
    if not workload:
        return {}
    return {
        int(row["round"]): float(row[figure])
        for row in results.get(workload, {}).get(series, [])
        if figure in row
    }


def ratio_values(results: Results, ratio: Ratio) -> list[float]:
    """The ratio in each round where both sides ran (the top alone when it has no bottom)."""
    top = _by_round(results, ratio.top)
    if not ratio.bottom[0]:
        return [top[r] for r in sorted(top)]
    bottom = _by_round(results, ratio.bottom)
    return [top[r] / bottom[r] for r in sorted(top) if bottom.get(r)]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def _fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def cell(values: list[float]) -> str:
    if not values:
        return "-"
    s = summary(values)
    if s["n"] == 1:
        return _fmt(s["median"])
    return f"{_fmt(s['median'])} ({_fmt(s['min'])}-{_fmt(s['max'])})"


def _split(series: str) -> tuple[str, str]:
    """The column of a series, and what its rows add to the figure (W6's variants)."""
    system, _, variant = series.partition(" ")
    return system, variant


def _rows(results: Results, workload: str) -> list[str]:
    """The variants of ``workload`` in the results ("" for the plain systems)."""
    return sorted({_split(series)[1] for series in results.get(workload, {})})


def _cells(results: Results, workload: str, variant: str, figure: str) -> list[str]:
    cells = []
    for system in SERIES_ORDER:
        series = f"{system} {variant}".strip()
        rows = results.get(workload, {}).get(series, [])
        cells.append(cell([float(r[figure]) for r in rows if figure in r]))
    return cells


def results_table(results: Results) -> list[str]:
    lines = [
        "| workload | figure | " + " | ".join(SERIES_ORDER) + " |",
        "| --- | --- |" + " --- |" * len(SERIES_ORDER),
    ]
    for workload, metrics in METRICS.items():
        for variant in _rows(results, workload):
            for figure, label in metrics:
                cells = _cells(results, workload, variant, figure)
                if any(c != "-" for c in cells):
                    name = f"{label} ({variant})" if variant else label
                    lines.append(f"| {workload} | {name} | " + " | ".join(cells) + " |")
    return lines


def verdict(ratio: Ratio, median: float) -> str:
    if ratio.at_least is not None:
        return "met" if median >= ratio.at_least else "**not met**"
    if ratio.at_most is not None:
        return "met" if median <= ratio.at_most else "**not met**"
    return ""


def ratios_table(results: Results) -> tuple[list[str], list[dict[str, Any]]]:
    lines = [
        "| ratio (within each round) | target | median (min-max) | rounds | |",
        "| --- | --- | --- | --- | --- |",
    ]
    rows = []
    for ratio in RATIOS:
        values = ratio_values(results, ratio)
        if not values:
            continue
        s = summary(values)
        met = verdict(ratio, s["median"])
        lines.append(f"| {ratio.label} | {ratio.target} | {cell(values)} | {s['n']} | {met} |")
        rows.append(
            {
                "ratio": ratio.label,
                "target": ratio.target,
                "values": values,
                **s,
                "verdict": met.strip("*"),
            }
        )
    for where, limit in SPREADS:
        line, row = _spread_row(results, where, limit)
        if row:
            lines.append(line)
            rows.append(row)
    return lines, rows


# figures that must be steady across rounds: (workload, series, figure), the largest
# deviation of a round from the median that is allowed (issue 14: W2 within ±10%)
SPREADS = ((("W2", "kanthorq", "tasks_per_s"), 0.10),)


def _spread_row(
    results: Results, where: tuple[str, str, str], limit: float
) -> tuple[str, dict[str, Any]]:
    values = [v for _, v in sorted(_by_round(results, where).items())]
    if len(values) < 2:
        return "", {}
    median = statistics.median(values)
    deviation = max(abs(v - median) for v in values) / median
    met = "met" if deviation <= limit else "**not met**"
    label = f"{where[0]} {where[1]} spread across rounds (largest deviation from the median)"
    target = f"≤ ±{limit:.0%}"
    line = f"| {label} | {target} | ±{deviation:.1%} | {len(values)} | {met} |"
    row = {
        "ratio": label,
        "target": target,
        "values": values,
        "deviation": deviation,
        "n": len(values),
        "verdict": met.strip("*"),
    }
    return line, row


NOTES = {
    "kanthorq-x2": "kanthorq-x2: `kanthorq run --workers 2` (the supervisor and two children). "
    "Its worker CPU % and peak RSS are summed over the three processes, so its CPU % can "
    "exceed 100. Its clock starts when the events are committed, once both children "
    "listen (they were published in one open transaction), instead of at a worker's "
    "READY: see benchmarks/systems/kanthorq_x2.py.",
}


def notes(results: Results) -> list[str]:
    """A line for each series in the results that is measured unlike the others."""
    present = {series for by_series in results.values() for series in by_series}
    return [f"- {text}" for series, text in NOTES.items() if series in present]


def markdown(results: Results, meta: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    head = [
        "# kanthorq benchmarks",
        "",
        f"- when: {meta.get('finished', '?')}; rounds: {meta.get('rounds')}; "
        f"wall time: {meta.get('wall_seconds', 0):.0f} s",
        f"- machine: {meta.get('machine', '?')}; load average (1 min): {meta.get('load', '?')}",
        f"- PostgreSQL: {meta.get('server', '?')}",
        f"- kanthorq: {meta.get('kanthorq', '?')}; peers: {meta.get('peers', '?')}",
        f"- sizes: {meta.get('sizes', '?')}",
        "",
        "## Figures",
        "",
    ]
    ratio_lines, ratio_rows = ratios_table(results)
    extra = notes(results)
    body = [
        *results_table(results),
        "",
        *extra,
        *([""] if extra else []),
        "## Targets (issues 3, 11, 13, 14 and 16)",
        "",
        *ratio_lines,
        "",
    ]
    return "\n".join(head + body), ratio_rows


def write(results: Results, meta: dict[str, Any], out: Path, md_out: Path | None) -> str:
    text, ratio_rows = markdown(results, meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = {"meta": meta, "results": results, "ratios": ratio_rows}
    out.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    if md_out is not None:
        md_out.parent.mkdir(parents=True, exist_ok=True)
        md_out.write_text(text)
    return text
