"""OPA on loopback: the sandbox's, and the private ones that tests and benchmarks start."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx

from sizeguard.sandbox import processes, tools
from sizeguard.sandbox.processes import Component

__all__ = ["opa_argv", "running_opa"]


def opa_argv(binary: Path, port: int, policies: Path, *, watch: bool = False) -> list[str]:
    """``opa run --server`` on 127.0.0.1:``port`` over ``policies`` (tests left out)."""
    return [
        str(binary),
        "run",
        "--server",
        # No outbound version check: nothing here talks to anything but 127.0.0.1.
        "--skip-version-check",
        "--addr",
        f"127.0.0.1:{port}",
        *(["--watch"] if watch else []),
        "--ignore",
        "*_test.rego",
        "--log-format",
        "json",
        "--log-level",
        "error",
        str(policies),
    ]


@contextlib.contextmanager
def running_opa(policies: Path, work: Path, *, timeout: float = 30.0) -> Iterator[Component]:
    """A private OPA over ``policies`` on a free port, healthy when yielded (its ``url`` set),
    stopped on exit. Its log is ``work/opa.log``."""
    port = processes.free_port()
    binary = tools.require("opa")["opa"]
    component = processes.start("opa", opa_argv(binary, port, policies), work / "opa.log", cwd=work)
    component.url = f"http://127.0.0.1:{port}"
    try:
        processes.wait_until(
            component,
            lambda: httpx.get(f"{component.url}/health", timeout=1).status_code == 200,
            timeout=timeout,
            what="healthy",
        )
        yield component
    finally:
        processes.stop(component)
