"""The whole sizeguard flow through MCP, as an assistant and a human would run it.

    python examples/walkthrough.py --url http://127.0.0.1:8000/mcp --token-file FILE
        [--namespace shop-staging] [--workload api] [--kubeconfig FILE]
        [--approval-url http://localhost:8765 --ledger FILE [--screenshots DIR]]

It connects to a running ``sizeguard serve --transport http`` with ``fastmcp.Client``,
presenting the server's bearer token (``--token-file``: the file ``serve`` created), after
showing that the server refuses a request without it and one from a foreign web origin.
Then it scans, previews a change set from the recommendations, asks for confirmation (this
script plays the human: it prints the question and answers "approve"), applies it, shows
that the cluster itself refuses an unapproved ``kubectl`` patch, reads the history, rolls
back (with its own confirmation) and prints the report.

With ``--approval-url`` and ``--ledger`` (the server's), it then makes a production change
(``--prod-namespace``/``--prod-workload``: its requests halved), which the
policy gives to an enrolled approver: ``request_confirmation`` answers with the approval page's
URL, an approver is invited (``sizeguard approvers invite``), enrols a passkey and approves on
the page — here a headless Chromium with a virtual passkey plays that person (with no
Chromium, it says how a person does it) — and ``apply_changes`` applies it. ``make demo``
runs it against the sandbox.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
from fastmcp import Client
from mcp_types import Implementation

WIDTH = 100


def step(number: int, title: str) -> None:
    print(f"\n\033[1m[{number}] {title}\033[0m" if sys.stdout.isatty() else f"\n[{number}] {title}")


def plan_line(plan: dict[str, Any]) -> str:
    """One workload's plan: replicas and the per-pod CPU request it assumes, together."""
    replicas = f"replicas {plan['current_replicas']} -> {plan['planned_replicas']}"
    if plan.get("hpa"):
        bounds = plan["hpa"]
        replicas = (
            f"HPA min {bounds['min_replicas']['current']} -> "
            f"{bounds['min_replicas']['recommended']}, max {bounds['max_replicas']['current']}"
            f" -> {bounds['max_replicas']['recommended']}"
        )
    request = plan["assumed_cpu_request"]
    per_pod = "?" if request is None else f"{float(request) * 1000:.0f}m"
    return (
        f"plan {plan['kind']}/{plan['name']}: {replicas}, CPU request per pod {per_pod}, "
        f"utilization at the percentile {plan['utilization']:.0%} (band "
        f"{plan['band'][0]:.0%}-{plan['band'][1]:.0%})"
    )


def say(text: str, indent: int = 4) -> None:
    for line in text.splitlines() or [""]:
        print(
            textwrap.indent(
                textwrap.fill(line, WIDTH - indent, subsequent_indent="  ")
                if len(line) > WIDTH - indent
                else line,
                " " * indent,
            )
        )


class DemoHuman:
    """Answers sizeguard's confirmation as a person at the MCP client would."""

    def __init__(self) -> None:
        self.asked = 0

    async def __call__(self, message: str, response_type: Any, params: Any, context: Any) -> Any:
        self.asked += 1
        print("    ┌─ the MCP client shows the human:")
        for line in message.splitlines():
            print(f"    │ {line}")
        typed = ""
        for line in message.splitlines():
            if "type " in line and " to approve" in line:
                typed = line.split("type ", 1)[1].rsplit(" to approve", 1)[0]
        print(f"    └─ the human approves{' and types ' + typed if typed else ''}")
        return {"approve": True, "namespace": typed}


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "a-stranger", "version": "1"},
    },
}


def refusals(url: str, token: str) -> bool:
    """What anyone else on this machine, or a web page, gets: True if both are refused."""
    headers = {"Accept": "application/json, text/event-stream"}
    anonymous = httpx.post(url, json=INITIALIZE, headers=headers, timeout=10)
    say(
        f"without the token: HTTP {anonymous.status_code}, "
        f"WWW-Authenticate: {anonymous.headers.get('www-authenticate', '-')}"
    )
    page = httpx.post(
        url,
        json=INITIALIZE,
        headers={**headers, "Authorization": f"Bearer {token}", "Origin": "http://evil.example"},
        timeout=10,
    )
    say(f"with the token, from a web page at http://evil.example: HTTP {page.status_code}")
    return anonymous.status_code == 401 and page.status_code == 403


