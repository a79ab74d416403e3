"""The webhook's ASGI app, called directly with plain data (no server, no OPA)."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import structlog

from sizeguard.approvals import (
    APPROVAL_ANNOTATION,
    SigningKey,
    generate_signing_key,
    init_key_dir,
    load_signing_key,
    mint_approval,
    public_jwk,
)
from sizeguard.changes import guarded_state, target_of
from sizeguard.policy import AdmissionDecision
from sizeguard.webhook.app import WebhookApp
from sizeguard.webhook.keys import JwksFile
from sizeguard.webhook.metrics import Metrics
from sizeguard.webhook.review import MAX_BODY_BYTES

UID = "705ab4f5-6393-11e8-b7cc-42010a800002"
OBJ_UID = "3f1c0b4e-0000-4000-8000-000000000001"
CS = "cs-0123456789abcdef0123"


def deployment(
    *, cpu: str = "100m", replicas: int | None = 3, image: str = "web:1", uid: str = OBJ_UID
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "containers": [
                    {
                        "name": "web",
                        "image": image,
                        "resources": {"requests": {"cpu": cpu, "memory": "128Mi"}},
                    }
                ]
            },
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "uid": uid, "labels": {"app": "web"}},
        "spec": spec,
    }


def scale(replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": "web", "namespace": "shop", "uid": OBJ_UID},
        "spec": {"replicas": replicas},
    }


def review(
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    *,
    operation: str = "UPDATE",
    sub_resource: str = "",
    dry_run: bool = False,
    user: str = "bob",
    groups: list[str] | None = None,
) -> dict[str, Any]:
    if sub_resource == "scale":
        kind = {"group": "autoscaling", "version": "v1", "kind": "Scale"}
    else:
        kind = {"group": "apps", "version": "v1", "kind": "Deployment"}
    request: dict[str, Any] = {
        "uid": UID,
        "kind": kind,
        "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
        "requestKind": kind,
        "requestResource": {"group": "apps", "version": "v1", "resource": "deployments"},
        "name": "web",
        "namespace": "shop",
        "operation": operation,
        "userInfo": {"username": user, "groups": groups or ["system:authenticated"]},
        "object": new,
        "oldObject": old,
        "dryRun": dry_run,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "UpdateOptions"},
    }
    if sub_resource:
        request["subResource"] = sub_resource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def approve(
    key: SigningKey, old: Mapping[str, Any], new: Mapping[str, Any], now: float | None = None
) -> dict[str, Any]:
    """``new`` carrying an approval of old -> new."""
    token = mint_approval(
        key,
        change_set_id=CS,
        op="apply",
        target=target_of(old),
        before=guarded_state(old),
        after=guarded_state(new),
        subject="alice@example.com",
        generation=old["metadata"].get("generation"),
        now=now,
    )
    approved = copy.deepcopy(dict(new))
    approved["metadata"].setdefault("annotations", {})[APPROVAL_ANNOTATION] = token
    return approved


class FakePolicy:
    """Mimics the admission policy's approval logic; records its inputs."""

    def __init__(self, *, error: str | None = None, raises: bool = False) -> None:
        self.inputs: list[Mapping[str, Any]] = []
        self.error = error
        self.raises = raises

    async def admission_decision(self, policy_input: Mapping[str, Any]) -> AdmissionDecision:
        self.inputs.append(policy_input)
        if self.raises:
            raise RuntimeError("boom")
        if self.error is not None:
            return AdmissionDecision.unavailable(self.error)
        request = policy_input.get("request", {})
        if request.get("operation") != "UPDATE":
            return AdmissionDecision(allowed=True, reasons=[], warnings=[])
        if policy_input["approval"]["valid"]:
            return AdmissionDecision(allowed=True, reasons=["sizeguard: ok"], warnings=[])
        if request.get("dry_run"):
            return AdmissionDecision(
                allowed=True, reasons=[], warnings=["sizeguard: dry run admitted\nsecond line"]
            )
        return AdmissionDecision(
            allowed=False,
            reasons=["sizeguard: change on shop/web needs an approval; request one"],
            warnings=["sizeguard: a warning"],
        )


