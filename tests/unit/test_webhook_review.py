"""Parsing AdmissionReview v1 requests and building the answers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sizeguard.webhook.review import (
    MAX_BODY_BYTES,
    ReviewError,
    parse_review,
    peek_uid,
    review_response,
)

from .test_webhook_app import UID, deployment, review


def body(document: Any) -> bytes:
    return json.dumps(document).encode()


def test_a_real_update_review_parses() -> None:
    request = parse_review(body(review(deployment(), deployment(cpu="1"), dry_run=True)))
    assert request.uid == UID
    assert request.operation == "UPDATE"
    assert request.kind.api_version == "apps/v1" and request.kind.kind == "Deployment"
    assert request.resource.resource == "deployments"
    assert request.sub_resource == ""
    assert (request.namespace, request.name) == ("shop", "web")
    assert request.username == "bob" and request.groups == ("system:authenticated",)
    assert request.dry_run is True
    assert request.object is not None and request.old_object is not None


def test_core_group_kind_has_a_bare_version() -> None:
    document = review(None, {"kind": "Pod"}, operation="CREATE")
    document["request"]["kind"] = {"group": "", "version": "v1", "kind": "Pod"}
    assert parse_review(body(document)).kind.api_version == "v1"


def _mutated(path: list[Any], value: Any) -> dict[str, Any]:
    document = review(deployment(), deployment(cpu="1"))
    target: Any = document
    for step in path[:-1]:
        target = target[step]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return document


@pytest.mark.parametrize(
    ("path", "value", "uid"),
    [
        (["apiVersion"], "admission.k8s.io/v1beta1", UID),
        (["kind"], "Review", UID),
        (["request"], [], ""),
        (["request", "uid"], KeyError, ""),
        (["request", "uid"], 5, ""),
        (["request", "uid"], "", ""),
        (["request", "uid"], "u" * 300, ""),
        (["request", "operation"], "PATCH", UID),
        (["request", "operation"], None, UID),
        (["request", "kind"], "Deployment", UID),
        (["request", "kind", "kind"], 1, UID),
        (["request", "resource"], KeyError, UID),
        (["request", "userInfo"], None, UID),
        (["request", "userInfo", "groups"], "system:masters", UID),
        (["request", "userInfo", "groups"], [1], UID),
        (["request", "dryRun"], "true", UID),
        (["request", "object"], [], UID),
        (["request", "object"], None, UID),
        (["request", "oldObject"], None, UID),
        (["request", "name"], "", UID),
        (["request", "namespace"], KeyError, UID),
        (["request", "subResource"], 3, UID),
    ],
)
def test_malformed_reviews_are_refused_with_the_uid_when_readable(
    path: list[Any], value: Any, uid: str
) -> None:
    with pytest.raises(ReviewError) as info:
        parse_review(body(_mutated(path, value)))
    assert info.value.uid == uid


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"null",
        b"[]",
        b"\xff\xfe",
        b'{"apiVersion": NaN}',
        b'{"a": Infinity}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"apiVersion":"admission.k8s.io/v1","apiVersion":"admission.k8s.io/v1"}',
        b"1" * 5000,
    ],
)
def test_non_reviews_are_refused(raw: bytes) -> None:
    with pytest.raises(ReviewError):
        parse_review(raw)


def test_duplicate_members_are_refused_anywhere() -> None:
    text = json.dumps(review(deployment(), deployment(cpu="1")))
    text = text.replace('"operation": "UPDATE"', '"operation": "UPDATE", "operation": "CREATE"')
    with pytest.raises(ReviewError, match="duplicate"):
        parse_review(text.encode())


def test_too_large_is_refused_before_parsing() -> None:
    with pytest.raises(ReviewError, match="larger than"):
        parse_review(b" " * (MAX_BODY_BYTES + 1))


def test_peek_uid_is_total() -> None:
    for value in (None, 1, "x", [], {"request": 1}, {"request": {"uid": 1}}):
        assert peek_uid(value) == ""
    assert peek_uid({"request": {"uid": "abc"}}) == "abc"


def test_response_shapes() -> None:
    allowed = review_response("u", allowed=True)
    assert allowed == {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": "u", "allowed": True},
    }
    denied = review_response(
        "u", allowed=False, message="sizeguard: no\n" + "x" * 5000, warnings=["a\tb", "", "c" * 300]
    )["response"]
    assert denied["status"]["code"] == 403 and denied["status"]["reason"] == "Forbidden"
    assert "\n" not in denied["status"]["message"] and len(denied["status"]["message"]) <= 3000
    assert denied["warnings"][0] == "a b" and len(denied["warnings"]) == 2
    assert len(denied["warnings"][1]) == 250 and denied["warnings"][1].endswith("...")
