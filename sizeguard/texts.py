"""Errors in words: the sentences a user reads instead of a library's repr.

- :func:`describe_validation_error`: a pydantic error as one line (``edits.0.max_surge: must
  be ...``).
- :func:`describe_http_error`: an httpx error of a request to the API server ("the API server
  answered 403 Forbidden to GET /apis/apps/v1/...", "cannot reach <host>: <reason>").
- :func:`no_namespaces`: namespaces the cluster does not have, singular or plural.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

import httpx
from pydantic import ValidationError

__all__ = ["describe_http_error", "describe_validation_error", "no_namespaces"]

_TYPE_TAG: Final = re.compile(r"^(constrained-)?(int|str|float|bool|dict|list)$|[\[\]]")
_PATTERNS: Final = {
    r"^cs-[0-9a-f]{20}$": "is not a change-set id (cs- and 20 hex digits, as preview_changes "
    "returns it)",
    r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$": "is not a Kubernetes name (lowercase letters, digits, "
    "'-' and '.')",
}
_WORDS: Final = {
    "missing": "is required",
    "extra_forbidden": "is not a field this tool takes",
    "unexpected_keyword_argument": "is not a field this tool takes",
}
_PREFIXES: Final = (
    ("Value error, ", ""),
    ("Input should be ", "must be "),
    ("String should ", "must "),
    ("List should ", "must "),
    ("Dictionary should ", "must "),
    ("Value should ", "must "),
)


def _in_words(item: Any) -> str:
    """One pydantic error item as a phrase after its field's name."""
    kind = str(item.get("type", ""))
    if kind == "string_pattern_mismatch":
        pattern = str((item.get("ctx") or {}).get("pattern", ""))
        return _PATTERNS.get(pattern, "does not have the form this field needs")
    if kind in _WORDS:
        return _WORDS[kind]
    message = str(item["msg"])
    for prefix, replacement in _PREFIXES:
        if message.startswith(prefix):
            return replacement + message.removeprefix(prefix)
    return message


def describe_validation_error(error: ValidationError) -> str:
    """A pydantic error as one line a person reads (``edits.0.max_surge: must be ...``), never
    its repr (which echoes the input back) nor its phrasing of a pattern. The alternatives of a
    union are joined with "or"."""
    problems: dict[str, list[str]] = {}
    for item in error.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in item["loc"] if not _TYPE_TAG.search(str(part)))
        problems.setdefault(where, []).append(_in_words(item))
    parts = [
        (f"{where}: " if where else "") + " or ".join(dict.fromkeys(messages))
        for where, messages in list(problems.items())[:5]
    ]
    more = len(problems) - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _reason(exc: BaseException) -> str:
    """The innermost cause of a transport error, in its own words (one line)."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    text = (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, TimeoutError) or "timed out" in text.lower():
        return "no answer in time"
    if "refused" in text.lower():
        return "connection refused"
    return text[:200] or type(exc).__name__


def describe_http_error(exc: httpx.HTTPError, server: str = "the API server") -> str:
    """An httpx error of a request to ``server`` as a sentence: the status and the request
    for an answer ("the API server answered 403 Forbidden to GET /apis/apps/v1/..."), the
    host and the reason for no answer ("cannot reach 127.0.0.1:6443: connection refused")."""
    if isinstance(exc, httpx.HTTPStatusError):
        response, request = exc.response, exc.request
        phrase = response.reason_phrase or ""
        status = f"{response.status_code} {phrase}".strip()
        return f"{server} answered {status} to {request.method} {request.url.path}"
    try:
        url = exc.request.url
        host = f"{url.host}:{url.port}" if url.port else url.host
    except RuntimeError:  # an error raised before a request existed
        host = server
    if isinstance(exc, httpx.TimeoutException):
        return f"cannot reach {host}: no answer in time"
    return f"cannot reach {host}: {_reason(exc)}"


def no_namespaces(names: Sequence[str]) -> str:
    """``no namespace a`` / ``no namespaces a, b`` (the caller says where)."""
    listed = ", ".join(names)
    return f"no namespace {listed}" if len(names) == 1 else f"no namespaces {listed}"
