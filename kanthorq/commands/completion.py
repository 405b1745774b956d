"""``kanthorq completion bash|zsh``: a shell completion script, made by shtab from the
parser itself, so it completes every command and option there is."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import shtab

from kanthorq.commands.common import FMT

SHELLS = ("bash", "zsh")
EPILOG = """\
install it:
  bash: kanthorq completion bash > ~/.local/share/bash-completion/completions/kanthorq
  zsh:  kanthorq completion zsh > ~/.zfunc/_kanthorq
        (with fpath+=(~/.zfunc) and then autoload -U compinit && compinit in ~/.zshrc)

Then open a new shell. Or, for the current shell only: eval "$(kanthorq completion bash)".
"""


def register(commands: Any, root: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "completion",
        help="print a shell completion script (bash or zsh)",
        description="Print the completion script of kanthorq for a shell.",
        epilog=EPILOG,
        formatter_class=FMT,
    )
    parser.add_argument("shell", choices=SHELLS, help="the shell: %(choices)s")
    parser.set_defaults(
        handler=cmd_completion,
        root=root,
        default_log_level="WARNING",
        dsn=None,
        statement_cache_size=None,
    )


def cmd_completion(args: argparse.Namespace) -> int:
    sys.stdout.write(shtab.complete(args.root, shell=args.shell))
    return 0
