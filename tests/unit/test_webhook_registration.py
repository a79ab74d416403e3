"""What reaches the webhook: the generated rules and matchConditions, the chart's copy of
them, and the sandbox's configuration built from them. (That the API server compiles the
conditions and sends what they say is tested against the real one in
tests/integration/test_webhook.py and test_chart.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sizeguard.changes import FOOTPRINT_PATHS
from sizeguard.sandbox import webhook_setup
from sizeguard.webhook import registration

REPO = Path(__file__).resolve().parents[2]


def _expressions() -> dict[str, str]:
    return {spec.name: spec.expression for spec in registration.WEBHOOKS}


def test_the_chart_file_is_what_the_generator_gives() -> None:
    committed = (REPO / registration.CHART_FILE).read_text(encoding="utf-8")
    assert committed == registration.chart_text(), (
        "charts/sizeguard/files/webhooks.json is out of date: run "
        "`.venv/bin/python -m sizeguard.webhook.registration --write`"
    )
    assert json.loads(committed)["webhooks"] == [s.entry() for s in registration.WEBHOOKS]


def test_the_check_mode_says_whether_the_file_is_current(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "webhooks.json"
    assert registration.main(["--check", "--file", str(target)]) == 1
    assert registration.main(["--write", "--file", str(target)]) == 0
    assert registration.main(["--check", "--file", str(target)]) == 0
    target.write_text("{}")
    assert registration.main(["--check", "--file", str(target)]) == 1
    assert "out of date" in capsys.readouterr().err


def test_the_webhooks_cover_the_spec_table() -> None:
    rules = {
        spec.name: (spec.group, spec.version, spec.resources, spec.operations)
        for spec in registration.WEBHOOKS
    }
    lifecycle = ("CREATE", "UPDATE", "DELETE")
    assert rules == {
        "workloads": ("apps", "v1", ("deployments", "statefulsets", "daemonsets"), lifecycle),
        "replicasets": ("apps", "v1", ("replicasets",), lifecycle),
        "scale": (
            "apps",
            "v1",
            ("deployments/scale", "statefulsets/scale", "replicasets/scale"),
            ("UPDATE",),
        ),
        "hpa": ("autoscaling", "v2", ("horizontalpodautoscalers",), lifecycle),
        "resize": ("", "v1", ("pods/resize",), ("UPDATE",)),
        "limitranges": ("", "v1", ("limitranges",), lifecycle),
    }


@pytest.mark.parametrize(
    ("webhook", "kinds"),
    [
        ("workloads", ["Deployment", "StatefulSet", "DaemonSet"]),
        ("replicasets", ["ReplicaSet"]),
        ("hpa", ["HorizontalPodAutoscaler"]),
        ("resize", ["Pod"]),
    ],
)
def test_every_footprint_path_is_compared(webhook: str, kinds: list[str]) -> None:
    expression = _expressions()[webhook]
    for kind in kinds:
        for path in FOOTPRINT_PATHS[kind]:
            chain = "".join(f".?{part}" for part in path.removesuffix("[]").split("."))
            assert f"object{chain}" in expression and f"oldObject{chain}" in expression, path
    assert expression.startswith("object == null || oldObject == null || ")


def test_containers_are_compared_by_name_resources_and_restart_policy() -> None:
    expression = _expressions()["workloads"]
    element = "[c.?name.orValue(''), c.?resources.orValue({}), c.?restartPolicy.orValue('')]"
    assert (
        f"object.?spec.?template.?spec.?initContainers.orValue([]).map(c, {element}) != "
        f"oldObject.?spec.?template.?spec.?initContainers.orValue([]).map(c, {element})"
    ) in expression
    assert (
        "object.?spec.?strategy.orValue({}) != oldObject.?spec.?strategy.orValue({})" in expression
    )
    # An absent count reads as -1: it differs from every real value (only ever sends more).
    assert "object.?spec.?replicas.orValue(-1) != oldObject.?spec.?replicas.orValue(-1)" in (
        expression
    )


def test_a_replicasets_labels_owners_and_replicas_are_compared() -> None:
    # Labels and the controller ownerReference tie a ReplicaSet to its Deployment; its replicas
    # are compared whoever owns it (its controller does not always put back someone else's).
    expression = _expressions()["replicasets"]
    assert "object.?metadata.?labels.orValue({}) != oldObject.?metadata.?labels.orValue({})" in (
        expression
    )
    assert (
        "object.?metadata.?ownerReferences.orValue([]) != "
        "oldObject.?metadata.?ownerReferences.orValue([])"
    ) in expression
    assert "object.?spec.?replicas.orValue(-1) != oldObject.?spec.?replicas.orValue(-1)" in (
        expression
    )
    assert "spec.?template.?spec.?resourceClaims.orValue([])" in expression
    assert "spec.?template.?spec.?terminationGracePeriodSeconds.orValue(-1)" in expression
    assert "labels" not in _expressions()["workloads"]


def test_a_path_of_unknown_type_is_refused() -> None:
    with pytest.raises(ValueError, match="no CEL type known"):
        registration.condition(["spec.template.spec.nodeSelector"])
    assert registration.condition(["spec.replicas"], lifecycle=False) == (
        "object.?spec.?replicas.orValue(-1) != oldObject.?spec.?replicas.orValue(-1)"
    )


def test_the_sandbox_configuration_uses_the_generated_webhooks() -> None:
    config = webhook_setup.configuration("https://127.0.0.1:1/validate", b"ca")
    assert config["metadata"]["name"] == "sizeguard"
    hooks = config["webhooks"]
    assert [h["name"] for h in hooks] == [
        "workloads.sizeguard.io",
        "replicasets.sizeguard.io",
        "scale.sizeguard.io",
        "hpa.sizeguard.io",
        "resize.sizeguard.io",
        "limitranges.sizeguard.io",
    ]
    for hook, spec in zip(hooks, registration.WEBHOOKS, strict=True):
        entry = spec.entry()
        assert hook["rules"] == entry["rules"]
        assert hook["matchConditions"] == entry["matchConditions"]
        assert hook["failurePolicy"] == "Fail" and hook["timeoutSeconds"] == 5
        assert hook["sideEffects"] == "None" and hook["matchPolicy"] == "Equivalent"
        assert hook["clientConfig"] == {"url": "https://127.0.0.1:1/validate", "caBundle": "Y2E="}
        assert hook["namespaceSelector"] == {
            "matchExpressions": [
                {
                    "key": "kubernetes.io/metadata.name",
                    "operator": "NotIn",
                    "values": ["kube-system", "kube-public", "kube-node-lease"],
                }
            ]
        }
    private = webhook_setup.configuration(
        "https://x/validate", b"ca", name="it-1", extra_namespace_labels={"a": "b"}
    )
    assert private["webhooks"][0]["name"] == "it-1.workloads.sizeguard.io"
    assert private["webhooks"][0]["namespaceSelector"]["matchLabels"] == {"a": "b"}
