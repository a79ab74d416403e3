"""Overload control of the webhook (sizeguard.webhook.overload and its use in the app): a
bound on decisions in flight with a fast deny beyond it, the API server's deadline, and
memory that does not grow with the request rate."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from sizeguard.approvals import SigningKey, init_key_dir, load_signing_key
from sizeguard.policy import AdmissionDecision
from sizeguard.webhook.overload import (
    DEFAULT_TIMEOUT_SECONDS,
    Gate,
    go_duration,
    request_timeout,
    uid_of_prefix,
)
from tests.unit.test_webhook_app import UID, approve, deployment, make_app, review


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys") / "keys"
    init_key_dir(directory)
    return directory


@pytest.fixture(scope="module")
def key(key_dir: Path) -> SigningKey:
    return load_signing_key(key_dir)


class HeldPolicy:
    """Admits what carries a valid approval and denies the rest, but only once ``release``
    is set: the decisions it holds stay in flight."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0
        self.timeouts: list[float | None] = []

    async def admission_decision(
        self, policy_input: Mapping[str, Any], *, timeout: float | None = None
    ) -> AdmissionDecision:
        self.entered += 1
        self.timeouts.append(timeout)
        await self.release.wait()
        if policy_input["approval"]["valid"]:
            return AdmissionDecision(allowed=True, reasons=[], warnings=[])
        return AdmissionDecision(
            allowed=False, reasons=["sizeguard: needs an approval"], warnings=[]
        )


async def post(app: Any, body: bytes, query: bytes = b"timeout=5s") -> dict[str, Any]:
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/validate",
        "query_string": query,
        "headers": [],
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 200
    answer: dict[str, Any] = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert answer["kind"] == "AdmissionReview"
    response: dict[str, Any] = answer["response"]
    return response


def metric(app: Any, name: str, **labels: str) -> float:
    value = app.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)


def bodies(key: SigningKey) -> tuple[bytes, bytes, bytes]:
    """(approved change, unapproved change, unchanged update) of one Deployment."""
    old = deployment(cpu="100m")
    approved = approve(key, old, deployment(cpu="200m"))
    return (
        json.dumps(review(old, approved)).encode(),
        json.dumps(review(old, deployment(cpu="200m"))).encode(),
        json.dumps(review(old, deployment(cpu="100m", image="web:2"))).encode(),
    )


# --- the gate ------------------------------------------------------------------------------------


def test_requests_beyond_the_bound_are_shed_at_once_and_never_admitted(
    key_dir: Path,
    key: SigningKey,
) -> None:
    policy = HeldPolicy()
    app = make_app(key_dir, policy=policy, max_in_flight=3)
    approved, unapproved, _ = bodies(key)

    async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
        held = [asyncio.create_task(post(app, approved)) for _ in range(3)]
        while policy.entered < 3:
            await asyncio.sleep(0)
        assert app.gate.in_flight == 3
        assert metric(app, "sizeguard_webhook_in_flight") == 3
        # The gate is full: these are answered at once, while the three are still held.
        shed = [await post(app, body) for body in (approved, unapproved) * 5]
        assert all(not task.done() for task in held)
        policy.release.set()
        done = await asyncio.gather(*held)
        after = await post(app, approved)
        return shed, done, after

    shed, done, after = asyncio.run(main())
    for response in shed:
        assert response["allowed"] is False
        assert response["uid"] == UID
        assert response["status"]["code"] == 403
        assert "overloaded" in response["status"]["message"]
    assert [r["allowed"] for r in done] == [True, True, True]
    assert after["allowed"] is True  # answered normally at once when the load ends
    assert app.gate.in_flight == 0
    assert metric(app, "sizeguard_webhook_in_flight") == 0
    assert metric(app, "sizeguard_webhook_max_in_flight") == 3
    assert (
        metric(
            app,
            "sizeguard_webhook_requests_total",
            decision="error",
            reason="overloaded",
            dry_run="false",
        )
        == 10
    )
    assert policy.entered == 4  # shed requests never reached the policy


def test_the_fast_path_is_not_held_by_the_gate(key_dir: Path, key: SigningKey) -> None:
    policy = HeldPolicy()
    app = make_app(key_dir, policy=policy, max_in_flight=2)
    approved, _, unchanged = bodies(key)

    async def main() -> list[dict[str, Any]]:
        held = [asyncio.create_task(post(app, approved))]
        while policy.entered < 1:
            await asyncio.sleep(0)
        # One place is left: unchanged updates take it only for as long as they are decided.
        answers = [await post(app, unchanged) for _ in range(20)]
        policy.release.set()
        await asyncio.gather(*held)
        return answers

    assert all(r["allowed"] for r in asyncio.run(main()))


