"""The Helm chart: lint, render every option, dry-run every manifest against the real
apiserver, and install it into a sandbox whose release webhook then rejects an unapproved
patch."""

from __future__ import annotations

import base64
import copy
import json
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from sizeguard.approvals import init_key_dir
from sizeguard.sandbox import lifecycle, processes, tools, webhook_setup
from sizeguard.sandbox.kube import KubeClient
from sizeguard.sandbox.state import SandboxState

from .conftest import Sandbox
from .helpers import eventually

CHART = Path(__file__).resolve().parents[2] / "charts" / "sizeguard"
RELEASE = "sg"
NAMESPACE = "sizeguard-system"
ASSISTANT = "system:serviceaccount:chart-it:assistant"
MCP_SERVICE = f"{RELEASE}-sizeguard-mcp"

OPTIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "cert-manager": {"tls": {"certManager": {"enabled": True}}},
    "cert-manager-issuer": {
        "tls": {
            "certManager": {"enabled": True, "issuerRef": {"name": "ca", "kind": "ClusterIssuer"}}
        }
    },
    "service-monitor": {"serviceMonitor": {"enabled": True}},
    "prometheus-rule": {"prometheusRule": {"enabled": True}},
    "network-policy": {"networkPolicy": {"enabled": True, "apiServerCIDRs": ["10.0.0.0/8"]}},
    "mcp-server": {"mcpServer": {"enabled": True, "auth": {"allowedSubjects": [ASSISTANT]}}},
    "mcp-server-ledger-claim": {
        "mcpServer": {
            "enabled": True,
            "ledgerClaim": "sizeguard-ledger",
            "auth": {"allowedSubjects": [ASSISTANT]},
        }
    },
    "mcp-server-oidc": {
        "mcpServer": {
            "enabled": True,
            "auth": {
                "allowedSubjects": ["user:*@example.com"],
                "jwksUri": "https://idp.example.com/.well-known/jwks.json",
                "issuer": "https://idp.example.com",
                "algorithm": "ES256",
            },
            "allowedHosts": ["sizeguard.example.com"],
            "allowedOrigins": ["https://ai.example.com"],
        }
    },
    "inline-jwks": {"jwks": {"existingSecret": "", "inline": '{"keys": []}'}},
    "required-anti-affinity": {"webhook": {"antiAffinity": "required", "extraSANs": ["127.0.0.1"]}},
}


