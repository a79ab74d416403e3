"""Errors in words: the sentences a user reads instead of a library's repr.

- :func:`describe_validation_error`: a pydantic error as one line (``edits.0.max_surge: must
  be ...``).
- :func:`describe_http_error`: an httpx error of a request to the API server ("the API server
  answered 403 Forbidden to GET /apis/apps/v1/...", "cannot reach <host>: <reason>").
- :func:`no_namespaces`: namespaces the cluster does not have, singular or plural.
- :func:`bad_namespace_names` / :func:`bad_object_name`: names that cannot be a namespace's
  (an RFC 1123 DNS label) or an object's (a DNS subdomain), checked before they go into an
  API path, where ``..``, ``.``, ``""`` or ``a/b`` would address something else.
- :func:`one_line`: a server's message on one line, credentials hidden.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any, Final

import httpx
from pydantic import ValidationError

__all__ = [
    "bad_namespace_names",
    "bad_object_name",
    "describe_http_error",
    "describe_validation_error",
    "fold",
    "no_namespaces",
    "one_line",
]

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


_DNS_LABEL: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN: Final = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)
_NAMESPACE_RULE: Final = (
    "a namespace name is a DNS label: at most 63 lowercase letters, digits and '-', beginning "
    "and ending with a letter or digit"
)


def _shown(name: object) -> str:
    """A name as it was given, quoted, escaped (newlines, controls) and shortened."""
    text = repr(name) if isinstance(name, str) else repr(str(name))
    return text if len(text) <= 72 else text[:70] + "…" + text[0]


def bad_namespace_names(names: Iterable[object]) -> str | None:
    """None when every one of ``names`` is a namespace name (an RFC 1123 DNS label, at most 63
    characters), else the sentence naming those that are not."""
    bad = [
        n for n in names if not (isinstance(n, str) and len(n) <= 63 and _DNS_LABEL.fullmatch(n))
    ]
    if not bad:
        return None
    listed = ", ".join(_shown(n) for n in dict.fromkeys(map(str, bad)))
    verb = "is not a namespace name" if len(set(map(str, bad))) == 1 else "are not namespace names"
    return f"{listed} {verb} ({_NAMESPACE_RULE})"


def bad_object_name(name: object, what: str = "an object") -> str | None:
    """None when ``name`` can name a Kubernetes object (an RFC 1123 DNS subdomain, at most 253
    characters), else the sentence saying it cannot."""
    if isinstance(name, str) and len(name) <= 253 and _DNS_SUBDOMAIN.fullmatch(name):
        return None
    return (
        f"{_shown(name)} is not a name of {what} (lowercase letters, digits, '-' and '.', "
        "beginning and ending with a letter or digit, at most 253)"
    )


_CREDENTIAL: Final = re.compile(
    r"(?i)\b(?P<scheme>bearer|basic)\s+[^\s,;\"'<>]+"
    r"|\b(?P<key>authorization|access[_-]?token|id[_-]?token|token|api[_-]?key|password|secret)"
    r"(?P<sep>\"?\s*[=:]\s*\"?)(?:(?:bearer|basic)\s+)?[^\s,;\"'<>]+"
)
_CONTROLS: Final = re.compile(
    r"[ ]*[\x00-\x1f\x7f-\x9f\u2028\u2029][\x00-\x20\x7f-\x9f\u2028\u2029]*"
)


def _hide(match: re.Match[str]) -> str:
    if match.group("scheme"):
        return f"{match.group('scheme')} <redacted>"
    return f"{match.group('key')}{match.group('sep')}<redacted>"


def one_line(text: str, limit: int = 1500) -> str:
    """A server's message as one line for people and logs: credentials that look like an
    Authorization value (``Bearer <token>``, ``token=...``, ``password: ...``) hidden, newlines
    and other control characters as one space, at most ``limit`` characters."""
    text = _CONTROLS.sub(" ", _CREDENTIAL.sub(_hide, text)).strip()
    return text if len(text) <= limit else text[:limit] + "…"


def fold(text: str) -> str:
    """``text`` as names and identities are compared: NFKC-normalised, case-folded, stripped."""
    return unicodedata.normalize("NFKC", text).casefold().strip()
