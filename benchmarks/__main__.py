"""``python -m benchmarks``: being built."""

raise SystemExit("the benchmark runner is being built")