class AllowAll:
    async def admission_decision(self, policy_input: Mapping[str, Any]) -> AdmissionDecision:
        return AdmissionDecision(allowed=True, reasons=[], warnings=[])


def call(
    app: WebhookApp,
    method: str,
    path: str,
    body: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    chunks: int = 1,
) -> tuple[int, dict[bytes, bytes], bytes]:
    return asyncio.run(acall(app, method, path, body, headers, chunks))


async def acall(
    app: WebhookApp,
    method: str,
    path: str,
    body: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    chunks: int = 1,
) -> tuple[int, dict[bytes, bytes], bytes]:
    size = max(1, -(-len(body) // chunks))
    parts = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    messages = [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
        for i, part in enumerate(parts)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": headers or []}
    await app(scope, receive, send)
    start = sent[0]
    out = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), out


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys") / "keys"
    init_key_dir(directory)
    return directory


@pytest.fixture(scope="module")
def key(key_dir: Path) -> SigningKey:
    return load_signing_key(key_dir)


def make_app(key_dir: Path, policy: Any = None, **kwargs: Any) -> WebhookApp:
    return WebhookApp(jwks=JwksFile(key_dir / "jwks.json"), policy=policy or FakePolicy(), **kwargs)


def validate(app: WebhookApp, document: Any) -> dict[str, Any]:
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    status, headers, out = call(app, "POST", "/validate", body)
    assert status == 200
    assert headers[b"content-type"] == b"application/json"
    answer: dict[str, Any] = json.loads(out)
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["kind"] == "AdmissionReview"
    assert isinstance(answer["response"]["allowed"], bool)
    return answer["response"]


# --- decisions ---------------------------------------------------------------------------------


def test_unchanged_guarded_state_is_admitted_without_asking_the_policy(key_dir: Path) -> None:
    policy = FakePolicy()
    app = make_app(key_dir, policy)
    # Image change and the same CPU spelled differently: the guarded state is equal.
    response = validate(app, review(deployment(), deployment(cpu="0.1", image="web:2")))
    assert response == {"uid": UID, "allowed": True}
    assert policy.inputs == []


def test_guarded_change_without_approval_is_denied_with_a_message_naming_sizeguard(
    key_dir: Path,
) -> None:
    policy = FakePolicy()
    app = make_app(key_dir, policy)
    response = validate(app, review(deployment(), deployment(cpu="150m")))
    assert response["allowed"] is False
    assert response["uid"] == UID
    assert response["status"]["code"] == 403
    message = response["status"]["message"]
    assert message.startswith("sizeguard: ")
    assert "container web: CPU request: 100m → 150m (+50%)" in message
    assert response["warnings"] == ["sizeguard: a warning"]
    (sent,) = policy.inputs
    assert sent["approval"] == {
        "present": False,
        "valid": False,
        "error": "missing",
        "claims": None,
    }
    assert sent["request"] == {
        "uid": UID,
        "operation": "UPDATE",
        "user": "bob",
        "groups": ["system:authenticated"],
        "kind": "Deployment",
        "namespace": "shop",
        "name": "web",
        "subresource": "",
        "dry_run": False,
    }
    assert sent["before"]["containers"]["web"]["cpu_request"] == 100
    assert sent["after"]["containers"]["web"]["cpu_request"] == 150
    assert sent["context"] == {"labels": {"app": "web"}, "namespace_labels": {}}


def test_valid_approval_is_verified_and_passed_to_the_policy(
    key_dir: Path, key: SigningKey
) -> None:
    policy = FakePolicy()
    app = make_app(key_dir, policy)
    old, new = deployment(), deployment(cpu="150m")
    response = validate(app, review(old, approve(key, old, new)))
    assert response == {"uid": UID, "allowed": True}
    approval = policy.inputs[0]["approval"]
    assert approval["valid"] is True and approval["claims"]["sub"] == "alice@example.com"
    text = app.metrics.render().decode()
    assert (
        'sizeguard_webhook_requests_total{decision="allowed",dry_run="false",reason="approved"} 1.0'
        in text
    )
    assert 'sizeguard_webhook_approval_checks_total{code="ok"} 1.0' in text


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda old, new, key: approve(generate_signing_key(), old, new), "unknown_key"),
        (
            lambda old, new, key: approve(key, old, new, now=time.time() - 1000),
            "expired",
        ),
        (lambda old, new, key: approve(key, old, deployment(cpu="151m")), "to_mismatch"),
        (
            lambda old, new, key: approve(
                key, deployment(uid="00000000-0000-4000-8000-000000000009"), new
            ),
            "wrong_uid",
        ),
    ],
)
def test_invalid_approvals_are_denied_with_the_verifier_message(
    key_dir: Path, key: SigningKey, mutate: Any, code: str
) -> None:
    policy = FakePolicy()
    app = make_app(key_dir, policy)
    old, new = deployment(), deployment(cpu="150m")
    carried = mutate(old, new, key)
    # The new object must be the change being made, with whatever approval it carries.
    carried["spec"] = new["spec"]
    response = validate(app, review(old, carried))
    assert response["allowed"] is False
    assert policy.inputs[0]["approval"]["error"] == code
    assert "approval check:" in response["status"]["message"]


