"""History, the safety report and the Markdown report, from the ledger (and the cluster)."""

from __future__ import annotations

from kubernetes import client as k8s

from sizeguard.changes import GuardedState
from sizeguard.cluster import ClusterError
from sizeguard.key_trust import KeyTrust
from sizeguard.ledger import LedgerError
from sizeguard.server.models import History, HistoryEntry, Preview, SafetyReport
from sizeguard.server.service import Service, ServiceError, diff_lines, pod_cost, timestamp

__all__ = ["history", "markdown", "safety_report"]

WEBHOOK_CONFIGURATION = "sizeguard"


def history(service: Service, change_set_id: str | None, limit: int) -> History:
    entries = service.ledger.audit_entries(change_set_id=change_set_id, limit=limit)
    check = service.ledger.verify_audit()
    return History(
        entries=[
            HistoryEntry(
                seq=e.seq,
                at=e.at,
                actor=e.actor,
                event=e.event,
                change_set_id=e.change_set_id,
                target=None if e.target is None else e.target.ref(),
                result=e.result,
            )
            for e in entries
        ],
        audit_intact=check.ok,
        audit_problem=check.reason,
    )


def _webhook_registered(service: Service) -> bool | None:
    api = k8s.AdmissionregistrationV1Api(service.cluster.api)
    try:
        items = api.list_validating_webhook_configuration(_request_timeout=10).items or []
    except Exception:  # RBAC may forbid it: unknown, not false
        return None
    return any(
        ((item.metadata.name if item.metadata else None) or "").startswith(WEBHOOK_CONFIGURATION)
        and any("sizeguard" in (w.name or "") for w in item.webhooks or [])
        for item in items
    )


def _key_trust(service: Service, preview: Preview | None) -> KeyTrust:
    """From the change set's dry runs when there is one; else from a probe dry run."""
    if preview is not None and preview.signing_key_trusted is not None:
        return KeyTrust(preview.signing_key_trusted, service.signing_kid)
    try:
        return service.key_trust()
    except ClusterError as exc:
        return KeyTrust(
            None, service.signing_kid, unknown_because=f"the probe dry run failed: {exc}"
        )


def safety_report(service: Service, change_set_id: str | None, actor: str) -> SafetyReport:
    """Every check sizeguard relies on, now. Whether the webhook trusts the signing key is
    learnt from its answer to a server-side dry run (the change set's, or a probe's)."""
    probe = service.policy.changeset_decision({"changes": [], "context": {}})
    engine = "ok" if probe.engine_error is None else f"unusable: {probe.engine_error}"
    audit = service.ledger.verify_audit()
    preview = None
    approvals: list[str] = []
    if change_set_id is not None:
        try:
            preview, _ = service.stored_preview(change_set_id, actor=actor)
        except (ServiceError, ClusterError, LedgerError) as exc:
            raise ServiceError(f"cannot check {change_set_id}: {exc}") from None
        approvals = [
            f"#{a.id} {a.op} by {a.approver}: {a.state} (expires {timestamp(a.expires_at)})"
            for a in service.ledger.approvals(change_set_id)
        ]
    trust = _key_trust(service, preview)
    return SafetyReport(
        read_only=service.writes_hidden,
        policy_engine=engine,
        signing_key="none (read-only)" if service.key is None else f"kid {service.key.kid}",
        webhook_registered=_webhook_registered(service),
        webhook_trusts_signing_key=trust.trusted,
        webhook_key_check=(
            preview.signing_key_check
            if preview is not None and preview.signing_key_trusted is not None
            else trust.describe()
        ),
        audit_log=(
            f"intact ({audit.entries} entries, head {audit.head_seq}:{audit.head_hash})"
            if audit.ok
            else f"BROKEN at entry {audit.first_bad_seq}: {audit.reason}"
        ),
        change_set=preview,
        approvals=approvals,
    )


def markdown(service: Service) -> str:
    """Applied change sets (newest last) with their diffs and monthly cost change."""
    ledger = service.ledger
    done = [
        e for e in ledger.audit_entries() if e.event in ("apply.completed", "rollback.completed")
    ]
    lines = ["# sizeguard report", ""]
    if not done:
        lines.append("No change set has been applied yet.")
        return "\n".join(lines) + "\n"
    total = 0.0
    rows: list[str] = []
    details: list[str] = []
    for entry in done:
        assert entry.change_set_id is not None
        stored = ledger.get_change_set(entry.change_set_id)
        if stored is None:
            continue
        change_set = stored.change_set()
        delta = 0.0
        for change in change_set.changes:
            delta += pod_cost(change.after, service.prices) * _pods(change.after)
            delta -= pod_cost(change.before, service.prices) * _pods(change.before)
        total += delta
        kind = "rollback" if entry.event.startswith("rollback") else "apply"
        rows.append(
            f"| {entry.at} | `{entry.change_set_id}` | {kind} | {len(change_set.changes)} | "
            f"{_money(delta)} |"
        )
        details.append(f"### `{entry.change_set_id}` ({kind}, {entry.at})")
        for change in change_set.changes:
            details.append(f"- **{change.target.ref()}**")
            details.extend(f"  - {line}" for line in diff_lines(change))
        details.append("")
    effect = (
        "no net change"
        if round(total, 2) == 0
        else f"{'saving' if total < 0 else 'adding'} ${abs(total):,.2f} a month"
    )
    lines += [
        f"Net monthly cost change of everything applied: **{_money(total)}** ({effect}).",
        "",
        "| when | change set | kind | objects | monthly cost change |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "## Changes",
        "",
        *details,
    ]
    check = ledger.verify_audit()
    lines.append(
        f"Audit log: {'intact' if check.ok else 'BROKEN: ' + str(check.reason)} "
        f"({check.entries} entries)."
    )
    return "\n".join(lines) + "\n"


def _pods(state: GuardedState | None) -> int:
    """Pods a state runs, as the report counts them (a DaemonSet as 1; no object: 0)."""
    if state is None:
        return 0
    return 1 if state.replicas is None else state.replicas


def _money(value: float) -> str:
    return f"{'-' if value < 0 else '+'}${abs(value):,.2f}"
