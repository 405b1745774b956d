"""The app that ``kanthorq-x2`` (kanthorq_x2.py) runs with ``python -m kanthorq run
benchmarks.systems.x2_app:app --workers 2``: the supervisor and each of its children import
it. It subscribes exactly as the single-process ``kanthorq`` worker of W2 does
(:func:`benchmarks.systems.kanthorq_sys.subscribe_all`: the same consumer name, subject,
concurrency and no-op handler), with the options the parent puts in ``$KANTHORQ_BENCH_X2``."""

from __future__ import annotations

import kanthorq
from benchmarks.systems.base import Body, WorkerOptions
from benchmarks.systems.kanthorq_sys import subscribe_all
from benchmarks.systems.kanthorq_x2 import from_env


def _on_body(body: Body) -> None:
    raise RuntimeError("kanthorq-x2 runs W2 only: its handler is drain mode's no-op")


def make_app(opts: WorkerOptions) -> kanthorq.App:
    app = kanthorq.App(opts.dsn)
    subscribe_all(app, opts, _on_body)
    return app


app = make_app(from_env())