async def walkthrough(args: argparse.Namespace) -> int:
    human = DemoHuman()
    token = Path(args.token_file).read_text().strip()
    step(0, "who may connect: only a client with the server's token, from this machine")
    refused_strangers = refusals(args.url, token)
    client = Client(
        args.url,
        auth=token,
        elicitation_handler=human,
        client_info=Implementation(name="sizeguard-walkthrough", version="1"),
    )
    ns, name = args.namespace, args.workload
    async with client:
        step(1, f"get_cluster_state: what runs in {ns}")
        state = (
            await client.call_tool("get_cluster_state", {"namespaces": [ns]})
        ).structured_content
        for w in state["workloads"]:
            t = w["target"]
            cpu = {c: r["cpu_request"] for c, r in w["containers"].items()}
            say(f"{t['kind']}/{t['name']}: replicas {w['replicas']}, CPU requests (m) {cpu}")

        step(2, f"scan_recommendations: krr-style, from 14 days of Prometheus history ({ns})")
        report = (
            await client.call_tool(
                "scan_recommendations", {"filter": {"namespaces": [ns], "min_severity": "OK"}}
            )
        ).structured_content
        for s in report["scans"]:
            o, r = s["object"], s["recommended"]
            cpu, mem = r["requests"]["cpu"]["value"], r["requests"]["memory"]["value"]
            say(
                f"{o['kind']}/{o['name']}/{o['container']}: {s['severity']}; recommended CPU "
                f"request {cpu if cpu in (None, '?') else f'{float(cpu) * 1000:.0f}m'}, memory "
                f"{mem if mem in (None, '?') else f'{float(mem) / 2**20:.0f}Mi'}"
            )

        scaling = (
            await client.call_tool("recommend_scaling", {"namespaces": [ns]})
        ).structured_content
        for plan in scaling["recommendations"]:
            say(plan_line(plan))

        step(3, f"preview_changes: the plan for {ns}/{name} as one change set (nothing changes)")
        flt = {"namespaces": [ns], "names": [name], "min_severity": "OK"}
        preview = (
            await client.call_tool("preview_changes", {"from_recommendations": flt})
        ).structured_content
        cs = preview["change_set_id"]
        say(
            f"change set {cs}: policy {'allows' if preview['policy']['allowed'] else 'DENIES'} it "
            f"(risk {preview['policy']['risk']}); dry run through the apiserver: "
            + ", ".join("admitted" if d["admitted"] else "refused" for d in preview["dry_run"])
        )
        for d in preview["diff"]:
            say(d["target"])
            for line in d["lines"]:
                say(line, 6)
        say(f"cost: {preview['cost']['monthly_delta']:+.2f} $/month")

        step(4, "apply_changes before any human approved: refused")
        early = (await client.call_tool("apply_changes", {"change_set_id": cs})).structured_content
        say(f"{early['status']}: {early['message']}")

        step(5, "request_confirmation: the human is asked (MCP elicitation)")
        confirmation = (
            await client.call_tool("request_confirmation", {"change_set_id": cs})
        ).structured_content
        say(f"{confirmation['status']}: {confirmation['message']}")
        if confirmation["status"] != "approved":
            return 1

        step(6, "apply_changes: signed, admitted by the webhook, verified")
        execution = (
            await client.call_tool("apply_changes", {"change_set_id": cs})
        ).structured_content
        say(f"{execution['status']}: {execution['message']}")
        for t in execution["targets"]:
            say(f"{t['target']}: {t['result']} ({t['message']})", 6)
        if execution["status"] != "applied":
            return 1

        step(7, "an unapproved kubectl patch of the same workload: the cluster refuses it")
        refused = unapproved(args, ns, name)

        step(8, "get_execution_history: the hash-chained audit log")
        history = (
            await client.call_tool("get_execution_history", {"change_set_id": cs})
        ).structured_content
        for e in history["entries"]:
            say(f"#{e['seq']} {e['at'][11:19]} {e['event']:<24} {e['result']:<10} {e['actor']}")
        say(f"audit chain intact: {history['audit_intact']}")

        step(9, "rollback_changes: its own confirmation, then the originals are restored")
        outcome = (
            await client.call_tool("rollback_changes", {"change_set_id": cs})
        ).structured_content
        rollback = outcome["execution"] or {}
        say(
            f"rollback change set {outcome['change_set_id']}: {outcome['confirmation']['status']}, "
            f"{rollback.get('status', 'not applied')}: {rollback.get('message', '')}"
        )

        production = None
        if args.approval_url and args.ledger:
            production = await on_the_page(client, args)

        step(12 if args.approval_url and args.ledger else 10, "generate_report")
        markdown = (await client.call_tool("generate_report", {})).structured_content["markdown"]
        say(markdown)
    ok = (
        refused_strangers
        and refused
        and outcome["execution"] is not None
        and outcome["execution"]["status"] == "applied"
        and production is not False
    )
    print("\nwalkthrough " + ("complete: every step behaved as it should" if ok else "FAILED"))
    return 0 if ok else 1


