"""Strict but total parsing of ``admission.k8s.io/v1`` AdmissionReview requests.

:func:`parse_review` either returns an :class:`AdmissionRequest` or raises
:class:`ReviewError`, which carries the request's uid whenever one could be read, so that
even a malformed body is answered with a valid AdmissionReview (``allowed: false``) that the
API server can match to its request. Nothing here trusts its input: every member is checked
for its type, strings and lists are bounded, and JSON with duplicate keys, ``NaN`` or
``Infinity`` is refused (two parsers must never read one body differently).

:func:`review_response` builds the answer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

API_VERSION: Final = "admission.k8s.io/v1"
KIND: Final = "AdmissionReview"
OPERATIONS: Final = frozenset({"CREATE", "UPDATE", "DELETE", "CONNECT"})

MAX_BODY_BYTES: Final = 6 * 1024 * 1024
"""Two objects of up to etcd's default 1.5 MiB each, their JSON escaping and the options."""

MAX_UID_LENGTH: Final = 256
MAX_NAME_LENGTH: Final = 253
MAX_USER_LENGTH: Final = 1024
MAX_GROUPS: Final = 256
MAX_MESSAGE_LENGTH: Final = 3000
MAX_WARNING_LENGTH: Final = 250
MAX_WARNINGS: Final = 10


class ReviewError(Exception):
    """The body is not an AdmissionReview we accept. ``uid`` is set when one was readable."""

    def __init__(self, message: str, uid: str = "") -> None:
        super().__init__(message)
        self.uid = uid


@dataclass(frozen=True)
class GroupVersionKind:
    group: str
    version: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


@dataclass(frozen=True)
class GroupVersionResource:
    group: str
    version: str
    resource: str


