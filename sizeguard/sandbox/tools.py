"""Where the pinned binaries built by ``scripts/install-tools`` live."""

from __future__ import annotations

import os
from pathlib import Path

from sizeguard.errors import CommandError

REQUIRED = ("etcd", "kube-apiserver", "kube-controller-manager", "opa", "prometheus", "promtool")
OPTIONAL = ("kube-scheduler", "kwok", "kubectl")


def _base() -> Path:
    root = os.environ.get("SIZEGUARD_TOOLS")
    return Path(root) if root else Path.home() / ".cache" / "sizeguard" / "tools"


def tools_dir() -> Path:
    return _base() / "bin"


def crds_dir() -> Path:
    """The pinned CustomResourceDefinitions of the chart's optional objects (ServiceMonitor,
    PrometheusRule, Certificate, Issuer)."""
    return _base() / "crds"


def find(name: str) -> Path | None:
    path = tools_dir() / name
    if path.is_file() and os.access(path, os.X_OK):
        return path
    return None


def require(*names: str) -> dict[str, Path]:
    """Return the path of every named tool, or fail naming all that are missing."""
    found = {name: find(name) for name in names}
    missing = sorted(name for name, path in found.items() if path is None)
    if missing:
        raise CommandError(
            f"missing tool(s) {', '.join(missing)} in {tools_dir()}; run scripts/install-tools"
        )
    return {name: path for name, path in found.items() if path is not None}