def test_a_malformed_body_is_still_answered_when_shed(key_dir: Path, key: SigningKey) -> None:
    policy = HeldPolicy()
    app = make_app(key_dir, policy=policy, max_in_flight=1)
    approved, _, _ = bodies(key)

    async def main() -> list[dict[str, Any]]:
        held = asyncio.create_task(post(app, approved))
        while policy.entered < 1:
            await asyncio.sleep(0)
        answers = [await post(app, body) for body in (b"", b"{not json", b'{"request": 1}')]
        policy.release.set()
        await held
        return answers

    for response in asyncio.run(main()):
        assert response["allowed"] is False
        assert response["uid"] == ""
        assert "overloaded" in response["status"]["message"]


def test_sheds_are_logged_once_a_second_with_their_count() -> None:
    now = [100.0]
    gate = Gate(1, clock=lambda: now[0])
    assert gate.try_enter()
    with capture_logs() as events:
        for _ in range(5):
            assert not gate.try_enter()
        now[0] += 1.5
        assert not gate.try_enter()
    assert [(e["event"], e["shed"]) for e in events] == [
        ("admission.overloaded", 1),
        ("admission.overloaded", 5),
    ]
    gate.leave()
    assert gate.try_enter()
    with pytest.raises(ValueError):
        Gate(0)


# --- the deadline --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5s", 5.0),
        ("10s", 10.0),
        ("1m0s", 60.0),
        ("1.5s", 1.5),
        ("500ms", 0.5),
        ("2s500ms", 2.5),
        ("1h", 3600.0),
        ("250us", 0.00025),
        ("", None),
        ("5", None),
        ("s", None),
        ("5x", None),
        ("-5s", None),
        ("5s ", None),
        ("9" * 70 + "s", None),
    ],
)
def test_go_durations(text: str, seconds: float | None) -> None:
    result = go_duration(text)
    assert result == pytest.approx(seconds) if seconds is not None else result is None


@pytest.mark.parametrize(
    ("query", "seconds"),
    [
        (b"timeout=5s", 5.0),
        (b"x=1&timeout=2s", 2.0),
        (b"timeout=10m", 30.0),  # never more than the API server's own maximum
        (b"timeout=0s", DEFAULT_TIMEOUT_SECONDS),
        (b"timeout=soon", DEFAULT_TIMEOUT_SECONDS),
        (b"", DEFAULT_TIMEOUT_SECONDS),
        (b"mytimeout=1s", DEFAULT_TIMEOUT_SECONDS),
    ],
)
def test_the_request_timeout_comes_from_the_url(query: bytes, seconds: float) -> None:
    assert request_timeout({"query_string": query}) == seconds
    assert request_timeout({}) == DEFAULT_TIMEOUT_SECONDS


def test_opa_gets_only_what_is_left_of_the_deadline(key_dir: Path, key: SigningKey) -> None:
    policy = HeldPolicy()
    policy.release.set()
    app = make_app(key_dir, policy=policy)
    approved, _, _ = bodies(key)
    response = asyncio.run(post(app, approved, b"timeout=3s"))
    assert response["allowed"] is True
    (given,) = policy.timeouts
    assert given is not None and 2.5 < given <= 3.0


def test_a_decision_whose_deadline_passed_is_dropped_before_opa(
    key_dir: Path,
    key: SigningKey,
) -> None:
    policy = HeldPolicy()
    policy.release.set()

    class SlowNamespaces:
        """A namespace lookup that uses up the request's time (a slow direct GET)."""

        def __init__(self) -> None:
            from sizeguard.webhook.namespaces import StaticNamespaces

            self.inner = StaticNamespaces({"shop": {"kubernetes.io/metadata.name": "shop"}})

        def start(self) -> None: ...

        def stop(self) -> None: ...

        def synced(self) -> bool:
            return True

        def describe(self) -> str:
            return "slow"

        async def lookup(self, name: str) -> Any:
            await asyncio.sleep(0.2)
            return await self.inner.lookup(name)

    app = make_app(key_dir, policy=policy, namespaces=SlowNamespaces())
    approved, unapproved, _ = bodies(key)
    for body in (approved, unapproved):
        response = asyncio.run(post(app, body, b"timeout=100ms"))
        assert response["allowed"] is False
        assert "deadline exceeded" in response["status"]["message"]
    assert policy.entered == 0
    assert (
        metric(
            app,
            "sizeguard_webhook_requests_total",
            decision="error",
            reason="deadline_exceeded",
            dry_run="false",
        )
        == 2
    )
    assert asyncio.run(post(app, approved, b"timeout=5s"))["allowed"] is True


# --- the uid of a shed request -------------------------------------------------------------------


def test_the_uid_is_read_from_the_start_of_the_body() -> None:
    body = json.dumps(
        {
            "kind": "AdmissionReview",
            "apiVersion": "admission.k8s.io/v1",
            "request": {"uid": UID, "kind": {"kind": "Deployment"}},
        },
        separators=(",", ":"),
    ).encode()
    assert uid_of_prefix(body) == UID
    assert uid_of_prefix(body.replace(b",", b", ").replace(b":", b": ")) == UID
    assert uid_of_prefix(b'{"request": {"uid": "a\\"b"}}') == ""
    assert uid_of_prefix(b'{"request": {"uid": "' + b"a" * 300 + b'"}}') == ""
    assert uid_of_prefix(b"") == ""