def test_token_never_appears_in_logs(key_dir: Path, key: SigningKey) -> None:
    old, new = deployment(), deployment(cpu="150m")
    approved = approve(key, old, new)
    token = approved["metadata"]["annotations"][APPROVAL_ANNOTATION]
    with structlog.testing.capture_logs() as logs:
        validate(make_app(key_dir), review(old, approved))
    (event,) = [e for e in logs if e["event"] == "admission.decision"]
    assert event["approval"] == "ok" and event["approval_jti"]
    assert token not in json.dumps(logs, default=str)
    for field in ("uid", "kind", "namespace", "name", "user", "operation", "dry_run", "reason"):
        assert field in event


def test_dry_run_warning_is_passed_through_on_one_line(key_dir: Path) -> None:
    response = validate(
        make_app(key_dir), review(deployment(), deployment(cpu="150m"), dry_run=True)
    )
    assert response["allowed"] is True
    assert response["warnings"] == ["sizeguard: dry run admitted second line"]


def test_scale_subresource_passes_replicas_only_and_no_approval(key_dir: Path) -> None:
    policy = FakePolicy()
    response = validate(make_app(key_dir, policy), review(scale(3), scale(5), sub_resource="scale"))
    assert response["allowed"] is False
    (sent,) = policy.inputs
    assert sent["request"]["kind"] == "Deployment"
    assert sent["request"]["subresource"] == "scale"
    assert sent["before"]["replicas"] == 3 and sent["after"]["replicas"] == 5
    assert sent["before"]["containers"] == {}
    assert sent["approval"]["present"] is False


def test_scale_without_replicas_means_zero(key_dir: Path) -> None:
    policy = FakePolicy()
    zero = scale(0)
    del zero["spec"]["replicas"]
    response = validate(make_app(key_dir, policy), review(scale(0), zero, sub_resource="scale"))
    assert response["allowed"] is True and policy.inputs == []


@pytest.mark.parametrize("operation", ["CREATE", "DELETE", "CONNECT"])
def test_other_operations_are_admitted(key_dir: Path, operation: str) -> None:
    policy = FakePolicy()
    response = validate(
        make_app(key_dir, policy), review(None, deployment(cpu="9"), operation=operation)
    )
    assert response == {"uid": UID, "allowed": True}
    assert policy.inputs == []


