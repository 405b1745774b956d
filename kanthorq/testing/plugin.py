"""kanthorq's pytest plugin: opt-in.

pytest loads this module in every project where kanthorq is installed (the ``pytest11``
entry point), and it registers nothing but its ini option until a project turns it on::

    [tool.pytest.ini_options]
    kanthorq_testing = true

(or ``pytest -o kanthorq_testing=true``, or ``-p kanthorq.testing.fixtures`` for one run).
Then the fixtures of :mod:`kanthorq.testing.fixtures` are registered.
"""

from __future__ import annotations

import pytest

INI = "kanthorq_testing"
FIXTURES = "kanthorq.testing.fixtures"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        INI,
        type="bool",
        default=False,
        help="register kanthorq's fixtures (kanthorq_dsn: a fresh, migrated database per test)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if not config.getini(INI) or config.pluginmanager.has_plugin(FIXTURES):
        return
    from kanthorq.testing import fixtures

    if not config.pluginmanager.is_registered(fixtures):
        config.pluginmanager.register(fixtures, FIXTURES)
