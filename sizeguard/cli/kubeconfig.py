"""Which kubeconfig a command uses when a person does not say."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["kubeconfig_path"]


def kubeconfig_path(flag: Path | str | None) -> Path | None:
    """``--kubeconfig``, else the first file of ``KUBECONFIG``, else ``~/.kube/config`` if it
    exists; None when there is none."""
    if flag is not None:
        return Path(flag)
    env = os.environ.get("KUBECONFIG")
    if env:
        return Path(env.split(os.pathsep)[0])
    default = Path.home() / ".kube" / "config"
    return default if default.exists() else None