def helm(*args: str, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
    binary = tools.require("helm")["helm"]
    argv = [str(binary), *args]
    if kubeconfig is not None:
        argv += ["--kubeconfig", str(kubeconfig)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def kubectl(
    kubeconfig: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    binary = tools.require("kubectl")["kubectl"]
    return subprocess.run(
        [str(binary), "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
        check=False,
    )


def render(tmp_path: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    values_file = tmp_path / "values.json"
    values_file.write_text(json.dumps(values))
    result = helm("template", RELEASE, str(CHART), "-n", NAMESPACE, "-f", str(values_file))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_lint_strict_is_clean() -> None:
    result = helm("lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_each_option_renders(option: str, tmp_path: Path) -> None:
    kinds = {doc["kind"] for doc in render(tmp_path, OPTIONS[option])}
    assert {
        "Deployment",
        "Service",
        "ValidatingWebhookConfiguration",
        "ConfigMap",
        "ClusterRole",
        "ClusterRoleBinding",
    } <= kinds
    expected = {
        "cert-manager": {"Certificate", "Issuer"},
        "service-monitor": {"ServiceMonitor"},
        "prometheus-rule": {"PrometheusRule"},
        "network-policy": {"NetworkPolicy"},
        "mcp-server": {"ClusterRole", "ClusterRoleBinding"},
        "mcp-server-ledger-claim": {"ClusterRole", "ClusterRoleBinding"},
        "mcp-server-oidc": {"ClusterRole", "ClusterRoleBinding"},
        "inline-jwks": {"Secret"},
    }.get(option, set())
    assert expected <= kinds
    if option == "cert-manager-issuer":
        assert "Issuer" not in kinds


def test_bad_values_are_refused(tmp_path: Path) -> None:
    for values, message in (
        ({"webhook": {"timeoutSeconds": 10}}, "timeoutSeconds"),
        ({"jwks": {"existingSecret": "", "inline": ""}}, "jwks.existingSecret"),
        ({"jwks": {"existingSecret": "", "inline": "not json"}}, "JSON object"),
        ({"webhook": {"failurePolicy": "Maybe"}}, "failurePolicy"),
        ({"mcpServer": {"enabled": True}}, "mcpServer.auth.allowedSubjects"),
        (
            {"mcpServer": {"enabled": True, "auth": {"allowedSubjects": ["*"]}}},
            "allowedSubjects",
        ),
        (
            {
                "mcpServer": {
                    "enabled": True,
                    "auth": {"allowedSubjects": [ASSISTANT], "jwksUri": "https://idp/jwks"},
                }
            },
            "mcpServer.auth.issuer",
        ),
        ({"mcpServer": {"allowedHosts": ["*"]}}, "allowedHosts"),
        ({"mcpServer": {"allowedOrigins": ["*"]}}, "allowedOrigins"),
        ({"mcpServer": {"auth": {"noAuth": True}}}, "noAuth"),
        # browsers use passkeys over plain http on localhost only
        ({"mcpServer": {"approvalPage": {"url": "http://approvals.example.com"}}}, "url"),
        ({"mcpServer": {"approvalPage": {"port": 80}}}, "port"),
    ):
        values_file = tmp_path / "bad.json"
        values_file.write_text(json.dumps(values))
        result = helm("template", RELEASE, str(CHART), "-f", str(values_file))
        assert result.returncode != 0 and message in result.stderr, (values, result.stderr)


def test_the_webhook_pod_is_locked_down(tmp_path: Path) -> None:
    docs = render(tmp_path, {})
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] >= 2
    # No token for every container: the webhook container alone gets one (Namespace watch).
    assert pod["automountServiceAccountToken"] is False
    (access,) = [v for v in pod["volumes"] if v["name"] == "kube-api-access"]
    sources = access["projected"]["sources"]
    assert sources[0]["serviceAccountToken"]["path"] == "token"
    token_path = "/var/run/secrets/kubernetes.io/serviceaccount"
    mounts = {c["name"]: {m["mountPath"] for m in c["volumeMounts"]} for c in pod["containers"]}
    assert token_path in mounts["webhook"] and token_path not in mounts["opa"]
    webhook = next(c for c in pod["containers"] if c["name"] == "webhook")
    assert not any(a.startswith("--kubeconfig") for a in webhook["args"])  # in-cluster
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "podAntiAffinity" in pod["affinity"]
    assert pod["priorityClassName"]
    for container in pod["containers"]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["resources"]["requests"] and container["resources"]["limits"]
    opa = next(c for c in pod["containers"] if c["name"] == "opa")
    assert "--addr=127.0.0.1:8181" in opa["args"]  # OPA's API never leaves the pod
    assert "--skip-version-check" in opa["args"]
    assert any(d["kind"] == "PodDisruptionBudget" for d in docs)
    policies = next(d for d in docs if d["kind"] == "ConfigMap")
    # data.json and every policy file (flattened by name), tests left out.
    shipped = {p.name for p in (CHART / "policies").rglob("*.rego")}
    expected = {"data.json"} | {n for n in shipped if not n.endswith("_test.rego")}
    assert set(policies["data"]) == expected
    assert {"lib.rego", "changeset.rego", "admission.rego"} <= expected


def test_the_webhook_may_read_namespaces_and_nothing_else(tmp_path: Path) -> None:
    docs = render(tmp_path, {})
    (role,) = [
        d
        for d in docs
        if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "sg-sizeguard-webhook-namespaces"
    ]
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]}
    ]
    (binding,) = [
        d
        for d in docs
        if d["kind"] == "ClusterRoleBinding"
        and d["metadata"]["name"] == "sg-sizeguard-webhook-namespaces"
    ]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "sg-sizeguard-webhook", "namespace": NAMESPACE}
    ]


