"""The webhook under more load than it may take (issue 17): a webhook process started with the
sandbox webhook's own command line (certificate, keys, OPA, kubeconfig) and a tiny bound on
decisions in flight is flooded over TLS with approved and unapproved changes at once. Some
answers must be the fast overload deny, none may admit an unapproved change, every request
gets a valid AdmissionReview, and right after the flood the webhook answers normally again.
With two worker processes the same holds. Connections past the webhook's bound wait, and a
stalled TLS handshake gives its slot back. These assert behaviour, not timings."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sizeguard.approvals import load_signing_key, mint_approval
from sizeguard.changes import guarded_state, target_of
from sizeguard.sandbox import processes, webhook_setup
from sizeguard.sandbox.processes import Component

from .conftest import Sandbox
from .test_webhook import webhook_info

NAMESPACE = "shop-staging"  # in the sandbox's estate: the webhook's watch knows it
FLOOD = 120


def deployment(cpu: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "flood",
            "namespace": NAMESPACE,
            "uid": "0b6a1e8e-0000-4000-8000-0000000000f1",
            "resourceVersion": "7",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"app": "flood"},
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "flood"}},
            "template": {
                "metadata": {"labels": {"app": "flood"}},
                "spec": {
                    "containers": [
                        {"name": "app", "image": "app:1", "resources": {"requests": {"cpu": cpu}}}
                    ]
                },
            },
        },
    }


def review(uid: str, old: dict[str, Any], new: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
                "name": "flood",
                "namespace": NAMESPACE,
                "operation": "UPDATE",
                "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
                "object": new,
                "oldObject": old,
                "dryRun": False,
            },
        }
    ).encode()


@pytest.fixture(scope="module", params=[1, 2], ids=["one-worker", "two-workers"])
def flooded(
    request: pytest.FixtureRequest, sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path, Component]]:
    info = webhook_info(sandbox)
    component = sandbox.state.component("webhook")
    assert component is not None
    argv = list(component.argv)
    port = processes.free_port()
    argv[argv.index("--port") + 1] = str(port)
    argv += ["--max-in-flight", "2", "--workers", str(request.param)]
    log = tmp_path_factory.mktemp("overload") / "webhook.log"
    ca = Path(sandbox.state.info["ca"])
    proc = processes.start("webhook-overload", argv, log, cwd=log.parent)
    base = f"https://127.0.0.1:{port}"
    try:
        webhook_setup.wait_ready(proc, base, ca)
        yield base, Path(info["keys"]), proc
    finally:
        processes.stop(proc)


def bodies(keys: Path) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """(approved, unapproved) reviews by uid."""
    old, new = deployment("100m"), deployment("150m")
    token = mint_approval(
        load_signing_key(keys),
        change_set_id="cs-00000000000000f100d0",
        op="apply",
        target=target_of(old),
        before=guarded_state(old),
        after=guarded_state(new),
        subject="flood@example.com",
        resource_version="7",
    )
    approved = copy.deepcopy(new)
    approved["metadata"]["annotations"] = {"sizeguard.io/approval": token}
    return (
        {f"a-{n:04d}": review(f"a-{n:04d}", old, approved) for n in range(FLOOD)},
        {f"u-{n:04d}": review(f"u-{n:04d}", old, new) for n in range(FLOOD)},
    )


async def flood(url: str, ca: Path, requests: dict[str, bytes]) -> dict[str, dict[str, Any]]:
    """Every request at once, each on a connection of its own (as the API server opens them
    under load); the answers by request uid."""
    context = webhook_setup.ca_context(ca)
    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=0)
    async with httpx.AsyncClient(verify=context, limits=limits, timeout=30) as http:

        async def one(body: bytes) -> dict[str, Any]:
            response = await http.post(f"{url}/validate?timeout=5s", content=body)
            assert response.status_code == 200, response.text
            answer: dict[str, Any] = response.json()
            assert answer["kind"] == "AdmissionReview", answer
            result: dict[str, Any] = answer["response"]
            return result

        answers = await asyncio.gather(*(one(body) for body in requests.values()))
    return dict(zip(requests, answers, strict=True))


def is_shed(response: dict[str, Any]) -> bool:
    message = response.get("status", {}).get("message", "")
    return not response["allowed"] and "the admission webhook is overloaded" in message


def test_a_flood_is_shed_with_fast_denies_never_wrong_and_recovers_at_once(
    flooded: tuple[str, Path, Component], sandbox: Sandbox
) -> None:
    base, keys, proc = flooded
    ca = Path(sandbox.state.info["ca"])
    approved, unapproved = bodies(keys)
    answers = asyncio.run(flood(base, ca, approved | unapproved))

    # Every answer is addressed to its request, and overload is a deny, never an allow.
    for uid, response in answers.items():
        assert response["uid"] == uid, (uid, response)
    shed = [uid for uid, response in answers.items() if is_shed(response)]
    assert shed, "a bound of 2 decisions in flight shed nothing of 240 requests at once"
    wrong = [uid for uid in unapproved if answers[uid]["allowed"]]
    assert not wrong, f"unapproved changes admitted under load: {wrong[:5]}"
    for uid in unapproved:
        assert answers[uid]["status"]["code"] == 403
    judged = [uid for uid in approved if not is_shed(answers[uid])]
    assert judged, "no approved change was judged at all"
    for uid in judged:
        assert answers[uid]["allowed"], answers[uid]
    assert not processes.exited(proc)

    # Right after the flood, requests are answered normally (nothing left to work off).
    context = webhook_setup.ca_context(ca)
    with httpx.Client(verify=context, timeout=10) as http:
        for uid, body in list(approved.items())[:10]:
            answer = http.post(f"{base}/validate?timeout=5s", content=body).json()["response"]
            assert answer["allowed"] is True and answer["uid"] == uid, answer
        for body in list(unapproved.values())[:5]:
            answer = http.post(f"{base}/validate?timeout=5s", content=body).json()["response"]
            assert answer["allowed"] is False and not is_shed(answer), answer
        assert http.get(f"{base}/readyz").status_code == 200


def test_sheds_are_counted_in_the_metrics(
    flooded: tuple[str, Path, Component], sandbox: Sandbox
) -> None:
    base, keys, _ = flooded
    ca = Path(sandbox.state.info["ca"])
    approved, _ = bodies(keys)
    answers = asyncio.run(flood(base, ca, approved))
    assert any(is_shed(response) for response in answers.values())
    series = (
        'sizeguard_webhook_requests_total{decision="error",dry_run="false",reason="overloaded"}'
    )
    # With workers, a scrape reads the worker that accepted it: look until one shows sheds.
    context = webhook_setup.ca_context(ca)
    deadline = time.monotonic() + 10
    seen = 0.0
    while time.monotonic() < deadline and not seen:
        with httpx.Client(verify=context, timeout=5) as http:
            text = http.get(f"{base}/metrics").text
        for line in text.splitlines():
            if line.startswith(series):
                seen = float(line.rsplit(" ", 1)[1])
        assert "sizeguard_webhook_max_in_flight 2.0" in text
    assert seen > 0


@pytest.fixture(scope="module")
def gated(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:
    """The sandbox's webhook command line with room for 16 connections."""
    component = sandbox.state.component("webhook")
    assert component is not None
    argv = list(component.argv)
    port = processes.free_port()
    argv[argv.index("--port") + 1] = str(port)
    argv += ["--max-connections", "16"]
    log = tmp_path_factory.mktemp("gated") / "webhook.log"
    proc = processes.start("webhook-gated", argv, log, cwd=log.parent)
    base = f"https://127.0.0.1:{port}"
    try:
        webhook_setup.wait_ready(proc, base, Path(sandbox.state.info["ca"]))
        yield port, base
    finally:
        processes.stop(proc)


def test_connections_past_the_bound_wait_and_a_stalled_handshake_gives_its_slot_back(
    gated: tuple[int, str], sandbox: Sandbox
) -> None:
    """16 connections that never start their TLS handshake take every slot: a 17th is not
    served (it waits in the accept queue, costing the webhook nothing) until the stalled
    handshakes time out (5 s) and the webhook closes them."""
    port, base = gated
    context = webhook_setup.ca_context(Path(sandbox.state.info["ca"]))
    stalled = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(16)]
    try:
        time.sleep(0.5)
        with (
            httpx.Client(verify=context, timeout=1.5) as http,
            pytest.raises(httpx.TimeoutException),
        ):
            http.get(f"{base}/readyz")
        deadline = time.monotonic() + 15
        served = False
        while not served and time.monotonic() < deadline:
            with (
                httpx.Client(verify=context, timeout=2) as http,
                contextlib.suppress(httpx.TimeoutException),
            ):
                served = http.get(f"{base}/readyz").status_code == 200
        assert served, "the slots of stalled handshakes were never given back"
        for conn in stalled:  # the webhook gave up on each of them
            assert conn.recv(1) == b""
    finally:
        for conn in stalled:
            conn.close()
