"""Paging for the large read tools: ``cursor``/``limit`` over workloads in a stable order.

A page holds at most ``limit`` workloads, in (namespace, name, kind) order. When more remain,
the result carries ``next_cursor``: passed back with the same arguments, it gives the page
after the last workload of this one (keyset paging, so a workload created or deleted between
two calls shifts nothing). The cursor is opaque to the client: base64url of a small JSON
document naming the tool, a digest of the arguments it was issued for, and the last key. A
cursor that is not one of these, or was issued for another tool or other arguments, is refused
in a sentence.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final, Generic, TypeVar

from pydantic import Field

from sizeguard.server.service import ServiceError

__all__ = ["DEFAULT_LIMIT", "Cursor", "Limit", "Page", "page", "workload_key"]

T = TypeVar("T")
Key = tuple[str, ...]

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 500
_VERSION: Final = 1

Cursor = Annotated[
    str | None,
    Field(
        max_length=1024,
        description="next_cursor of the previous page (same arguments); none: the first page",
    ),
]
Limit = Annotated[
    int, Field(ge=1, le=MAX_LIMIT, description="at most this many workloads on this page")
]


def workload_key(kind: str, namespace: str, name: str) -> Key:
    """The order of workloads on pages: namespace, name, kind."""
    return (namespace, name, kind)


def _digest(tool: str, arguments: Mapping[str, Any]) -> str:
    text = json.dumps([tool, arguments], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _encode(tool: str, arguments: Mapping[str, Any], after: Key) -> str:
    document = {"v": _VERSION, "q": _digest(tool, arguments), "after": list(after)}
    raw = json.dumps(document, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str, tool: str, arguments: Mapping[str, Any]) -> Key:
    refused = (
        f"the cursor is not one {tool} gave for these arguments; call it again without a "
        "cursor to start from the first page"
    )
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        document = json.loads(raw)
    except (ValueError, binascii.Error):
        raise ServiceError(refused) from None
    if not isinstance(document, dict) or document.get("v") != _VERSION:
        raise ServiceError(refused)
    after = document.get("after")
    if document.get("q") != _digest(tool, arguments) or not (
        isinstance(after, list) and after and all(isinstance(part, str) for part in after)
    ):
        raise ServiceError(refused)
    return tuple(after)


@dataclass(frozen=True)
class Page(Generic[T]):
    """The items of one page and the cursor of the next (None: this is the last page)."""

    items: list[T]
    next_cursor: str | None


def page(
    items: Sequence[T],
    key: Callable[[T], Key],
    *,
    tool: str,
    arguments: Mapping[str, Any],
    cursor: str | None,
    limit: int,
) -> Page[T]:
    """The page of ``items`` (in ``key`` order) that ``cursor`` points at, ``limit`` long.
    ``arguments`` are the call's arguments other than cursor and limit: the cursor is good
    for those only."""
    ordered = sorted(items, key=key)
    if cursor:
        after = _decode(cursor, tool, arguments)
        ordered = [item for item in ordered if key(item) > after]
    chosen = ordered[:limit]
    more = len(ordered) > limit
    return Page(chosen, _encode(tool, arguments, key(chosen[-1])) if more else None)
