"""Fuzzing the running webhook over TLS: mutated and random AdmissionReview bodies sent to the
sandbox's real webhook process (uvicorn, TLS, the real OPA). The unit fuzzer checks 12,000
bodies in process; these 10,000 show that the same holds through the server's HTTP layer:
every body gets HTTP 200 and a valid AdmissionReview, and the process stays healthy. With the
real policy, in a production namespace, nothing that changes a footprint is admitted without
a valid approval (dry runs aside)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import httpx

from sizeguard.approvals import TrustedKeys, load_signing_key
from sizeguard.sandbox import webhook_setup

from ..unit.test_webhook_fuzz import check_answer, fuzz_bases, fuzz_body
from .conftest import Sandbox
from .test_webhook import ensure_namespace, webhook_info

CASES = 10_000
SEED = 20261130


def test_fuzzed_reviews_over_tls_get_valid_answers_and_no_5xx(sandbox: Sandbox) -> None:
    info = webhook_info(sandbox)
    # The namespace of the fuzz bases, production by label: there the real policy admits no
    # change of a footprint without a valid approval (creates and deletes included), which is
    # what check_answer verifies of every admitted request.
    ensure_namespace(sandbox, "shop", {"environment": "production"})
    labelled = sandbox.kube.http.patch(
        "/api/v1/namespaces/shop",
        content=json.dumps({"metadata": {"labels": {"environment": "production"}}}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert labelled.status_code == 200, labelled.text
    keys = Path(info["keys"])
    trusted = TrustedKeys.from_file(keys / "jwks.json")
    bases = fuzz_bases(load_signing_key(keys))
    rng = random.Random(SEED)
    url = info["url"]
    base = url.rsplit("/", 1)[0]
    counts = {"allowed": 0, "denied": 0}
    context = webhook_setup.ca_context(Path(info["cert"]).parent / "ca.crt")
    with httpx.Client(verify=context, timeout=10) as client:
        for case in range(CASES):
            raw = fuzz_body(rng, case, bases)
            response = client.post(url, content=raw, headers={"content-type": "application/json"})
            assert response.status_code == 200, (case, response.status_code, raw[:200])
            allowed = check_answer(case, raw, response.content, trusted)
            counts["allowed" if allowed else "denied"] += 1
        assert client.get(f"{base}/healthz").status_code == 200
        assert client.get(f"{base}/readyz").status_code == 200
    assert counts["allowed"] > 20 and counts["denied"] > 20, counts
