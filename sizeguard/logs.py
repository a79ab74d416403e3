"""Logging for every command: structlog events as one JSON object per line on stderr.

stdout belongs to what a command prints for people or programs (a decision, JSON lines, the
MCP protocol on stdio), so log events never go there.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

__all__ = ["LEVEL_ENV", "configure_logging", "level_from_env"]

LEVEL_ENV = "SIZEGUARD_LOG_LEVEL"


def _stderr(*_: Any) -> structlog.PrintLogger:
    # Looked up at each use, so a replaced sys.stderr (tests, redirection) is honoured.
    return structlog.PrintLogger(sys.stderr)


def level_from_env(default: int) -> int:
    """``$SIZEGUARD_LOG_LEVEL`` (debug, info, warning, error) if set, else ``default``."""
    name = os.environ.get(LEVEL_ENV, "").strip().upper()
    level = logging.getLevelName(name) if name else default
    return level if isinstance(level, int) else default


def configure_logging(*, level: int = logging.INFO, cache: bool = False) -> None:
    """JSON lines on stderr. ``cache`` binds loggers once (for long-running servers).
    ``$SIZEGUARD_LOG_LEVEL`` overrides ``level``."""
    level = level_from_env(level)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_stderr,
        cache_logger_on_first_use=cache,
    )
