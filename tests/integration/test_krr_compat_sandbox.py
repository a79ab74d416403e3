"""`sizeguard scan` against the sandbox: its reports are krr v1.29 reports (held to
``tests/unit/krr_model``), with krr's warnings for workloads Prometheus has no data for, and
its exit status tells the truth (a dead Prometheus, an unknown namespace, partial data).

The workloads without data live in a namespace of their own (``krr-compat``), created here
and deleted afterwards, so the estate the other tests read is left as it is."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastmcp import Client

from sizeguard.recommend.results import NO_PODS_TEXT
from sizeguard.server.app import build_app

from ..unit.krr_model import ResourceScan, Result, formatter_problems, krr_score
from .conftest import Sandbox
from .helpers import eventually
from .test_mcp_server import sandbox_service
from .test_webhook import create, delete, ensure_namespace, path_of, workload_manifest

NS = "krr-compat"
NO_PODS, NO_CPU, NO_MEMORY = (
    "NoPrometheusPods",
    "NoPrometheusCPUMetrics",
    "NoPrometheusMemoryMetrics",
)


def scan_cli(
    sandbox: Sandbox, *args: str, prometheus: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KUBECONFIG": str(sandbox.kubeconfig),
        "PROMETHEUS_URL": prometheus or sandbox.prometheus_url,
        "OPA_URL": sandbox.opa_url,  # the replica plans' availability floors
    }
    return subprocess.run(
        [sys.executable, "-m", "sizeguard.cli", "scan", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def as_krr(document: Any) -> Result:
    """The document as krr's ``Result.parse_obj`` reads it, and what its formatters need."""
    report = Result.model_validate(document)
    assert formatter_problems(report) == []
    assert document["score"] == krr_score(report)
    return report


@pytest.fixture(scope="module")
def without_data(sandbox: Sandbox) -> Iterator[None]:
    """``krr-compat/unseen``: one live pod Prometheus never saw; ``krr-compat/idle``: none."""
    ensure_namespace(sandbox, NS, {"environment": "test"})
    manifests = [
        workload_manifest("Deployment", NS, "unseen", replicas=1),
        workload_manifest("Deployment", NS, "idle", replicas=0),
    ]
    for manifest in manifests:
        create(sandbox, manifest)

    def unseen_pod_is_live() -> bool:
        pods = sandbox.kube.http.get(
            f"/api/v1/namespaces/{NS}/pods",
            params={"labelSelector": "app.kubernetes.io/name=unseen"},
        ).json()["items"]
        return any(not p["metadata"].get("deletionTimestamp") for p in pods)

    eventually(unseen_pod_is_live, what="the pod of krr-compat/unseen")
    yield
    for manifest in manifests:
        delete(sandbox, path_of("Deployment", NS, manifest["metadata"]["name"]))


def test_json_and_yaml_of_the_estate_are_krr_reports(sandbox: Sandbox, tmp_path: Path) -> None:
    for fmt in ("json", "yaml"):
        out = tmp_path / f"report.{fmt}"
        result = scan_cli(sandbox, "--format", fmt, "--output", str(out))
        assert result.returncode == 0, result.stderr
        document = json.loads(out.read_text()) if fmt == "json" else yaml.safe_load(out.read_text())
        report = as_krr(document)
        assert len(report.scans) >= 15
        assert {s.object.kind for s in report.scans} == {"Deployment", "StatefulSet", "DaemonSet"}
        assert any(s.object.hpa is not None for s in report.scans)
        assert any(s.recommended.info["cpu"] for s in report.scans)  # "?" values with reasons


def test_workloads_without_data_get_krrs_warnings_and_are_named(
    sandbox: Sandbox, without_data: None
) -> None:
    result = scan_cli(sandbox, "-n", NS, "--format", "json")
    assert result.returncode == 0, result.stderr
    report = as_krr(json.loads(result.stdout))
    warnings = {s.object.name: s.object.warnings for s in report.scans}
    assert warnings == {"unseen": {NO_PODS, NO_CPU, NO_MEMORY}, "idle": {NO_CPU, NO_MEMORY}}
    unseen = next(s for s in report.scans if s.object.name == "unseen")
    assert [p.deleted for p in unseen.object.pods] == [False]  # the API server's live pod
    assert "2 of 2 workloads lack data in Prometheus" in result.stderr
    assert "Deployment krr-compat/unseen (Prometheus lists none of its pods" in result.stderr
    assert f"Deployment krr-compat/idle ({NO_PODS_TEXT})" in result.stderr


def test_the_mcp_scans_are_krr_scans(sandbox: Sandbox, tmp_path: Path) -> None:
    """``scan_recommendations`` returns krr scans (``to_krr``). It lists only scans at least
    GOOD, so the workloads without data (UNKNOWN) are held to krr's model in the CLI test above
    and in tests/unit/test_krr_schema.py."""
    with sandbox_service(sandbox, tmp_path / "ledger.db") as service:

        async def go() -> list[dict[str, Any]]:
            async with Client(build_app(service)) as client:
                answer = await client.call_tool(
                    "scan_recommendations",
                    {"filter": {"namespaces": ["shop-prod", "data"], "min_severity": "GOOD"}},
                )
                scans: list[dict[str, Any]] = answer.structured_content["scans"]
                return scans

        scans = asyncio.run(go())
    parsed = [ResourceScan.model_validate(s) for s in scans]
    assert {s.object.namespace for s in parsed} == {"shop-prod", "data"}
    assert any(s.object.hpa is not None for s in parsed)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_a_dead_prometheus_fails_and_names_the_cause(sandbox: Sandbox) -> None:
    dead = f"http://127.0.0.1:{_closed_port()}"
    result = scan_cli(sandbox, "-n", "shop-prod", "--format", "json", prometheus=dead)
    assert result.returncode == 1
    assert result.stdout == ""  # no report of "?" that reads like one
    said = [line for line in result.stderr.splitlines() if line.startswith("sizeguard: ")]
    assert len(said) == 1 and said[0].startswith(
        "sizeguard: Prometheus gave no data for any workload, so there is no report: "
        f"cannot reach Prometheus at {dead}"
    ), result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_namespace_fails_and_says_so(sandbox: Sandbox) -> None:
    result = scan_cli(sandbox, "-n", "shop-prod", "-n", "no-such-namespace", "--format", "json")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"sizeguard: the cluster of {sandbox.kubeconfig} has no namespace no-such-namespace; "
        "nothing was scanned\n"
    )
