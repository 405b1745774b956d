"""The optional extras: without prometheus-client and opentelemetry, kanthorq imports and
runs as before; asking for metrics or traces says which extra to install. Run in a
subprocess where those packages cannot be imported."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from pathlib import Path

SCRIPT = """
import asyncio
import sys

sys.modules["prometheus_client"] = None  # as if not installed: importing them fails
sys.modules["opentelemetry"] = None

import kanthorq
import kanthorq.cli  # the CLI too

done = asyncio.Event()
app = kanthorq.App(sys.argv[1], poll_interval=0.2)


@app.subscribe("job.*", consumer="work")
async def work(msg: kanthorq.Message) -> None:
    done.set()


async def main() -> None:
    async with app:
        runner = asyncio.create_task(app.run())
        await app.publish("job.run", b"{}")
        await asyncio.wait_for(done.wait(), 30)
        await app.shutdown()
        await runner


asyncio.run(main())
print("ran")
for name in ("kanthorq.metrics", "kanthorq.tracing"):
    try:
        __import__(name)
    except ImportError as exc:
        print(type(exc).__name__, exc)
code = kanthorq.cli.main(["run", "app:app", "--metrics-port", "0", "--dsn", sys.argv[1]])
print("exit", code)
loaded = sorted(m for m in sys.modules if m.startswith(("prometheus", "opentelemetry")))
print("loaded", [m for m in loaded if sys.modules[m] is not None])
"""


async def test_without_the_extras_kanthorq_runs_and_says_what_to_install(
    dsn: str, tmp_path: Path
) -> None:
    script = tmp_path / "noextras.py"
    script.write_text(textwrap.dedent(SCRIPT))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        dsn,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines == [
        "ran",
        "MissingExtra Prometheus metrics need the prometheus-client package, which is not "
        "installed: pip install 'kanthorq[metrics]'",
        "MissingExtra OpenTelemetry traces need the opentelemetry-api package, which is not "
        "installed: pip install 'kanthorq[otel]'",
        "exit 1",
        "loaded []",
    ]
    # the CLI said it before importing the app (there is no app.py here)
    assert "kanthorq: error: Prometheus metrics need the prometheus-client package" in err.decode()


async def test_importing_kanthorq_imports_no_extra() -> None:
    code = (
        "import sys, kanthorq, kanthorq.cli, kanthorq.hooks\n"
        "print(sorted(m for m in sys.modules if m.startswith(('prometheus', 'opentelemetry'))))"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert out.decode().strip() == "[]"
