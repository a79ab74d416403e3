"""What reaches the webhook: the webhook entries of sizeguard's ValidatingWebhookConfiguration.

One set of rules and ``matchConditions``, built here and used twice: by the sandbox
(:mod:`sizeguard.sandbox.webhook_setup`, with a ``url``) and by the Helm chart, which reads the
rendered entries from ``charts/sizeguard/files/webhooks.json`` (with a ``service``). A unit
test checks that the committed file is what :func:`chart_document` gives; regenerate it with::

    .venv/bin/python -m sizeguard.webhook.registration --write

The conditions are built from :data:`sizeguard.changes.FOOTPRINT_PATHS`, the paths
:func:`~sizeguard.changes.guarded_state` reads, so that the API server sends every request that
may change a footprint (they over-approximate: any difference in one of those subtrees sends
it, and the webhook decides) and keeps the rest (labels, images, annotations, the controllers'
own writes) away from the webhook. ReplicaSets are the one kind whose labels and
ownerReferences are compared too: they decide which Deployment a ReplicaSet belongs to (see
:data:`REPLICA_SET_OWNERSHIP`). Their replicas are compared whoever owns them: a Deployment's
controller does not always put back a count someone else wrote (two active ReplicaSets of a
paused Deployment, say), so the policy admits replica writes of a Deployment's ReplicaSet only
from its controllers. A condition that fails to evaluate falls to ``failurePolicy: Fail``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from sizeguard.changes import FOOTPRINT_PATHS, HPA_KIND

__all__ = [
    "CHART_FILE",
    "CONDITION_NAME",
    "REPLICA_SET_OWNERSHIP",
    "SYSTEM_NAMESPACES",
    "TIMEOUT_SECONDS",
    "WEBHOOKS",
    "WebhookSpec",
    "chart_document",
    "condition",
    "webhook_entries",
]

CONDITION_NAME: Final = "footprint-may-change"
TIMEOUT_SECONDS: Final = 5
SYSTEM_NAMESPACES: Final = ("kube-system", "kube-public", "kube-node-lease")
CHART_FILE: Final = Path("charts/sizeguard/files/webhooks.json")
WORKLOAD_KINDS: Final = ("Deployment", "StatefulSet", "DaemonSet")
REPLICA_SET_OWNERSHIP: Final = ("metadata.labels", "metadata.ownerReferences")
"""What ties a ReplicaSet to the Deployment that owns it: a Deployment claims the ReplicaSets
its selector matches (labels) and controls the one whose controller ownerReference names it.
Changing either can make a Deployment let its ReplicaSet go and start another one."""

# The CEL value an absent field is read as. A default no real value can take (-1 for a count)
# makes "absent" differ from every value, which only ever sends more requests to the webhook.
# A path whose last segment is not listed here cannot be compared: generating refuses it, so a
# path added to FOOTPRINT_PATHS must be given its type here too.
_ABSENT: Final[dict[str, str]] = {
    "replicas": "-1",
    "minReplicas": "-1",
    "maxReplicas": "-1",
    "minReadySeconds": "-1",
    "progressDeadlineSeconds": "-1",
    "terminationGracePeriodSeconds": "-1",
    "strategy": "{}",
    "updateStrategy": "{}",
    "resources": "{}",
    "scaleTargetRef": "{}",
    "runtimeClassName": "''",
    "limits": "[]",
    "resourceClaims": "[]",
    "labels": "{}",
    "ownerReferences": "[]",
}
# A "containers[]" path: compare each element's name, resources and restartPolicy, in order.
_ELEMENT: Final = "[c.?name.orValue(''), c.?resources.orValue({}), c.?restartPolicy.orValue('')]"


def _optional_path(root: str, path: str) -> str:
    return root + "".join(f".?{part}" for part in path.split("."))


def _comparison(path: str) -> str:
    """``object.<path> != oldObject.<path>``, null-safe at every step."""
    if path.endswith("[]"):
        path = path.removesuffix("[]")
        read = f".orValue([]).map(c, {_ELEMENT})"
    else:
        leaf = path.rsplit(".", 1)[-1]
        if leaf not in _ABSENT:
            raise ValueError(f"registration: no CEL type known for the footprint path {path!r}")
        read = f".orValue({_ABSENT[leaf]})"
    new = _optional_path("object", path) + read
    old = _optional_path("oldObject", path) + read
    return f"{new} != {old}"


def _unique(paths: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for path in paths:
        if path not in seen:
            seen.append(path)
    return seen


def condition(paths: Iterable[str], *, lifecycle: bool = True) -> str:
    """A CEL expression true when the request may change one of ``paths``. With
    ``lifecycle``, also for every CREATE and DELETE (``object`` or ``oldObject`` is null)."""
    terms = ["object == null || oldObject == null"] if lifecycle else []
    terms += [_comparison(path) for path in _unique(paths)]
    if not terms:
        raise ValueError("registration: a condition needs at least one path")
    return " || ".join(terms)


class WebhookSpec:
    """One webhook: its name (before ``.sizeguard.io``), rules and match condition."""

    def __init__(
        self,
        name: str,
        group: str,
        version: str,
        resources: Sequence[str],
        operations: Sequence[str],
        expression: str,
    ) -> None:
        self.name = name
        self.group = group
        self.version = version
        self.resources = tuple(resources)
        self.operations = tuple(operations)
        self.expression = expression

    def entry(self) -> dict[str, Any]:
        """The parts of the webhook every installation shares: rules and matchConditions."""
        return {
            "name": self.name,
            "rules": [
                {
                    "apiGroups": [self.group],
                    "apiVersions": [self.version],
                    "operations": list(self.operations),
                    "resources": list(self.resources),
                    "scope": "Namespaced",
                }
            ],
            "matchConditions": [{"name": CONDITION_NAME, "expression": self.expression}],
        }


_LIFECYCLE: Final = ("CREATE", "UPDATE", "DELETE")

WEBHOOKS: Final = (
    WebhookSpec(
        "workloads",
        "apps",
        "v1",
        ["deployments", "statefulsets", "daemonsets"],
        _LIFECYCLE,
        condition(path for kind in WORKLOAD_KINDS for path in FOOTPRINT_PATHS[kind]),
    ),
    WebhookSpec(
        "replicasets",
        "apps",
        "v1",
        ["replicasets"],
        _LIFECYCLE,
        condition([*FOOTPRINT_PATHS["ReplicaSet"], *REPLICA_SET_OWNERSHIP]),
    ),
    WebhookSpec(
        "scale",
        "apps",
        "v1",
        ["deployments/scale", "statefulsets/scale", "replicasets/scale"],
        ["UPDATE"],
        condition(["spec.replicas"]),
    ),
    WebhookSpec(
        "hpa",
        "autoscaling",
        "v2",
        ["horizontalpodautoscalers"],
        _LIFECYCLE,
        condition(FOOTPRINT_PATHS[HPA_KIND]),
    ),
    WebhookSpec(
        "resize",
        "",
        "v1",
        ["pods/resize"],
        ["UPDATE"],
        condition(FOOTPRINT_PATHS["Pod"]),
    ),
    WebhookSpec(
        "limitranges",
        "",
        "v1",
        ["limitranges"],
        _LIFECYCLE,
        condition(["spec.limits"]),
    ),
)
"""The webhooks, in registration order (docs/webhook.md, "Registration")."""


def namespace_selector(
    excluded: Sequence[str] = SYSTEM_NAMESPACES, match_labels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Every namespace but ``excluded`` (by the immutable ``kubernetes.io/metadata.name``)."""
    selector: dict[str, Any] = {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": list(excluded)}
        ]
    }
    if match_labels:
        selector["matchLabels"] = dict(match_labels)
    return selector


