"""``kanthorq tasks list`` and ``kanthorq tasks show``."""

from __future__ import annotations

import argparse
from typing import Any


def register(actions: Any, common: list[argparse.ArgumentParser]) -> None:
    del actions, common  # list and show are being built
