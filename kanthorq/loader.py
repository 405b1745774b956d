"""Find the :class:`kanthorq.App` that ``kanthorq run module:attribute`` names.

Like uvicorn, the app directory (the current one by default) goes first on ``sys.path``,
so ``kanthorq run app:app`` finds ``./app.py``.
"""

from __future__ import annotations

import importlib
import os
import sys

from kanthorq.app import App
from kanthorq.errors import ConfigError, KanthorQError


class AppImportFailed(KanthorQError):
    """The app's module was found, but importing it raised an error."""


def _import(module_name: str, directory: str) -> object:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise ConfigError(
                f"could not import module {module_name!r}: no module named {missing!r} "
                f"(looked in {directory!r} and sys.path)"
            ) from exc
        raise AppImportFailed(
            f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    except Exception as exc:
        raise AppImportFailed(
            f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc


def load_app(path: str, app_dir: str = ".") -> App:
    """Import ``module:attribute`` (the attribute may be dotted) and check it is an App."""
    module_name, sep, attr_path = path.partition(":")
    if not sep or not module_name or not attr_path:
        raise ConfigError(
            f"APP must look like 'module:attribute' (e.g. 'app:app' or 'pkg.mod:app'), got {path!r}"
        )
    directory = os.path.abspath(app_dir)
    if not os.path.isdir(directory):
        raise ConfigError(f"--app-dir {app_dir!r} is not a directory")
    if directory not in sys.path:
        sys.path.insert(0, directory)
    target = _import(module_name, directory)
    for attr in attr_path.split("."):
        try:
            target = getattr(target, attr)
        except AttributeError:
            raise ConfigError(
                f"module {module_name!r} has no attribute {attr_path!r} (from {path!r})"
            ) from None
    if not isinstance(target, App):
        raise ConfigError(
            f"{path!r} is a {type(target).__name__}, not a kanthorq.App; "
            "point it at the App instance, e.g. 'app:app' for app = kanthorq.App() in app.py"
        )
    return target