@dataclass(frozen=True)
class AdmissionRequest:
    """The members of ``request`` sizeguard uses, checked."""

    uid: str
    kind: GroupVersionKind
    resource: GroupVersionResource
    sub_resource: str
    name: str
    namespace: str
    operation: str
    username: str
    groups: tuple[str, ...]
    object: Mapping[str, Any] | None
    old_object: Mapping[str, Any] | None
    dry_run: bool
    orphan: bool = False
    """A DELETE whose options orphan the object's dependents (``propagationPolicy: Orphan``,
    or the older ``orphanDependents: true``)."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate member {key[:60]!r}")
        result[key] = value
    return result


def load_json(body: bytes) -> Any:
    """Decode a JSON body strictly (UTF-8, no duplicate members, no NaN/Infinity)."""
    text = body.decode("utf-8")
    return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)


def peek_uid(document: object) -> str:
    """The request uid of a (possibly malformed) review, or ``""``."""
    if isinstance(document, Mapping):
        request = document.get("request")
        if isinstance(request, Mapping):
            uid = request.get("uid")
            if isinstance(uid, str) and 0 < len(uid) <= MAX_UID_LENGTH:
                return uid
    return ""


def _str(parent: Mapping[str, Any], key: str, where: str, *, limit: int, required: bool) -> str:
    value = parent.get(key)
    if value is None:
        if required:
            raise ValueError(f"{where}.{key} is missing")
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{where}.{key} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise ValueError(f"{where}.{key} is longer than {limit} characters")
    if required and not value:
        raise ValueError(f"{where}.{key} is empty")
    return value


def _map(parent: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = parent.get(key)
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}.{key} must be an object")
    return value


def _optional_object(request: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    value = request.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"request.{key} must be an object or null")
    return value


def _orphans(request: Mapping[str, Any], operation: str) -> bool:
    """Whether a DELETE's options leave its dependents behind. Anything unreadable there is a
    ValueError: the request is refused rather than guessed at."""
    options = request.get("options")
    if operation != "DELETE" or options is None:
        return False
    if not isinstance(options, Mapping):
        raise ValueError("request.options must be an object")
    policy = options.get("propagationPolicy")
    orphan_dependents = options.get("orphanDependents")
    if policy is not None and policy not in ("Orphan", "Background", "Foreground"):
        raise ValueError("request.options.propagationPolicy is not a propagation policy")
    if orphan_dependents is not None and not isinstance(orphan_dependents, bool):
        raise ValueError("request.options.orphanDependents must be a boolean")
    return policy == "Orphan" or (policy is None and orphan_dependents is True)


def _groups(user: Mapping[str, Any]) -> tuple[str, ...]:
    value = user.get("groups")
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_GROUPS:
        raise ValueError(f"request.userInfo.groups must be a list of at most {MAX_GROUPS} strings")
    groups: list[str] = []
    for group in value:
        if not isinstance(group, str) or len(group) > MAX_USER_LENGTH:
            raise ValueError("request.userInfo.groups must hold strings")
        groups.append(group)
    return tuple(groups)


def _parse_request(request: Mapping[str, Any]) -> AdmissionRequest:
    uid = _str(request, "uid", "request", limit=MAX_UID_LENGTH, required=True)
    kind_map = _map(request, "kind", "request")
    kind = GroupVersionKind(
        group=_str(kind_map, "group", "request.kind", limit=MAX_NAME_LENGTH, required=False),
        version=_str(kind_map, "version", "request.kind", limit=MAX_NAME_LENGTH, required=True),
        kind=_str(kind_map, "kind", "request.kind", limit=MAX_NAME_LENGTH, required=True),
    )
    resource_map = _map(request, "resource", "request")
    resource = GroupVersionResource(
        group=_str(
            resource_map, "group", "request.resource", limit=MAX_NAME_LENGTH, required=False
        ),
        version=_str(
            resource_map, "version", "request.resource", limit=MAX_NAME_LENGTH, required=True
        ),
        resource=_str(
            resource_map, "resource", "request.resource", limit=MAX_NAME_LENGTH, required=True
        ),
    )
    operation = _str(request, "operation", "request", limit=16, required=True)
    if operation not in OPERATIONS:
        raise ValueError(f"request.operation {operation!r} is not one of {sorted(OPERATIONS)}")
    user = _map(request, "userInfo", "request")
    dry_run = request.get("dryRun", False)
    if dry_run is None:
        dry_run = False
    if not isinstance(dry_run, bool):
        raise ValueError("request.dryRun must be a boolean")
    parsed = AdmissionRequest(
        uid=uid,
        kind=kind,
        resource=resource,
        sub_resource=_str(request, "subResource", "request", limit=MAX_NAME_LENGTH, required=False),
        name=_str(request, "name", "request", limit=MAX_NAME_LENGTH, required=False),
        namespace=_str(request, "namespace", "request", limit=MAX_NAME_LENGTH, required=False),
        operation=operation,
        username=_str(user, "username", "request.userInfo", limit=MAX_USER_LENGTH, required=False),
        groups=_groups(user),
        object=_optional_object(request, "object"),
        old_object=_optional_object(request, "oldObject"),
        dry_run=dry_run,
        orphan=_orphans(request, operation),
    )
    if operation == "UPDATE":
        if parsed.object is None or parsed.old_object is None:
            raise ValueError("an UPDATE request needs both request.object and request.oldObject")
        if not parsed.name or not parsed.namespace:
            raise ValueError("an UPDATE request needs request.name and request.namespace")
    return parsed


def parse_review(body: bytes) -> AdmissionRequest:
    """Parse one AdmissionReview body; raises :class:`ReviewError` for anything else."""
    if len(body) > MAX_BODY_BYTES:
        raise ReviewError(f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        document = load_json(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ReviewError(f"the body is not JSON: {str(exc)[:200]}") from None
    uid = peek_uid(document)
    if not isinstance(document, Mapping):
        raise ReviewError("the body is not a JSON object", uid)
    if document.get("apiVersion") != API_VERSION or document.get("kind") != KIND:
        raise ReviewError(f"the body is not an {API_VERSION} {KIND}", uid)
    request = document.get("request")
    if not isinstance(request, Mapping):
        raise ReviewError("the review has no request object", uid)
    try:
        return _parse_request(request)
    except ValueError as exc:
        raise ReviewError(str(exc), uid) from None


def _clip(text: str, limit: int) -> str:
    # Warnings and messages must be printable: no control characters, bounded length.
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


def review_response(
    uid: str,
    *,
    allowed: bool,
    message: str = "",
    warnings: Sequence[str] = (),
) -> dict[str, Any]:
    """A v1 AdmissionReview answer; a deny carries HTTP 403 and the message."""
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if not allowed:
        response["status"] = {
            "code": 403,
            "reason": "Forbidden",
            "message": _clip(message, MAX_MESSAGE_LENGTH),
        }
    clipped = [_clip(w, MAX_WARNING_LENGTH) for w in warnings[:MAX_WARNINGS] if w]
    if clipped:
        response["warnings"] = clipped
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}