def _mcp(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == MCP_SERVICE]
    return doc


def mcp_args(tmp_path: Path, option: str = "mcp-server") -> list[str]:
    pod = _mcp(render(tmp_path, OPTIONS[option]), "Deployment")["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "mcp-server"]
    args: list[str] = container["args"]
    return args


def test_the_mcp_server_has_no_unauthenticated_port(tmp_path: Path) -> None:
    docs = render(tmp_path, OPTIONS["mcp-server"])
    pod = _mcp(docs, "Deployment")["spec"]["template"]["spec"]
    (server,) = [c for c in pod["containers"] if c["name"] == "mcp-server"]
    args = server["args"]
    assert "--no-auth" not in args
    assert "--jwt-kubernetes" in args and f"--jwt-subject={ASSISTANT}" in args
    assert "--jwt-audience=sizeguard" in args
    for name in (
        MCP_SERVICE,
        f"{MCP_SERVICE}.{NAMESPACE}",
        f"{MCP_SERVICE}.{NAMESPACE}.svc",
        f"{MCP_SERVICE}.{NAMESPACE}.svc.cluster.local",
    ):
        assert f"--allowed-host={name}" in args
    assert not any(a.startswith("--allowed-origin") for a in args)
    # two ports: the MCP endpoint (authenticated) and the approval page (every decision needs
    # an enrolled approver's passkey), and the Service exposes only them (the OPA sidecar
    # listens on 127.0.0.1 and has no containerPort)
    assert [p["name"] for p in server["ports"]] == ["http", "approval"]
    assert all("ports" not in c for c in pod["containers"] if c["name"] != "mcp-server")
    service = _mcp(docs, "Service")
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        (8000, "http"),
        (8765, "approval"),
    ]
    assert "--approval-url=http://localhost:8765" in args
    page_off = copy.deepcopy(OPTIONS["mcp-server"])
    page_off["mcpServer"]["approvalPage"] = {"enabled": False}
    pod = _mcp(render(tmp_path, page_off), "Deployment")["spec"]["template"]["spec"]
    (server,) = [c for c in pod["containers"] if c["name"] == "mcp-server"]
    assert "--no-approval-page" in server["args"]
    assert [p["name"] for p in server["ports"]] == ["http"]
    # the server may read its cluster's service-account issuer, to verify callers' tokens
    role = _mcp(docs, "ClusterRole")
    assert {
        "nonResourceURLs": ["/.well-known/openid-configuration", "/openid/v1/jwks"],
        "verbs": ["get"],
    } in role["rules"]


def test_the_mcp_server_can_use_another_issuer(tmp_path: Path) -> None:
    args = mcp_args(tmp_path, "mcp-server-oidc")
    assert "--jwt-kubernetes" not in args
    for arg in (
        "--jwt-jwks-uri=https://idp.example.com/.well-known/jwks.json",
        "--jwt-issuer=https://idp.example.com",
        "--jwt-algorithm=ES256",
        "--jwt-subject=user:*@example.com",
        "--allowed-host=sizeguard.example.com",
        "--allowed-origin=https://ai.example.com",
    ):
        assert arg in args
    role = _mcp(render(tmp_path, OPTIONS["mcp-server-oidc"]), "ClusterRole")
    assert not any("nonResourceURLs" in rule for rule in role["rules"])


