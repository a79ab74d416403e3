"""One real sandbox for the whole integration session, always torn down.

Set ``SIZEGUARD_TEST_SANDBOX_DIR`` to reuse a sandbox you started yourself with
``sizeguard sandbox up --dir DIR`` (it is then left running), and
``SIZEGUARD_TEST_OPA_URL`` to point the policy tests at an OPA of your own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sizeguard.sandbox import lifecycle
from sizeguard.sandbox.kube import KubeClient
from sizeguard.sandbox.state import SandboxState


@dataclass
class Sandbox:
    directory: Path
    state: SandboxState
    kube: KubeClient

    @property
    def kubeconfig(self) -> Path:
        return Path(self.state.info["kubeconfig"])

    @property
    def api_url(self) -> str:
        return self.state.urls["kubernetes"]

    @property
    def prometheus_url(self) -> str:
        return self.state.urls["prometheus"]

    @property
    def opa_url(self) -> str:
        return self.state.urls["opa"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    reuse = os.environ.get("SIZEGUARD_TEST_SANDBOX_DIR")
    if reuse:
        state = SandboxState.load(Path(reuse).resolve())
        assert state is not None, f"no sandbox in {reuse}"
        kube = KubeClient(Path(state.info["kubeconfig"]))
        yield Sandbox(Path(reuse), state, kube)
        kube.close()
        return
    directory = tmp_path_factory.mktemp("sandbox")
    state = lifecycle.up(lifecycle.UpOptions(directory=directory, webhook=True), report=print)
    kube = KubeClient(Path(state.info["kubeconfig"]))
    try:
        yield Sandbox(directory, state, kube)
    finally:
        kube.close()
        lifecycle.down(directory, report=print)


@pytest.fixture(scope="session")
def opa_url(request: pytest.FixtureRequest) -> str:
    explicit = os.environ.get("SIZEGUARD_TEST_OPA_URL")
    if explicit:
        return explicit
    box: Sandbox = request.getfixturevalue("sandbox")
    return box.opa_url
