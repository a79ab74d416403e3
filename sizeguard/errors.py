"""Errors a command reports to its user as one line, without a traceback."""

from __future__ import annotations


class CommandError(Exception):
    """An expected failure: bad input, a missing tool, a component that would not start."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
