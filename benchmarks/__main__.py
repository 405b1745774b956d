"""``python -m benchmarks``: kanthorq, pgqueuer, procrastinate and raw asyncpg, side by side."""

from benchmarks.cli import main

raise SystemExit(main())