def test_the_charts_mcp_server_arguments_admit_only_the_allowed_service_account(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """The chart's server, as the chart starts it (its flags; paths and port of this
    machine), against the sandbox's API server as its cluster: a TokenRequest token of the
    allowed ServiceAccount for audience sizeguard is admitted through the Service's names,
    anything else is refused."""
    from .test_http_access import post, serve, service_account_token, with_session

    local = ("serve", "--transport", "--host", "--port", "--key-dir", "--ledger", "--opa-url")
    local += ("--approval-host", "--approval-port", "--approval-url")  # a pod's, not loopback
    args = [a for a in mcp_args(tmp_path) if not a.startswith(local)] + ["--approval-port=0"]
    args = [a for a in args if not a.startswith("--prometheus-url")]
    namespace, name = ASSISTANT.split(":")[2:]
    sandbox.kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    good = service_account_token(sandbox, name, "sizeguard", namespace=namespace)
    stranger = service_account_token(sandbox, "stranger", "sizeguard", namespace=namespace)
    with serve(sandbox, tmp_path / "serve", *args) as server:
        for token in (None, stranger, good + "x"):
            headers = {} if token is None else {"Authorization": f"Bearer {token}"}
            assert post(server, headers).status_code == 401
        bearer = {"Authorization": f"Bearer {good}"}
        for host in (f"{MCP_SERVICE}.{NAMESPACE}.svc:8000", f"{MCP_SERVICE}.{NAMESPACE}"):
            assert post(server, {**bearer, "Host": host}).status_code == 200, host
        assert post(server, {**bearer, "Host": "sizeguard.evil.example"}).status_code == 421

        async def report(session: Any) -> Any:
            return await session.call_tool("get_safety_report", {})

        result = with_session(server, report, token=good)
        assert not result.is_error
        actors = {e.actor for e in server.audit() if e.event == "tool.get_safety_report"}
        assert actors == {f"jwt:{ASSISTANT}"}


def test_the_network_policy_lets_the_webhook_reach_the_api_server_only(tmp_path: Path) -> None:
    (policy,) = [
        d for d in render(tmp_path, OPTIONS["network-policy"]) if d["kind"] == "NetworkPolicy"
    ]
    assert policy["spec"]["egress"] == [
        {
            "ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}],
            "to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}],
        }
    ]


def test_the_chart_registers_what_the_sandbox_registers(tmp_path: Path) -> None:
    """One set of rules and match conditions (files/webhooks.json, generated by
    sizeguard.webhook.registration): the chart's and the sandbox's must not drift."""
    chart = next(d for d in render(tmp_path, {}) if d["kind"] == "ValidatingWebhookConfiguration")
    sandbox = webhook_setup.configuration("https://127.0.0.1:1/validate", b"ca")
    keys = (
        "rules",
        "failurePolicy",
        "matchPolicy",
        "sideEffects",
        "timeoutSeconds",
        "admissionReviewVersions",
        "matchConditions",
    )
    assert len(chart["webhooks"]) == len(sandbox["webhooks"]) == 6
    for ours, theirs in zip(chart["webhooks"], sandbox["webhooks"], strict=True):
        assert {k: ours[k] for k in keys} == {k: theirs[k] for k in keys}
        assert ours["timeoutSeconds"] <= 5 and ours["failurePolicy"] == "Fail"
        excluded = ours["namespaceSelector"]["matchExpressions"][0]
        assert excluded["key"] == "kubernetes.io/metadata.name" and excluded["operator"] == "NotIn"
        assert {"kube-system", NAMESPACE} <= set(excluded["values"])


@pytest.fixture(scope="module")
def crds(sandbox: Sandbox) -> Path:
    """The real CRDs of the optional cert-manager and Prometheus-operator objects (pinned by
    scripts/install-tools), so their dry runs check the fields against the real schemas."""
    manifests = sorted(tools.crds_dir().glob("*.yaml"))
    kinds = {yaml.safe_load(m.read_text())["spec"]["names"]["kind"] for m in manifests}
    assert kinds == {"Certificate", "Issuer", "ServiceMonitor", "PrometheusRule"}, (
        "missing CRDs: run scripts/install-tools"
    )
    for manifest in manifests:
        result = kubectl(sandbox.kubeconfig, "apply", "--server-side", "-f", str(manifest))
        assert result.returncode == 0, result.stderr
    names = [yaml.safe_load(m.read_text())["metadata"]["name"] for m in manifests]
    for name in names:
        kubectl(sandbox.kubeconfig, "wait", "--for=condition=Established", f"crd/{name}")
    sandbox.kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    return sandbox.kubeconfig


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_every_rendered_manifest_passes_a_server_side_dry_run(
    option: str, crds: Path, tmp_path: Path
) -> None:
    docs = render(tmp_path, OPTIONS[option])
    manifest = "\n---\n".join(yaml.safe_dump(d) for d in docs)
    result = kubectl(crds, "apply", "--dry-run=server", "-n", NAMESPACE, "-f", "-", stdin=manifest)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(server dry run)") == len(docs)


# What the alerts are for, as promtool unit tests: synthetic series in, alerts out.
_JOB = 'job="sg-sizeguard-webhook", namespace="sizeguard-system"'
_EXPIRY = "sizeguard_webhook_tls_certificate_expiry_timestamp_seconds"
_ALERT_TESTS: dict[str, Any] = {
    "evaluation_interval": "1m",
    "tests": [
        {
            "name": "a healthy webhook raises nothing",
            "interval": "1m",
            "input_series": [
                {"series": f"up{{{_JOB}}}", "values": "1x30"},
                {"series": f"sizeguard_webhook_jwks_keys{{{_JOB}}}", "values": "2x30"},
                {
                    "series": "sizeguard_webhook_requests_total"
                    f'{{{_JOB}, decision="allowed", reason="approved", dry_run="false"}}',
                    "values": "0+5x30",
                },
                {
                    "series": f"{_EXPIRY}{{{_JOB}}}",
                    "values": str(90 * 86400) + "x30",
                },
            ],
            "alert_rule_test": [
                {"eval_time": "30m", "alertname": name, "exp_alerts": []}
                for name in (
                    "SizeguardWebhookDown",
                    "SizeguardWebhookErrors",
                    "SizeguardWebhookOverloaded",
                    "SizeguardWebhookNoTrustedKeys",
                    "SizeguardCertificateExpiresSoon",
                )
            ],
        },
        {
            "name": "an overloaded webhook is not an erroring one",
            "interval": "1m",
            "input_series": [
                {"series": f"up{{{_JOB}}}", "values": "1x30"},
                {
                    "series": "sizeguard_webhook_requests_total"
                    f'{{{_JOB}, decision="error", reason="overloaded", dry_run="false"}}',
                    "values": "0+40x30",
                },
            ],
            "alert_rule_test": [
                {
                    "eval_time": "30m",
                    "alertname": "SizeguardWebhookOverloaded",
                    "exp_alerts": [{"exp_labels": {"severity": "warning"}}],
                },
                {"eval_time": "30m", "alertname": "SizeguardWebhookErrors", "exp_alerts": []},
            ],
        },
        {
            "name": "a broken webhook raises each of its alerts",
            "interval": "1m",
            "input_series": [
                {"series": f"up{{{_JOB}}}", "values": "0x30"},
                {"series": f"sizeguard_webhook_jwks_keys{{{_JOB}}}", "values": "0x30"},
                {
                    "series": "sizeguard_webhook_requests_total"
                    f'{{{_JOB}, decision="error", reason="policy_unavailable", dry_run="false"}}',
                    "values": "0+3x30",
                },
                {
                    "series": f"{_EXPIRY}{{{_JOB}}}",
                    "values": str(5 * 86400) + "x30",
                },
                {
                    "series": f'sizeguard_webhook_jwks_reloads_total{{{_JOB}, result="failed"}}',
                    "values": "0 0 0 0 0 0 0 0 0 0 1x20",
                },
            ],
            "alert_rule_test": [
                {
                    "eval_time": "30m",
                    "alertname": name,
                    "exp_alerts": [{"exp_labels": {"severity": severity}}],
                }
                for name, severity in (
                    ("SizeguardWebhookDown", "critical"),
                    ("SizeguardWebhookErrors", "critical"),
                    ("SizeguardWebhookNoTrustedKeys", "critical"),
                    ("SizeguardCertificateExpiresSoon", "warning"),
                )
            ]
            + [
                {
                    "eval_time": "15m",
                    "alertname": "SizeguardKeysReloadFailed",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "severity": "warning",
                                "job": "sg-sizeguard-webhook",
                                "namespace": "sizeguard-system",
                                "result": "failed",
                            }
                        }
                    ],
                }
            ],
        },
    ],
}


