"""The ``--ledger`` flag of the commands that work on the ledger, and opening it with errors a
person reads."""

from __future__ import annotations

import argparse
from pathlib import Path

from sizeguard.errors import CommandError
from sizeguard.ledger import Ledger, LedgerError, LedgerNotFoundError, default_ledger_path

__all__ = ["add_ledger_flag", "open_ledger"]


def add_ledger_flag(parser: argparse.ArgumentParser) -> None:
    """``--ledger PATH`` (default: $SIZEGUARD_LEDGER or ~/.local/state/sizeguard/ledger.db)."""
    parser.add_argument(
        "--ledger",
        type=Path,
        metavar="PATH",
        help="the ledger file (default: $SIZEGUARD_LEDGER or ~/.local/state/sizeguard/ledger.db)",
    )


def open_ledger(path: Path | None, *, create: bool = False) -> Ledger:
    """The ledger at ``path`` (else the default); a missing or unreadable one is a
    :class:`CommandError` naming the file."""
    where = path if path is not None else default_ledger_path()
    try:
        return Ledger(where, create=create)
    except LedgerNotFoundError:
        raise CommandError(
            f"no ledger at {where} (pass --ledger PATH or set SIZEGUARD_LEDGER)"
        ) from None
    except LedgerError as exc:
        raise CommandError(str(exc)) from None