def find_url(answer: Any, pattern: str = r"https?://[^\s\"']+/changes/cs-[0-9a-f]{20}") -> str:
    match = re.search(pattern, json.dumps(answer))
    return match.group(0) if match else ""


def invite(args: argparse.Namespace, name: str) -> str:
    """`sizeguard approvers invite NAME`, as the server's administrator runs it: the link."""
    sizeguard = Path(sys.executable).with_name("sizeguard")
    command = [str(sizeguard), "approvers", "invite", name, "--ledger", args.ledger,
               "--approval-url", args.approval_url]  # fmt: skip
    say("$ sizeguard approvers invite " + name + " --ledger … --approval-url " + args.approval_url)
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    out = done.stdout.strip()
    link = re.search(r"https?://\S+/enroll/[A-Za-z0-9_-]+", out)
    say(re.sub(r"/enroll/[A-Za-z0-9_-]+", "/enroll/<one-time token>", out or done.stderr), 6)
    return link.group(0) if link else ""


class Approver:
    """A person with a passkey, played by headless Chromium with a virtual WebAuthn
    authenticator (user verification given): enrols through the invite link, approves on
    the page. ``shots``: save screenshots of the page there."""

    def __init__(self, browser: Any, person: str, shots: Path | None) -> None:
        self.browser, self.shots = browser, shots
        browser.as_person(person)

    def answer(self) -> str:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        def settled(driver: Any) -> Any:
            element = driver.find_element(By.ID, "status")
            kind = element.get_attribute("class") or ""
            return element if ("done" in kind or "refused" in kind) else False

        element = WebDriverWait(self.browser.driver, 60).until(settled)
        return f"{element.get_attribute('class').split()[-1]}: {element.text}"

    def open(self, url: str, shot: str = "") -> Any:
        from selenium.webdriver.common.by import By

        self.browser.driver.get(url)
        if shot and self.shots is not None:
            self.browser.screenshot(self.shots / f"{shot}.png")
        return lambda element_id: self.browser.driver.find_element(By.ID, element_id)

    def enrol(self, link: str) -> bool:
        find = self.open(link, "approval-page-enroll")
        say(f"{self.browser.person} opens the invite link: “{find('enroll').text}” button")
        find("enroll").click()
        said = self.answer()
        say(f"registers a passkey (the virtual authenticator verifies the user) -> {said}")
        return said.startswith("done")

    def approve(self, base: str, url: str) -> bool:
        self.open(f"{base}/", "approval-page-pending")
        find = self.open(url, "approval-page-change")
        say(f"opens {url}: the summary, state {find('state').text}")
        find("approve").click()
        said = self.answer()
        say(f"presses Approve, unlocks the passkey -> {said}")
        return said.startswith("done")


