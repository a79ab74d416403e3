"""Fuzzing the webhook: 12,000 random and mutated AdmissionReview bodies into the ASGI app.

Every body must get HTTP 200 and a valid AdmissionReview v1 answer, nothing may escape, and:

- anything that is not JSON, not an AdmissionReview v1 object, or whose request has no
  string uid or no known operation is denied;
- the uid answered is the request's (when the body has one) or "";
- an admitted non-dry-run request that is not an UPDATE leaving the footprint alone carries an
  approval that verifies for exactly that write (checked independently with
  ``verify_transition``): the fake policy admits nothing else, so the webhook must not either
  (a CREATE or DELETE, a scale, a resize, a LimitRange, an unknown resource).

The policy is a fake with the admission policy's approval logic (no OPA), for speed: this
tests the parsing and the decision flow's robustness, not the Rego rules (those are tested
against the real OPA in tests/integration).
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
from pathlib import Path
from typing import Any

from sizeguard.approvals import SigningKey, TrustedKeys, approval_of, verify_transition
from sizeguard.changes import guarded_state
from sizeguard.webhook.app import WebhookApp
from sizeguard.webhook.keys import JwksFile
from sizeguard.webhook.namespaces import StaticNamespaces

from .test_webhook_app import (
    NAMESPACES,
    FakePolicy,
    acall,
    approve,
    deployment,
    hpa,
    limit_range,
    pod,
    review,
    scale,
)

CASES = 12_000
SEED = 20261122


def _random_scalar(rng: random.Random) -> Any:
    return rng.choice(
        [
            None,
            True,
            False,
            0,
            -1,
            2**63,
            2**53,
            1.5,
            "",
            "UPDATE",
            "CREATE",
            "scale",
            "apps/v1",
            "autoscaling/v1",
            "Deployment",
            "Scale",
            "100m",
            "1e3",
            "9" * 30,
            "x" * rng.randint(0, 300),
            "\u202e\x00",
            "\ud800",
            "web\udfff",
        ]
    )


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 4 or roll < 0.5:
        return _random_scalar(rng)
    if roll < 0.75:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["apiVersion", "kind", "request", "uid", "operation", "object", "spec", "metadata"]
    return {
        rng.choice(keys) + ("" if rng.random() < 0.7 else str(i)): _random_json(rng, depth + 1)
        for i in range(rng.randint(0, 4))
    }


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(_paths(value, (*prefix, index)))
    return found


def _mutate(rng: random.Random, document: Any) -> Any:
    paths = [p for p in _paths(document) if p]
    if not paths:
        return _random_json(rng)
    path = rng.choice(paths)
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    action = rng.random()
    if action < 0.35:
        parent[path[-1]] = _random_json(rng)
    elif action < 0.55 and isinstance(parent, dict):
        del parent[path[-1]]
    elif action < 0.7:
        value = parent[path[-1]]
        parent[path[-1]] = (
            str(value) if not isinstance(value, str) else rng.choice([0, [], {}, None])
        )
    elif action < 0.85:
        # Plausible but different guarded values.
        parent[path[-1]] = rng.choice(["150m", "2", "0", 5, 0, "1Gi", "-1", 7, None])
    else:
        parent[path[-1]] = copy.deepcopy(
            rng.choice([deployment(), scale(9), hpa(), pod(), limit_range(), {}])
        )
    return document


def fuzz_bases(key: SigningKey) -> list[dict[str, Any]]:
    old = deployment()
    new = deployment(cpu="150m")
    with_init = deployment()
    with_init["spec"]["template"]["spec"]["initContainers"] = [
        {"name": "init", "image": "x", "resources": {"limits": {"memory": "64Mi"}}}
    ]
    return [
        review(old, approve(key, old, new)),
        review(old, new),
        review(old, new, dry_run=True),
        review(old, deployment(image="web:2")),
        review(with_init, approve(key, with_init, deployment(replicas=5) | {})),
        review(scale(3), scale(4), sub_resource="scale"),
        review(None, new, operation="CREATE"),
        review(old, None, operation="DELETE"),
        review(hpa(), approve(key, hpa(), hpa(minimum=4))),
        review(None, approve(key, None, hpa(minimum=4)), operation="CREATE"),
        review(approve(key, hpa(), None), None, operation="DELETE"),
        review(hpa(), hpa(target="api")),
        review(pod(), pod("1"), sub_resource="resize"),
        review(pod(), pod("0.1"), sub_resource="resize"),
        review(None, limit_range(), operation="CREATE"),
        review(limit_range(), limit_range("2")),
        review(limit_range(), None, operation="DELETE"),
    ]


def _text_mutation(rng: random.Random, text: bytes) -> bytes:
    roll = rng.random()
    if roll < 0.3 and text:
        cut = rng.randrange(len(text))
        return text[:cut]
    if roll < 0.6 and text:
        data = bytearray(text)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if roll < 0.8:
        return text.replace(b'"operation": "UPDATE"', b'"operation": "UPDATE", "operation": "X"')
    return b"[" * rng.randint(1, 5000) + text


def _malformed(raw: bytes) -> bool:
    """An independent, minimal check: True when the body can never be a valid review."""
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        return True
    if not isinstance(document, dict):
        return True
    if document.get("apiVersion") != "admission.k8s.io/v1" or document.get("kind") != (
        "AdmissionReview"
    ):
        return True
    request = document.get("request")
    if not isinstance(request, dict):
        return True
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        return True
    return request.get("operation") not in ("CREATE", "UPDATE", "DELETE", "CONNECT")


def _footprint(obj: Any) -> Any:
    """An independent reading of what the webhook compares (errors are the caller's)."""
    if obj["kind"] == "Scale":
        return ("scale", (obj.get("spec") or {}).get("replicas") or 0)
    if obj["kind"] == "LimitRange":
        return ("limits", (obj.get("spec") or {}).get("limits") or [])
    return guarded_state(obj)


def _changes_footprint(request: dict[str, Any]) -> bool:
    if request.get("operation") != "UPDATE":
        return True  # a CREATE or a DELETE always changes it (from or to "none")
    try:
        return bool(_footprint(request["oldObject"]) != _footprint(request["object"]))
    except Exception:
        return True  # unreadable objects must not be admitted either


def fuzz_body(rng: random.Random, case: int, bases: list[dict[str, Any]]) -> bytes:
    """The body of fuzz case ``case``: random bytes, random JSON, or a mutated review."""
    kind = case % 10
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
    if kind == 1:
        return json.dumps(_random_json(rng)).encode()
    document = copy.deepcopy(rng.choice(bases))
    for _ in range(rng.randint(1, 3)):
        document = _mutate(rng, document)
    raw = json.dumps(document).encode()
    return _text_mutation(rng, raw) if kind == 9 else raw


def check_answer(case: int, raw: bytes, out: bytes, trusted: TrustedKeys) -> bool:
    """Assert that ``out`` is a valid answer to ``raw``; True if it admitted the request."""
    answer = json.loads(out)
    assert answer["apiVersion"] == "admission.k8s.io/v1", case
    assert answer["kind"] == "AdmissionReview", case
    response = answer["response"]
    assert isinstance(response["allowed"], bool) and isinstance(response["uid"], str)
    if not response["allowed"]:
        assert response["status"]["code"] == 403
        assert response["status"]["message"].startswith("sizeguard:"), case
    if _malformed(raw):
        assert response["allowed"] is False, (case, raw[:300])
        return False
    request = json.loads(raw)["request"]
    assert response["uid"] in ("", request["uid"]), case
    if response["allowed"] and request.get("dryRun") is not True and _changes_footprint(request):
        operation = request["operation"]
        old = None if operation == "CREATE" else request["oldObject"]
        new = None if operation == "DELETE" else request["object"]
        carrier = new if new is not None else old
        name = request.get("name") or carrier["metadata"]["name"]
        result = verify_transition(
            approval_of(carrier),
            kind=request["kind"]["kind"],
            namespace=request["namespace"],
            name=name,
            old_object=old,
            new_object=new,
            jwks=trusted,
        )
        assert result.ok, (case, result.message)
    return bool(response["allowed"])


def test_fuzz_admission_reviews(tmp_path: Path) -> None:
    from sizeguard.approvals import init_key_dir, load_signing_key

    keys = tmp_path / "keys"
    init_key_dir(keys)
    key = load_signing_key(keys)
    trusted = TrustedKeys.from_file(keys / "jwks.json")
    rng = random.Random(SEED)
    bases = fuzz_bases(key)
    app = WebhookApp(
        jwks=JwksFile(keys / "jwks.json"),
        namespaces=StaticNamespaces(NAMESPACES),
        policy=FakePolicy(),
    )
    counts = {"denied": 0, "allowed": 0}

    async def run() -> None:
        for case in range(CASES):
            raw = fuzz_body(rng, case, bases)
            status, headers, out = await acall(app, "POST", "/validate", raw)
            assert status == 200, (case, raw[:200])
            assert headers[b"content-type"] == b"application/json"
            allowed = check_answer(case, raw, out, trusted)
            counts["allowed" if allowed else "denied"] += 1

    asyncio.run(run())
    assert sum(counts.values()) == CASES
    # Both outcomes occur: the fuzzer reaches the decision flow, not only the parser.
    assert counts["allowed"] > 100 and counts["denied"] > 100, counts
