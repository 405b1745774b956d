"""The embedded PostgreSQL server used when no DSN is given anywhere.

It comes from the optional extra ``kanthorq[embedded]`` (PyPI ``pgserver``) and keeps its
data under ``./.kanthorq/`` or ``$KANTHORQ_HOME``. Several processes share one server: each
holds a handle, and the server stops when the last one exits.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

from kanthorq.errors import EmbeddedUnavailable

logger = logging.getLogger(__name__)

ENV_HOME = "KANTHORQ_HOME"
_servers: dict[Path, Any] = {}


def home() -> Path:
    return Path(os.environ.get(ENV_HOME) or ".kanthorq").resolve()


def start(data_home: Path | None = None) -> str:
    """Start (or join) the embedded server and return its DSN."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            import pgserver
    except ImportError:
        raise EmbeddedUnavailable(
            "no DSN was given: pass App(dsn=...) / --dsn, or set KANTHORQ_DSN; "
            "or install the embedded server with: pip install 'kanthorq[embedded]'"
        ) from None
    pgdata = (data_home or home()) / "pgdata"
    if pgdata not in _servers:
        pgdata.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _servers[pgdata] = pgserver.get_server(pgdata, cleanup_mode="stop")
    dsn = str(_servers[pgdata].get_uri())
    logger.info("using the embedded PostgreSQL at %s", dsn)
    return dsn
