"""``python -m benchmarks.soak_memory DIR``: the soak's memory series, summed up and plotted.

DIR is the soak's KANTHORQ_SOAK_OUT (``rss.csv``, and ``tracemalloc/`` when it traced). It
prints RSS at the start (after the warm-up) and at the end, least-squares slopes over the
last hour, and the allocation sites that grew most between two tracemalloc snapshots
(the first after the warm-up and the last, by traceback); with ``--csv``/``--png`` it copies
the series and plots it (matplotlib: ``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import tracemalloc
from pathlib import Path

WARM_UP = 60.0  # seconds: the soak's warm-up
HOUR = 3600.0
# allocations of the measuring itself (anywhere in their traceback), not of the worker
IGNORED = ["*/tracemalloc.py", "*rel_memwatch.py", "<frozen importlib._bootstrap*>", "<unknown>"]


def load(path: Path) -> dict[str, list[float]]:
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    columns: dict[str, list[float]] = {name: [] for name in rows[0]}
    for row in rows:
        if not all(row[name] for name in ("seconds", "rss_kb", "traced")):
            continue  # before the witness's first record
        for name, value in row.items():
            columns[name].append(float(value) if value else float("nan"))
    return columns


def slope_per_hour(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var * HOUR


def summary(series: dict[str, list[float]]) -> list[str]:
    t = series["seconds"]
    start = next(i for i, s in enumerate(t) if s >= WARM_UP)
    last_hour = [i for i, s in enumerate(t) if s >= t[-1] - HOUR]
    lines = [
        f"samples: {len(t)} over {t[-1] / 60:.0f} min; start = first sample after {WARM_UP:.0f} s"
    ]
    for name, unit, scale in [
        ("rss_kb", "MiB", 1 / 1024),
        ("control_rss_kb", "MiB", 1 / 1024),
        ("traced", "MiB", 1 / 2**20),
        ("tracemalloc_overhead", "MiB", 1 / 2**20),
        ("malloc_inuse", "MiB", 1 / 2**20),
        ("malloc_free", "MiB", 1 / 2**20),
    ]:
        ys = series[name]
        slope = slope_per_hour([t[i] for i in last_hour], [ys[i] for i in last_hour])
        lines.append(
            f"{name:22} start {ys[start] * scale:7.2f} {unit}  end {ys[-1] * scale:7.2f} {unit}"
            f"  max {max(ys[start:]) * scale:7.2f}  last hour {slope * scale:+.3f} {unit}/h"
        )
    return lines


def site(traceback: tracemalloc.Traceback) -> list[str]:
    """The allocating frame and its two callers, and the innermost frame in kanthorq."""
    frames = list(traceback)  # oldest first
    lines = [f"      {frame}" for frame in reversed(frames[-3:])]
    ours = [frame for frame in frames if "/kanthorq/" in frame.filename]
    if ours and ours[-1] not in frames[-3:]:
        lines.append(f"      ... from {ours[-1]}")
    return lines


def growth(folder: Path, top: int, first: int) -> list[str]:
    paths = sorted(folder.glob("snapshot-*.tracemalloc"))[first:]
    if len(paths) < 2:
        return ["fewer than two tracemalloc snapshots"]
    filters = [tracemalloc.Filter(False, pattern, all_frames=True) for pattern in IGNORED]
    first, last = (
        tracemalloc.Snapshot.load(str(p)).filter_traces(filters) for p in paths[:: len(paths) - 1]
    )
    lines = [f"top growth by traceback, {paths[0].name} -> {paths[-1].name}:"]
    for stat in last.compare_to(first, "traceback")[:top]:
        lines.append(f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks")
        lines += site(stat.traceback)
    counts = [json.loads(p.with_suffix(".json").read_text()) for p in (paths[0], paths[-1])]
    grown = {k: counts[1]["types"].get(k, 0) - v for k, v in counts[0]["types"].items()}
    lines.append(f"objects: {counts[0]['objects']} -> {counts[1]['objects']}")
    lines.append(
        "  "
        + ", ".join(f"{k} {v:+d}" for k, v in sorted(grown.items(), key=lambda kv: -abs(kv[1]))[:8])
    )
    return lines


def plot(series: dict[str, list[float]], path: Path, marks: list[str]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("plotting needs matplotlib: pip install -e '.[bench]'") from None
    minutes = [s / 60 for s in series["seconds"]]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    top.plot(minutes, [v / 1024 for v in series["rss_kb"]], label="watched worker (traces)")
    top.plot(
        minutes, [v / 1024 for v in series["control_rss_kb"]], label="control worker (no tracing)"
    )
    top.set_ylabel("RSS (MiB)")
    top.set_ylim(bottom=0)
    top.legend(loc="lower center")
    top.set_title("kanthorq soak: worker memory under steady load and a SIGKILL every 60 s")
    for name, label in [
        ("traced", "traced by tracemalloc (Python objects)"),
        ("tracemalloc_overhead", "tracemalloc's own bookkeeping"),
        ("malloc_inuse", "glibc malloc: in use"),
        ("malloc_free", "glibc malloc: free, kept in arenas"),
    ]:
        bottom.plot(minutes, [v / 2**20 for v in series[name]], label=label)
    bottom.set_ylabel("watched worker (MiB)")
    bottom.set_xlabel("minutes")
    bottom.set_ylim(bottom=0)
    bottom.legend(loc="upper left", fontsize="small")
    for axis in (top, bottom):
        axis.grid(alpha=0.3)
    for mark in marks:  # SECONDS:LABEL, e.g. where something was done to the workers
        at, _, label = mark.partition(":")
        for axis in (top, bottom):
            axis.axvline(float(at) / 60, color="grey", linestyle="--", linewidth=1)
        top.text(
            float(at) / 60,
            0.03,
            label,
            transform=top.get_xaxis_transform(),
            rotation=90,
            ha="right",
            va="bottom",
            fontsize="small",
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak_memory", description=__doc__)
    parser.add_argument("folder", type=Path, help="the soak's KANTHORQ_SOAK_OUT")
    parser.add_argument("--csv", type=Path, help="copy the series here")
    parser.add_argument("--png", type=Path, help="plot the series here")
    parser.add_argument("--top", type=int, default=8, help="growth sites to show")
    parser.add_argument("--first", type=int, default=0, help="compare from this snapshot on")
    parser.add_argument(
        "--until", type=float, default=float("inf"), help="sum up the samples before SECONDS"
    )
    parser.add_argument(
        "--mark", action="append", default=[], help="SECONDS:LABEL, a line on the plot"
    )
    args = parser.parse_args(argv)
    series = load(args.folder / "rss.csv")
    kept = [i for i, t in enumerate(series["seconds"]) if t < args.until]
    upto = {name: [values[i] for i in kept] for name, values in series.items()}
    print("\n".join(summary(upto) + growth(args.folder / "tracemalloc", args.top, args.first)))
    if args.csv:
        shutil.copyfile(args.folder / "rss.csv", args.csv)
    if args.png:
        plot(series, args.png, args.mark)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
