"""The optional extras, imported in one place: ``needs`` turns a missing package into one
clear :class:`~kanthorq.errors.MissingExtra` that names the extra to install.

The core never imports an extra: only :mod:`kanthorq.metrics` (``prometheus-client``),
:mod:`kanthorq.tracing` (``opentelemetry-api``) and :mod:`kanthorq.dashboard` (Starlette,
Jinja2, uvicorn) do, and only when they are imported
themselves, so without the extras kanthorq imports and runs as before, at no cost.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from kanthorq.errors import MissingExtra

# extra: (the modules it imports, space-separated; the packages that provide them; what it
# is for)
EXTRAS = {
    "metrics": ("prometheus_client", "prometheus-client", "Prometheus metrics"),
    "otel": ("opentelemetry", "opentelemetry-api", "OpenTelemetry traces"),
    # several modules, and the packages that provide them, are separated by spaces
    "dashboard": (
        "starlette jinja2 uvicorn python_multipart",
        "starlette jinja2 uvicorn python-multipart",
        "Dashboard pages",
    ),
    "http": ("starlette uvicorn", "starlette uvicorn", "HTTP endpoints"),
}


@contextmanager
def needs(extra: str) -> Iterator[None]:
    """Around the imports of ``extra``'s packages: a missing one raises :class:`MissingExtra`
    (an ImportError) that says what to install. Other import errors pass unchanged."""
    module, package, feature = EXTRAS[extra]
    modules, packages = module.split(), package.split()
    try:
        yield
    except ImportError as exc:
        missing = None if exc.name is None else exc.name.split(".")[0]
        if missing not in modules:
            raise
        package = packages[modules.index(missing)]
        raise MissingExtra(
            f"{feature} need the {package} package, which is not installed: "
            f"pip install 'kanthorq[{extra}]'"
        ) from exc