def webhook_entries(
    client_config: Mapping[str, Any],
    *,
    prefix: str = "",
    namespace_selector: Mapping[str, Any],
    timeout_seconds: int = TIMEOUT_SECONDS,
    failure_policy: str = "Fail",
) -> list[dict[str, Any]]:
    """The complete ``webhooks`` list of a ValidatingWebhookConfiguration."""
    entries = []
    for spec in WEBHOOKS:
        entry = spec.entry()
        entries.append(
            {
                "name": f"{prefix}{entry['name']}.sizeguard.io",
                "clientConfig": dict(client_config),
                "rules": entry["rules"],
                "failurePolicy": failure_policy,
                "matchPolicy": "Equivalent",
                "sideEffects": "None",
                "timeoutSeconds": timeout_seconds,
                "admissionReviewVersions": ["v1"],
                "namespaceSelector": dict(namespace_selector),
                "matchConditions": entry["matchConditions"],
            }
        )
    return entries


def chart_document() -> dict[str, Any]:
    """What ``charts/sizeguard/files/webhooks.json`` holds (the chart adds the rest)."""
    return {
        "_comment": (
            "Generated by `python -m sizeguard.webhook.registration --write` from "
            "sizeguard/webhook/registration.py; do not edit by hand."
        ),
        "webhooks": [spec.entry() for spec in WEBHOOKS],
    }


def chart_text() -> str:
    return json.dumps(chart_document(), indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sizeguard.webhook.registration",
        description="Print, write or check the chart's webhook entries (files/webhooks.json).",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write the file")
    mode.add_argument("--check", action="store_true", help="exit 1 if the file differs")
    parser.add_argument("--file", type=Path, default=CHART_FILE, help=f"default: {CHART_FILE}")
    args = parser.parse_args(argv)
    text = chart_text()
    if args.write:
        args.file.write_text(text, encoding="utf-8")
        print(f"wrote {args.file}")
        return 0
    if args.check:
        try:
            current = args.file.read_text(encoding="utf-8")
        except OSError as exc:
            print(f"cannot read {args.file}: {exc.strerror}", file=sys.stderr)
            return 1
        if current != text:
            print(f"{args.file} is out of date: run with --write", file=sys.stderr)
            return 1
        print(f"{args.file} is up to date")
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