def test_the_alert_rules_pass_promtool_and_fire_when_they_should(tmp_path: Path) -> None:
    (rule,) = [
        d for d in render(tmp_path, OPTIONS["prometheus-rule"]) if d["kind"] == "PrometheusRule"
    ]
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    promtool = str(tools.require("promtool")["promtool"])
    checked = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 8 rules found" in checked.stdout
    # promtool compares annotations too: expect each alert's own (rendered) annotations.
    annotations = {r["alert"]: r["annotations"] for r in rule["spec"]["groups"][0]["rules"]}
    tests = copy.deepcopy(_ALERT_TESTS)
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            for alert in check["exp_alerts"]:
                alert["exp_annotations"] = annotations[check["alertname"]]
    cases = tmp_path / "alerts_test.yaml"
    cases.write_text(yaml.safe_dump({"rule_files": [str(rules)], **tests}))
    tested = subprocess.run(
        [promtool, "test", "rules", str(cases)], capture_output=True, text=True, check=False
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


@pytest.fixture(scope="module")
def bare_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxState]:
    """A sandbox of its own, without the sandbox's webhook: the release's is the only one."""
    directory = tmp_path_factory.mktemp("chart-sandbox")
    state = lifecycle.up(lifecycle.UpOptions(directory=directory, history_days=1), report=print)
    try:
        yield state
    finally:
        lifecycle.down(directory, report=print)


