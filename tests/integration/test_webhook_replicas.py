"""Two webhook replicas behind one registration (issue 14): an approval is good for one write,
whichever replica sees the replay and however often the webhook restarts.

The chart runs two replicas behind one Service; here two processes started with the sandbox
webhook's own command line (same serving certificate, trusted keys, OPA and kubeconfig), on
ports of their own, stand in for them. The sandbox's ValidatingWebhookConfiguration is pointed
at one replica at a time (every webhook entry of it, keeping their paths), so that each request
reaches exactly one process, as it would through the Service; at the end it points back at the
sandbox's webhook. Each test checks from the replicas' request counters that the replay really
went to the replica it meant to.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from sizeguard.sandbox import processes, webhook_setup
from sizeguard.sandbox.processes import Component

from .conftest import Sandbox
from .redteam import (
    HPA_KIND,
    MERGE_PATCH,
    Stage,
    assert_unchanged,
    must_read,
    name_of,
    new,
    path_of,
    poll,
    refused,
    replay,
    replayable,
    round_trip,
    stage,
)

VWC = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"


@dataclass
class Replica:
    name: str
    argv: list[str]
    port: int
    ca: Path
    log: Path
    component: Component | None = field(default=None)

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.component = processes.start(self.name, self.argv, self.log, cwd=self.log.parent)
        webhook_setup.wait_ready(self.component, self.base, self.ca)

    def stop(self) -> None:
        if self.component is not None:
            processes.stop(self.component)
            self.component = None

    def restart(self) -> None:
        """Stop the process and start a new one on the same port (no memory survives)."""
        self.stop()
        self.start()

    def requests(self) -> float:
        return requests_served(self.base, self.ca)


def requests_served(base: str, ca: Path) -> float:
    """Admission requests a webhook process has answered (its /metrics)."""
    context = webhook_setup.ca_context(ca)
    text = httpx.get(f"{base}/metrics", verify=context, timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("sizeguard_webhook_requests_total{")
    )


def _with_port(argv: list[str], port: int) -> list[str]:
    changed = list(argv)
    index = changed.index("--port")
    changed[index + 1] = str(port)
    return changed


def _rebase(url: str, base: str) -> str:
    parts, new_base = urlsplit(url), urlsplit(base)
    return urlunsplit((new_base.scheme, new_base.netloc, parts.path, parts.query, ""))


@dataclass
class Pair:
    box: Sandbox
    st: Stage
    one: Replica
    two: Replica
    probe: dict[str, Any]
    original: dict[str, str]  # webhook name -> URL, as the sandbox registered it

    def point_at(self, replica: Replica) -> None:
        """Send every webhook of the registration to ``replica``; return once a request
        reaches it."""
        _register(
            self.box, {name: _rebase(url, replica.base) for name, url in self.original.items()}
        )
        _wait_served(self.box, self.st.dev, self.probe, replica.requests, replica.base)


def _register(box: Sandbox, urls: dict[str, str]) -> None:
    """Set the registration's webhook URLs (by webhook name)."""
    name = box.state.info["webhook"]["configuration"]
    for _ in range(20):
        config = box.kube.http.get(f"{VWC}/{name}")
        config.raise_for_status()
        body = config.json()
        for hook in body["webhooks"]:
            hook["clientConfig"]["url"] = urls.get(hook["name"], hook["clientConfig"]["url"])
        response = box.kube.http.put(f"{VWC}/{name}", json=body)
        if response.status_code != 409:
            response.raise_for_status()
            return
    raise AssertionError(f"could not update the registration {name}: conflicts kept coming")


def _wait_served(
    box: Sandbox, ns: str, probe: dict[str, Any], count: Callable[[], float], where: str
) -> None:
    """Send dry-run replica changes until ``count`` shows that one reached the webhook."""
    path = path_of("Deployment", ns, name_of(probe))
    body = json.dumps({"spec": {"replicas": probe["spec"]["replicas"] + 1}})

    def effective() -> bool:
        before = count()
        box.kube.http.patch(
            path, content=body, headers={"Content-Type": MERGE_PATCH}, params={"dryRun": "All"}
        )
        return count() > before

    assert poll(effective, 30, 0.2), f"the registration did not reach {where} in 30s"


@pytest.fixture(scope="module")
def pair(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    info = sandbox.state.info.get("webhook")
    component = sandbox.state.component("webhook")
    if not info or component is None:
        pytest.fail(
            "the sandbox runs without the webhook: start it with `sandbox up --with-webhook`"
        )
    directory = tmp_path_factory.mktemp("replicas")
    ca = Path(sandbox.state.info["ca"])
    replicas = [
        Replica(
            f"webhook-{n}",
            _with_port(component.argv, port := processes.free_port()),
            port,
            ca,
            directory / f"webhook-{n}.log",
        )
        for n in (1, 2)
    ]
    configuration = sandbox.kube.http.get(f"{VWC}/{info['configuration']}")
    configuration.raise_for_status()
    original = {h["name"]: h["clientConfig"]["url"] for h in configuration.json()["webhooks"]}
    sandbox_base = urlsplit(info["url"])._replace(path="").geturl()
    stages = stage(sandbox)
    st = next(stages)
    probe: dict[str, Any] = {}
    try:
        for replica in replicas:
            replica.start()
        probe = new(st, "Deployment", st.dev, "probe")
        yield Pair(sandbox, st, replicas[0], replicas[1], probe, dict(original))
    finally:
        try:
            _register(sandbox, original)
            if probe:
                _wait_served(
                    sandbox, st.dev, probe, lambda: requests_served(sandbox_base, ca), sandbox_base
                )
        finally:
            for replica in replicas:
                replica.stop()
            stages.close()


@pytest.mark.parametrize("kind", ["Deployment", HPA_KIND])
def test_an_approval_replayed_against_the_other_replica_is_refused(pair: Pair, kind: str) -> None:
    st = pair.st
    pair.point_at(pair.one)
    obj = replayable(st, kind, st.dev)
    token = round_trip(st, kind, obj)  # A→B and B→A, both through replica one
    before = must_read(st.box, kind, st.dev, name_of(obj))
    pair.point_at(pair.two)
    one, two = pair.one.requests(), pair.two.requests()
    refused(replay(st, kind, obj, token), "replayed against replica two")
    assert pair.two.requests() > two and pair.one.requests() == one, (
        "the replay did not reach replica two alone"
    )
    assert_unchanged(st.box, before)


@pytest.mark.parametrize("kind", ["Deployment", HPA_KIND])
def test_an_approval_replayed_after_a_webhook_restart_is_refused(pair: Pair, kind: str) -> None:
    st = pair.st
    pair.point_at(pair.one)
    obj = replayable(st, kind, st.dev)
    token = round_trip(st, kind, obj)
    before = must_read(st.box, kind, st.dev, name_of(obj))
    pair.one.restart()  # same port, same registration: a fresh process with no memory
    pair.point_at(pair.one)  # (a request reaches the new process)
    served = pair.one.requests()
    refused(replay(st, kind, obj, token), "replayed after a restart")
    assert pair.one.requests() > served, "the replay did not reach the restarted replica"
    assert_unchanged(st.box, before)


def test_both_replicas_admit_an_approved_change(pair: Pair) -> None:
    # The control: the replicas are real webhooks that admit what is approved (so the refusals
    # above are about the replay, not about a replica that refuses everything).
    st = pair.st
    for replica in (pair.one, pair.two):
        pair.point_at(replica)
        obj = replayable(st, "Deployment", st.dev)
        round_trip(st, "Deployment", obj)