def test_pod_level_resources_are_denied(key_dir: Path) -> None:
    new = deployment()
    new["spec"]["template"]["spec"]["resources"] = {"requests": {"cpu": "4"}}
    response = validate(make_app(key_dir), review(deployment(), new))
    assert response["allowed"] is False
    assert "pod-level resources" in response["status"]["message"]
    assert response["status"]["message"].startswith("sizeguard: cannot check this update")


def test_object_of_another_kind_than_the_request_says_is_denied(key_dir: Path) -> None:
    new = deployment(cpu="150m")
    new["kind"] = "StatefulSet"
    response = validate(make_app(key_dir), review(deployment(), new))
    assert response["allowed"] is False and "as the request says" in response["status"]["message"]


def test_policy_unavailable_denies(key_dir: Path) -> None:
    app = make_app(key_dir, FakePolicy(error="no answer within 2s"))
    response = validate(app, review(deployment(), deployment(cpu="150m")))
    assert response["allowed"] is False
    assert "policy engine (OPA) is unavailable" in response["status"]["message"]
    assert 'decision="error",dry_run="false",reason="policy_unavailable"' in (
        app.metrics.render().decode()
    )


def test_an_exception_denies_and_does_not_escape(key_dir: Path) -> None:
    app = make_app(key_dir, FakePolicy(raises=True))
    response = validate(app, review(deployment(), deployment(cpu="150m")))
    assert response["allowed"] is False and response["uid"] == UID
    assert "internal error" in response["status"]["message"]


def test_a_slow_policy_is_bounded_by_the_client_timeout() -> None:
    # The real client: OPA at an address that never answers (a listening socket that does not
    # accept HTTP) -> the client's timeout -> deny.
    import socket

    from sizeguard.policy import AsyncPolicyClient

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]

        async def run() -> dict[str, Any]:
            client = AsyncPolicyClient(f"http://127.0.0.1:{port}", timeout=0.3)
            directory = Path(__file__).parent  # any path: keys are not needed for this request
            app = WebhookApp(jwks=JwksFile(directory / "missing.json"), policy=client)
            started = time.monotonic()
            body = json.dumps(review(deployment(), deployment(cpu="150m"))).encode()
            _, _, out = await acall(app, "POST", "/validate", body)
            assert time.monotonic() - started < 2
            await client.aclose()
            response: dict[str, Any] = json.loads(out)["response"]
            return response

        response = asyncio.run(run())
    assert response["allowed"] is False
    assert "no answer" in response["status"]["message"]


# --- HTTP surface ------------------------------------------------------------------------------


def test_malformed_body_gets_a_valid_review_with_the_uid(key_dir: Path) -> None:
    document = review(deployment(), deployment(cpu="150m"))
    document["request"]["operation"] = 7
    response = validate(make_app(key_dir), document)
    assert response["allowed"] is False and response["uid"] == UID
    assert "malformed AdmissionReview" in response["status"]["message"]


def test_not_json_gets_a_valid_review_without_uid(key_dir: Path) -> None:
    response = validate(make_app(key_dir), b"\xff{not json")
    assert response["allowed"] is False and response["uid"] == ""


def test_oversized_body_is_denied_without_reading_it(key_dir: Path) -> None:
    app = make_app(key_dir)
    headers = [(b"content-length", str(MAX_BODY_BYTES + 1).encode())]
    status, _, out = call(app, "POST", "/validate", b"{}", headers)
    assert status == 200 and json.loads(out)["response"]["allowed"] is False
    status, _, out = call(app, "POST", "/validate", b" " * (MAX_BODY_BYTES + 10), chunks=7)
    response = json.loads(out)["response"]
    assert status == 200 and response["allowed"] is False
    assert "larger than" in response["status"]["message"]


