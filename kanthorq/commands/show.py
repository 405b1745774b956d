"""``kanthorq show``: every stream and consumer, their lag and their tasks."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any, common: list[argparse.ArgumentParser]) -> None:
    del commands, common  # the show command is being built