def test_helm_install_then_the_release_webhook_rejects_an_unapproved_patch(
    bare_sandbox: SandboxState, tmp_path: Path
) -> None:
    kubeconfig = Path(bare_sandbox.info["kubeconfig"])
    kube = KubeClient(kubeconfig)
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    init_key_dir(tmp_path / "keys")
    created = kubectl(
        kubeconfig,
        "-n",
        NAMESPACE,
        "create",
        "secret",
        "generic",
        "sizeguard-jwks",
        f"--from-file=jwks.json={tmp_path / 'keys' / 'jwks.json'}",
    )
    assert created.returncode == 0, created.stderr

    installed = helm(
        "install",
        RELEASE,
        str(CHART),
        "-n",
        NAMESPACE,
        "--set",
        "webhook.extraSANs={127.0.0.1}",
        kubeconfig=kubeconfig,
    )
    assert installed.returncode == 0, installed.stderr
    assert "Emergency switch-off" in installed.stdout  # NOTES.txt
    for kind in ("deployment", "service", "configmap", "secret", "poddisruptionbudget"):
        listed = kubectl(
            kubeconfig,
            "-n",
            NAMESPACE,
            "get",
            kind,
            "-l",
            f"app.kubernetes.io/instance={RELEASE}",
            "-o",
            "name",
        )
        assert listed.stdout.strip(), f"no {kind} from the release"

    # The release's TLS material and the JWKS it trusts, as files for a local webhook.
    secret = kube.http.get(
        f"/api/v1/namespaces/{NAMESPACE}/secrets/{RELEASE}-sizeguard-webhook-tls"
    ).json()
    for key in ("tls.crt", "tls.key", "ca.crt"):
        (tmp_path / key).write_bytes(base64.b64decode(secret["data"][key]))
    # The release's ServiceAccount with nothing but the chart's RBAC: the local webhook
    # watches Namespaces with a token of it, as the pod does in the cluster.
    account = f"system:serviceaccount:{NAMESPACE}:{RELEASE}-sizeguard-webhook"
    for verb, resource, expected in (
        ("watch", "namespaces", "yes"),
        ("list", "namespaces", "yes"),
        ("list", "pods", "no"),
        ("get", "secrets", "no"),
        ("patch", "namespaces", "no"),
    ):
        answer = kubectl(kubeconfig, "auth", "can-i", verb, resource, f"--as={account}")
        assert answer.stdout.strip() == expected, (verb, resource, answer.stdout, answer.stderr)
    token = kubectl(kubeconfig, "-n", NAMESPACE, "create", "token", f"{RELEASE}-sizeguard-webhook")
    assert token.returncode == 0, token.stderr
    account_kubeconfig = tmp_path / "webhook.kubeconfig"
    account_kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "sandbox",
                        "cluster": {
                            "server": bare_sandbox.urls["kubernetes"],
                            "certificate-authority": bare_sandbox.info["ca"],
                        },
                    }
                ],
                "users": [{"name": "webhook", "user": {"token": token.stdout.strip()}}],
                "contexts": [{"name": "c", "context": {"cluster": "sandbox", "user": "webhook"}}],
                "current-context": "c",
            }
        )
    )
    port = processes.free_port()
    webhook = processes.start(
        "webhook",
        [
            sys.executable,
            "-m",
            "sizeguard.cli",
            "webhook",
            "--tls-cert",
            str(tmp_path / "tls.crt"),
            "--tls-key",
            str(tmp_path / "tls.key"),
            "--jwks",
            str(tmp_path / "keys" / "jwks.json"),
            "--opa-url",
            bare_sandbox.urls["opa"],
            "--port",
            str(port),
            "--kubeconfig",
            str(account_kubeconfig),
        ],
        tmp_path / "webhook.log",
    )
    try:
        ca = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        processes.wait_until(
            webhook,
            lambda: (
                httpx.get(f"https://127.0.0.1:{port}/readyz", verify=ca, timeout=2).status_code
                == 200
            ),
            timeout=30,
            what="ready",
        )
        # Point the release's own registration at the local process.
        name = f"{RELEASE}-sizeguard"
        config = kube.http.get(
            f"/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{name}"
        ).json()
        patch = [
            {
                "op": "replace",
                "path": f"/webhooks/{i}/clientConfig",
                "value": {
                    "url": f"https://127.0.0.1:{port}/validate",
                    "caBundle": hook["clientConfig"]["caBundle"],
                },
            }
            for i, hook in enumerate(config["webhooks"])
        ]
        patched = kubectl(
            kubeconfig,
            "patch",
            "validatingwebhookconfiguration",
            name,
            "--type=json",
            "-p",
            json.dumps(patch),
        )
        assert patched.returncode == 0, patched.stderr

        def rejected() -> subprocess.CompletedProcess[str] | None:
            result = kubectl(
                kubeconfig,
                "-n",
                "shop-prod",
                "set",
                "resources",
                "deployment/web",
                "--requests=cpu=123m",
            )
            return result if result.returncode != 0 else None

        result = eventually(rejected, timeout=30, what="the release webhook to reject")
        assert f"{name}.workloads.sizeguard.io" in result.stderr
        assert "sizeguard" in result.stderr and "approval" in result.stderr
        live = kube.http.get("/apis/apps/v1/namespaces/shop-prod/deployments/web").json()
        assert (
            live["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]
            == "250m"
        )
        # An update that leaves the guarded fields alone goes through.
        labelled = kubectl(
            kubeconfig, "-n", "shop-prod", "label", "deployment/web", "chart-test=yes"
        )
        assert labelled.returncode == 0, labelled.stderr
        ready = httpx.get(f"https://127.0.0.1:{port}/readyz", verify=ca, timeout=5).text
        assert "namespaces watched" in ready, ready
        # A new HPA is a change of the footprint too (spec section 4: needs an approval).
        hpa = {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "chart-test", "namespace": "shop-staging"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 5,
                "maxReplicas": 9,
            },
        }
        created = kubectl(kubeconfig, "create", "-f", "-", stdin=json.dumps(hpa))
        assert created.returncode != 0, created.stdout
        assert f'admission webhook "{name}.hpa.sizeguard.io" denied the request' in created.stderr
        assert "sizeguard" in created.stderr
    finally:
        processes.stop(webhook)
        kube.close()
    assert helm("uninstall", RELEASE, "-n", NAMESPACE, kubeconfig=kubeconfig).returncode == 0