def test_body_in_chunks_is_read_whole(key_dir: Path) -> None:
    body = json.dumps(review(deployment(), deployment(image="x"))).encode()
    status, _, out = call(make_app(key_dir), "POST", "/validate", body, chunks=5)
    assert status == 200 and json.loads(out)["response"]["allowed"] is True


def test_routes(key_dir: Path) -> None:
    app = make_app(key_dir)
    assert call(app, "GET", "/healthz")[0] == 200
    assert call(app, "GET", "/validate")[0] == 405
    assert call(app, "GET", "/nope")[0] == 404
    status, headers, body = call(app, "GET", "/metrics")
    assert status == 200 and b"sizeguard_webhook_requests_total" in body
    assert headers[b"content-type"].startswith(b"text/plain")


def test_ready_only_with_keys_and_a_policy_answer(key_dir: Path, tmp_path: Path) -> None:
    assert call(make_app(key_dir), "GET", "/readyz")[0] == 200
    status, _, body = call(make_app(key_dir, FakePolicy(error="down")), "GET", "/readyz")
    assert status == 503 and b"OPA" in body
    no_keys = WebhookApp(jwks=JwksFile(tmp_path / "absent.json"), policy=FakePolicy())
    status, _, body = call(no_keys, "GET", "/readyz")
    assert status == 503 and b"no trusted keys" in body


def test_without_keys_approvals_cannot_verify_and_unapproved_changes_stay_denied(
    tmp_path: Path, key: SigningKey
) -> None:
    policy = FakePolicy()
    app = WebhookApp(jwks=JwksFile(tmp_path / "absent.json"), policy=policy)
    old, new = deployment(), deployment(cpu="150m")
    assert validate(app, review(old, new))["allowed"] is False
    assert validate(app, review(old, approve(key, old, new)))["allowed"] is False
    assert [i["approval"]["error"] for i in policy.inputs] == ["missing", "unknown_key"]


# --- JWKS reload -------------------------------------------------------------------------------


