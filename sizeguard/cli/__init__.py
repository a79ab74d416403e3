"""The `sizeguard` command line.

Each command group lives beside the code it drives and contributes its sub-parser through a
``register(subparsers)`` function; this module only assembles them and turns expected
failures (:class:`CommandError`) into one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from sizeguard import __version__
from sizeguard.errors import CommandError
from sizeguard.logs import configure_logging

# Modules that contribute a command group, in the order `--help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "sizeguard.cli.sandbox",
    "sizeguard.cli.keys",
    "sizeguard.cli.policy",
    "sizeguard.cli.scan",
    "sizeguard.cli.webhook",
    "sizeguard.cli.serve",
    "sizeguard.cli.approvers",
    "sizeguard.cli.audit",
    "sizeguard.cli.docs",
)


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="sizeguard",
        description=(
            "Right-size and scale Kubernetes workloads from an AI assistant; every change is "
            "approved by a human and enforced by the cluster."
        ),
    )
    parser.add_argument("--version", action="version", version=f"sizeguard {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Commands people run print what matters themselves: only warnings are logged (JSON on
    # stderr). The servers (serve, webhook) log every decision at info level.
    configure_logging(level=logging.WARNING)
    try:
        result: int = args.func(args)
    except CommandError as exc:
        print(f"sizeguard: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("sizeguard: interrupted", file=sys.stderr)
        return 130
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