async def on_the_page(client: Client[Any], args: argparse.Namespace) -> bool:
    """A production change: approved by an enrolled person on the approval page."""
    ns, name = args.prod_namespace, args.prod_workload
    step(10, f"a production change ({ns}/{name}): the policy wants an enrolled approver")
    # Halving an over-provisioned container's requests: within the policy's limits (a 90%
    # cut, which its 14-day recommendation asks for, is denied even with an approval).
    edit = {"kind": "Deployment", "namespace": ns, "name": name, "container": name,
            "cpu_request": "1", "memory_request": "2Gi",
            "reason": "over-provisioned: 14-day p95 CPU 0.05 cores, memory ~230Mi"}  # fmt: skip
    preview = (await client.call_tool("preview_changes", {"edits": [edit]})).structured_content
    cs = preview["change_set_id"]
    policy = preview["policy"]
    say(f"change set {cs}: risk {policy['risk']}, requires {', '.join(policy['requires'])}")
    for d in preview["diff"]:
        say(d["target"])
        for line in d["lines"]:
            say(line, 6)
    asked = (
        await client.call_tool("request_confirmation", {"change_set_id": cs})
    ).structured_content
    say(f"request_confirmation: {asked['status']}: {asked['message']}")
    if asked["status"] not in ("pending", "approved"):
        return False
    url = find_url(asked) or f"{args.approval_url.rstrip('/')}/changes/{cs}"
    say(f"the approval page: {url}")
    early = (await client.call_tool("apply_changes", {"change_set_id": cs})).structured_content
    say(f"apply_changes now: {early['status']}: {early['message']}")

    step(11, "a person approves on the page with a passkey; then apply_changes")
    link = invite(args, args.approver)
    if not link:
        say("no invite link: cannot show the page's approval")
        return False
    from sizeguard.sandbox.browser import browser_available

    if not browser_available():
        say(
            "no Chromium here (scripts/install-browser). A person would: open the invite link "
            "in their browser and register a passkey; open " + url + ", read the summary and "
            "press Approve (the passkey asks for a fingerprint or PIN); then the assistant "
            f"calls apply_changes('{cs}')."
        )
        return True
    from sizeguard.sandbox.browser import start_browser

    shots = Path(args.screenshots) if args.screenshots else None
    base = args.approval_url.rstrip("/")
    with start_browser() as browser:
        person = Approver(browser, args.approver, shots)
        if not (person.enrol(link) and person.approve(base, url)):
            return False
        applied = (
            await client.call_tool("apply_changes", {"change_set_id": cs})
        ).structured_content
        say(f"apply_changes: {applied['status']}: {applied['message']}")
        person.open(f"{base}/", "approval-page-history")
    if shots is not None:
        say(f"screenshots of the page: {shots}/approval-page-*.png")
    return bool(applied["status"] == "applied")


def unapproved(args: argparse.Namespace, ns: str, name: str) -> bool:
    """An unapproved kubectl change of a guarded field; True if the cluster refused it."""
    kubectl = shutil.which(
        "kubectl", path=str(Path.home() / ".cache/sizeguard/tools/bin")
    ) or shutil.which("kubectl")
    if kubectl is None:
        say("kubectl not found (run scripts/install-tools); cannot show the refusal")
        return False
    env = dict(os.environ)
    if args.kubeconfig:
        env["KUBECONFIG"] = args.kubeconfig
    command = [kubectl, "-n", ns, "set", "resources", f"deployment/{name}", "--requests=cpu=100m"]
    say("$ " + " ".join(["kubectl", *command[1:]]))
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)
    say((done.stdout + done.stderr).strip(), 6)
    say(
        "exit status "
        + str(done.returncode)
        + (" (refused, as it must be)" if done.returncode else " — NOT REFUSED")
    )
    return done.returncode != 0 and "sizeguard" in done.stderr


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--url", required=True, help="the MCP endpoint, e.g. http://127.0.0.1:8765/mcp"
    )
    parser.add_argument(
        "--token-file",
        required=True,
        help="the bearer token `sizeguard serve` created (mcp-token next to its ledger)",
    )
    parser.add_argument("--namespace", default="shop-staging")
    parser.add_argument("--workload", default="api", help="a Deployment in --namespace")
    parser.add_argument(
        "--kubeconfig",
        default=os.environ.get("KUBECONFIG"),
        help="for the unapproved kubectl patch (default: $KUBECONFIG)",
    )
    page = parser.add_argument_group("the approval page (a production change)")
    page.add_argument("--approval-url", help="the page's address, e.g. http://localhost:8765")
    page.add_argument("--ledger", help="the server's ledger (to invite the approver)")
    page.add_argument("--prod-namespace", default="shop-prod")
    page.add_argument("--prod-workload", default="checkout", help="a Deployment in it")
    page.add_argument("--approver", default="demo-approver", help="the person invited")
    page.add_argument("--screenshots", metavar="DIR", help="save the page's screenshot there")
    args = parser.parse_args()
    try:
        return asyncio.run(walkthrough(args))
    except Exception as exc:  # the demo prints one line, not a traceback
        print(f"walkthrough failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