def test_jwks_reload_on_change_and_keep_last_good_keys(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    first, second = generate_signing_key(), generate_signing_key()
    path.write_text(json.dumps({"keys": [public_jwk(first.public_key)]}))
    clock = [0.0]
    results: list[bool] = []
    jwks = JwksFile(path, min_interval=1.0, clock=lambda: clock[0], on_reload=results.append)
    current = jwks.current()
    assert current is not None and current.kids == (first.kid,)
    path.write_text(
        json.dumps({"keys": [public_jwk(second.public_key), public_jwk(first.public_key)]})
    )
    assert jwks.current().kids == (first.kid,)  # type: ignore[union-attr]  # within 1 s
    clock[0] = 1.5
    assert jwks.current().kids == (second.kid, first.kid)  # type: ignore[union-attr]
    path.write_text("{broken")
    clock[0] = 3.0
    assert jwks.current().kids == (second.kid, first.kid)  # type: ignore[union-attr]
    assert jwks.last_error is not None
    path.unlink()
    clock[0] = 4.5
    assert jwks.current() is not None  # within the grace period (a file being rewritten)
    clock[0] = 14.0
    assert jwks.current() is None  # past it: trust nothing rather than a stale key
    assert results == [True, True, False, False, False]


def test_an_empty_jwks_revokes_every_key_at_once(tmp_path: Path) -> None:
    """Emptying the JWKS is how an operator revokes a compromised key: it must take effect
    without a restart, and the webhook must then trust nothing."""
    path = tmp_path / "jwks.json"
    key = generate_signing_key()
    path.write_text(json.dumps({"keys": [public_jwk(key.public_key)]}))
    clock = [0.0]
    jwks = JwksFile(path, min_interval=1.0, clock=lambda: clock[0])
    assert jwks.current() is not None
    path.write_text(json.dumps({"keys": []}))
    clock[0] = 1.5
    assert jwks.current() is None
    assert jwks.last_error is not None and "no keys" in jwks.last_error
    path.write_text(json.dumps({"keys": [public_jwk(key.public_key)]}))
    clock[0] = 3.0
    assert jwks.current() is not None


def test_metrics_registry_is_per_app() -> None:
    assert Metrics().registry is not Metrics().registry


def test_a_client_that_disconnects_mid_body_gets_no_answer_and_no_error(key_dir: Path) -> None:
    app = make_app(key_dir)
    sent: list[dict[str, Any]] = []
    messages = [
        {"type": "http.request", "body": b'{"apiVersion"', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/validate", "headers": []}
    asyncio.run(app(scope, receive, send))
    assert sent == []


def test_the_command_refuses_a_bad_certificate_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sizeguard.cli import main

    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_text("not a certificate")
    key.write_text("not a key")
    code = main(
        ["webhook", "--tls-cert", str(cert), "--tls-key", str(key), "--jwks", str(tmp_path / "j")]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("sizeguard: cannot load the TLS certificate/key") and err.count("\n") == 1


def test_an_approval_used_before_is_refused_once_the_object_changed(
    key_dir: Path, key: SigningKey
) -> None:
    # HPAs have no metadata.generation, so the contract cannot stop this replay; the webhook's
    # memory of admitted approvals does (here with Deployments without a generation).
    policy = FakePolicy()
    app = make_app(key_dir, policy)
    a, b = deployment(), deployment(cpu="150m")
    forth = review(a, approve(key, a, b))
    assert validate(app, forth)["allowed"] is True
    # The API server re-running admission after a write conflict: admitted again.
    assert validate(app, forth)["allowed"] is True
    # Applied, then rolled back with another approval ...
    assert validate(app, review(b, approve(key, b, a)))["allowed"] is True
    # ... and the first approval presented again for the same transition: a replay.
    response = validate(app, forth)
    assert response["allowed"] is False
    assert policy.inputs[-1]["approval"]["error"] == "replayed"
    assert (
        "was already used on this object, which has changed since"
        in (response["status"]["message"])
    )
    assert 'sizeguard_webhook_approval_checks_total{code="replayed"} 1.0' in (
        app.metrics.render().decode()
    )


def test_dry_runs_do_not_use_up_an_approval(key_dir: Path, key: SigningKey) -> None:
    app = make_app(key_dir)
    a, b = deployment(), deployment(cpu="150m")
    token_review = review(a, approve(key, a, b))
    other = review(a, approve(key, a, deployment(cpu="120m")), dry_run=True)
    assert validate(app, other)["allowed"] is True  # a dry run of another change on the object
    assert validate(app, token_review)["allowed"] is True


def test_seen_approvals_expire_and_are_bounded() -> None:
    from sizeguard.webhook.app import SeenApprovals

    seen = SeenApprovals(max_entries=2)
    seen.admitted("u", "a", expires=100.0)
    assert seen.admissible("a", "u", now=50.0)  # still the last change on u
    seen.admitted("u", None, expires=0.0)  # another change (break-glass, no approval)
    assert not seen.admissible("a", "u", now=50.0)
    assert seen.admissible("a", "u", now=101.0)  # expired: forgotten (and the token too)
    for jti in ("b", "c", "d"):
        seen.admitted("v", jti, expires=1000.0)
    seen.admitted("v", None, expires=0.0)
    assert seen.admissible("b", "v", now=0.0)  # evicted (oldest)
    assert not seen.admissible("d", "v", now=0.0)


def test_lone_surrogates_in_the_request_cannot_break_the_answer(key_dir: Path) -> None:
    document = review(deployment(), deployment(cpu="150m"))
    text = (
        json.dumps(document)
        .replace(UID, "\\ud800-uid")
        .replace('"name": "web"', '"name": "w\\udfff"')
    )
    status, _, out = call(make_app(key_dir), "POST", "/validate", text.encode())
    assert status == 200
    response = json.loads(out)["response"]
    assert response["uid"] == "\ud800-uid" and response["allowed"] is False
