# The footprint warnings of the change set policy (package metadata: changeset.rego): the
# footprint fields the size rules do not measure (rollout fields, the termination grace
# period, RuntimeClass, sidecars, DRA resource claims) and HPAs created or deleted. A change
# to them is allowed; the warning says what it does to the pods: how many a rollout may run
# at once and for how long, what each requests or is handed, who scales the workload.
package sizeguard.changeset

import data.sizeguard.lib

# METADATA
# description: |
#   The warning codes of the footprint fields the size rules do not measure, by field: a
#   change to them is allowed, and the warning says what it does to the pods.
footprint_codes := {
	"strategy": "rollout_changed",
	"max_surge": "rollout_changed",
	"max_unavailable": "rollout_changed",
	"min_ready_seconds": "rollout_changed",
	"progress_deadline_seconds": "rollout_changed",
	"termination_grace_period_seconds": "rollout_changed",
	"runtime_class": "runtime_class_changed",
	"restart_policy": "sidecar_changed",
	"resource_claim": "resource_claims_changed",
	"claims": "resource_claims_changed",
}

# METADATA
# description: |
#   Rollout, grace period, RuntimeClass, sidecar and resource claim changes: what changes, and
#   what it does to the pods (how many a rollout may run at once and for how long, what each
#   requests or gets).
footprint_warnings(change, values, cctx) := {{"code": code, "target": cctx.key, "message": message} |
	some [code, value] in value_facts(values).footprint
	message := sprintf("%s of %s%s: %s → %s; %s", [
		value.label, value.where, cctx.short,
		lib.format_value(value.resource, value.before), lib.format_value(value.resource, value.after),
		footprint_effect(value, change.target.kind, lib.object_or_empty(change.after)),
	])
}

# METADATA
# description: What a changed footprint field does, given the workload's kind and state after the change.
footprint_effect(value, kind, after) := sidecar_effect(value, after) if {
	value.field == "restart_policy"
} else := runtime_class_effect(value) if {
	value.field == "runtime_class"
} else := strategy_effect(value.after, kind, after) if {
	value.field == "strategy"
} else := min_ready_effect(value.after, peak_phrase(kind, after)) if {
	value.field == "min_ready_seconds"
} else := deadline_effect(value.after, peak_phrase(kind, after)) if {
	value.field == "progress_deadline_seconds"
} else := grace_effect(value.after) if {
	value.field == "termination_grace_period_seconds"
} else := claim_effect(value) if {
	value.field == "resource_claim"
} else := container_claims_effect(value) if {
	value.field == "claims"
} else := sprintf(
	"no old pod stops before its replacement is ready, so a rollout keeps the new pods beside all the old ones: %s",
	[peak_phrase(kind, after)],
) if {
	value.field == "max_unavailable"
	lib.is_zero_bound(value.after)
} else := sprintf("a rollout may run %s", [peak_phrase(kind, after)])

# METADATA
# scope: document
# description: What a new minReadySeconds does, given the rollout's peak (see peak_phrase).
min_ready_effect(null, _) := "new pods count as available as soon as they are ready"

min_ready_effect(seconds, peak) := sprintf(
	concat("", [
		"each new pod must stay ready that long before a rollout moves on, ",
		"so old and new pods run side by side (%s) at least that long at each step",
	]),
	[peak],
) if {
	seconds != null
}

# METADATA
# scope: document
# description: What a new progressDeadlineSeconds does, given the rollout's peak (see peak_phrase).
deadline_effect(null, _) := "Kubernetes applies its default deadline, 600s"

deadline_effect(seconds, peak) := sprintf(
	concat("", [
		"a rollout that stops making progress is reported as failed only after that long and is not rolled back: ",
		"its old and new pods (%s) stay until someone acts",
	]),
	[peak],
) if {
	seconds != null
}

# METADATA
# scope: document
# description: What a new terminationGracePeriodSeconds does to the pods a rollout replaces.
grace_effect(null) := "Kubernetes applies its default grace period, 30s"

grace_effect(seconds) := sprintf(
	concat("", [
		"a replaced (or deleted) pod may keep running, and holding its requests, ",
		"for up to %s beside its replacement",
	]),
	[lib.format_value("seconds", seconds)],
) if {
	seconds != null
}

# METADATA
# description: What a changed resource claim of the pod (DRA) does to the pods.
claim_effect(value) := sprintf(
	concat("", [
		"every new pod gets devices (such as GPUs) from %s, ",
		"on top of its requests; sizeguard does not count them",
	]),
	[lib.format_value(value.resource, value.after)],
) if {
	value.after != null
} else := "new pods no longer get devices from this claim"

# METADATA
# description: What a container's changed resource claims (DRA) do to the pods.
container_claims_effect(value) := sprintf(
	"the container gets devices (such as GPUs) from the pod's claim(s) %s; sizeguard does not count them",
	[lib.format_value(value.resource, value.after)],
) if {
	count(value.after) > 0
} else := "the container no longer gets devices from the pod's resource claims"

# METADATA
# description: What a new rollout strategy does to the pods a rollout runs.
strategy_effect(strategy, kind, after) := sprintf(
	"every old pod stops before new ones start: a rollout runs no more than its %v replicas, %s",
	[lib.number_or_zero(object.get(after, "replicas", null)), "with none running in between"],
) if {
	strategy == "Recreate"
} else := "a pod is replaced only when someone deletes it: one pod per node" if {
	strategy == "OnDelete"
} else := sprintf("old and new pods run side by side: a rollout may run %s", [peak_phrase(kind, after)])

# METADATA
# description: |
#   The most pods a rollout of a workload may run at once, as people read it. A Deployment
#   runs its replicas plus maxSurge (default 25%, rounded up), or only its replicas under
#   Recreate; a DaemonSet runs an old and a new pod side by side on up to maxSurge of its
#   nodes (default 0); a StatefulSet replaces one pod at a time.
peak_phrase(kind, state) := "one pod per node (old pods stop before new ones start)" if {
	kind == "DaemonSet"
	not daemonset_surges(state)
} else := sprintf("an old and a new pod side by side on up to %v of its nodes", [state.max_surge]) if {
	kind == "DaemonSet"
} else := sprintf("no more than its %v replicas at once", [replicas]) if {
	replicas := lib.number_or_zero(object.get(state, "replicas", null))
	recreates_or_replaces_one_by_one(kind, state)
} else := sprintf("no pods while it has %v replicas", [replicas]) if {
	replicas := lib.number_or_zero(object.get(state, "replicas", null))
	replicas <= 0
} else := sprintf("up to %v pods at once for %v replicas, %v times the replicas", [peak, replicas, ratio]) if {
	replicas := lib.number_or_zero(object.get(state, "replicas", null))
	surge := object.get(state, "max_surge", null)
	peak := replicas + lib.surge_pods(default_surge(surge), replicas)
	ratio := round((peak * 10) / replicas) / 10
}

# METADATA
# scope: document
# description: True when a DaemonSet's rolling update runs a new pod beside the old one (maxSurge above 0).
daemonset_surges(state) if {
	object.get(state, "strategy", null) != "OnDelete"
	surge := object.get(state, "max_surge", null)
	surge != null
	not lib.is_zero_bound(surge)
}

# METADATA
# scope: document
# description: True when a rollout runs no more pods than the replicas (Recreate, or a StatefulSet).
recreates_or_replaces_one_by_one("StatefulSet", _)

recreates_or_replaces_one_by_one(_, state) if object.get(state, "strategy", null) == "Recreate"

# METADATA
# description: |
#   The most pods a Deployment's rollout may run at once: its replicas plus maxSurge (rounded
#   up, as Kubernetes does), or its replicas under Recreate. Undefined for other kinds and for
#   no object.
peak_pods(kind, state) := replicas if {
	kind == "Deployment"
	replicas := lib.number_or_zero(object.get(state, "replicas", null))
	recreates_or_replaces_one_by_one(kind, state)
} else := replicas + lib.surge_pods(default_surge(object.get(state, "max_surge", null)), replicas) if {
	kind == "Deployment"
	replicas := lib.number_or_zero(object.get(state, "replicas", null))
}

# METADATA
# description: |
#   A Deployment's peak during a rollout (see peak_pods) is held to the same limits as its
#   replicas: within the namespace's replica bounds, and not beyond the size thresholds — a
#   maxSurge of 100000% on 3 replicas is 3003 pods at once, as long as a rollout lasts. A
#   rollback only warns (as for sizes). Only a change of the rollout strategy or maxSurge that
#   raises the peak is checked (the replicas have rules of their own).
peak_violations(change, cctx) := {{"code": code, "target": cctx.key, "message": message} |
	count(value_facts(values_of(change)).fields & {"strategy", "max_surge"}) > 0
	kind := change.target.kind
	old := lib.object_or_empty(object.get(change, "before", null))
	new := lib.object_or_empty(object.get(change, "after", null))
	before := peak_pods(kind, old)
	after := peak_pods(kind, new)
	after > before
	some code, message in peak_findings(change, before, after, cctx)
}

# METADATA
# description: The violations of a raised rollout peak, by code (see peak_violations).
peak_findings(change, before, after, cctx) := {code: message |
	some code in ["rollout_peak_out_of_bounds", "rollout_peak_too_large"]
	message := peak_message(code, change, before, after, cctx)
}

# METADATA
# scope: document
# description: The message of one peak violation, undefined when it does not apply.
peak_message("rollout_peak_out_of_bounds", _, _, after, cctx) := sprintf(
	concat("", [
		"a rollout of %s may run up to %v pods at once (replicas plus maxSurge); ",
		"the allowed range is %v to %v, so lower maxSurge or the replicas",
	]),
	[cctx.short, after, cctx.bounds.min, cctx.bounds.max],
) if {
	after > cctx.bounds.max
}

peak_message("rollout_peak_too_large", change, before, after, cctx) := sprintf(
	"the most pods a rollout of %s may run at once rises %s (%v → %v pods); the limit is %v%%",
	[
		cctx.short, lib.format_percent(pct), before, after,
		cctx.thresholds.deny_increase_percent,
	],
) if {
	not restores(change)
	before > 0
	pct := lib.percent_change(before, after)
	size_level(pct, cctx.thresholds) == "deny"
}

# METADATA
# description: A Deployment's maxSurge, or Kubernetes' default (25%) when unset.
default_surge(surge) := "25%" if surge == null

else := surge

# METADATA
# description: What an init container's new restartPolicy does to the pod's requests.
sidecar_effect(value, after) := sprintf(
	concat("", [
		"it becomes a sidecar: its requests count for the pod's whole life, on top of the containers' ",
		"(per pod after the change: CPU %s, memory %s)",
	]),
	[
		lib.format_value("cpu", lib.pod_request(after, "cpu")),
		lib.format_value("memory", lib.pod_request(after, "memory")),
	],
) if {
	value.after == "Always"
} else := concat("", [
	"it stops being a sidecar: it must finish before the containers start, ",
	"and its requests no longer count for the pod's life",
]) if {
	value.before == "Always"
} else := "only restartPolicy Always (a sidecar) changes what the pod requests"

# METADATA
# description: What a new runtimeClassName does to the pods' requests.
runtime_class_effect(value) := sprintf(
	"every new pod also gets the overhead RuntimeClass %s sets (if any) on top of its requests; %s",
	[value.after, "sizeguard does not count it"],
) if {
	value.after != null
} else := "new pods no longer get a RuntimeClass's overhead"

# METADATA
# description: |
#   Creating an HPA hands the workload's replicas to the HPA controller, which moves them
#   between the HPA's bounds within seconds; deleting one in production leaves the workload
#   at the replicas it runs at that moment.
lifecycle_warnings(change, cctx) := {{"code": "hpa_created", "target": cctx.key, "message": message} |
	operation(change) == "create"
	after := change.after
	message := sprintf(
		"creating the HPA %s lets the HPA controller move %s to between %s and %s replicas within seconds",
		[
			cctx.short, lib.format_value("word", object.get(after, "scale_target", null)),
			lib.format_value("count", object.get(after, "min_replicas", null)),
			lib.format_value("count", object.get(after, "max_replicas", null)),
		],
	)
} | {{"code": "hpa_deleted", "target": cctx.key, "message": message} |
	operation(change) == "delete"
	cctx.production
	before := change.before
	message := sprintf(
		concat("", [
			"deleting the HPA %s leaves %s at the replicas it runs at that moment ",
			"(the HPA kept it between %s and %s); nothing scales it afterwards",
		]),
		[
			cctx.short, lib.format_value("word", object.get(before, "scale_target", null)),
			lib.format_value("count", object.get(before, "min_replicas", null)),
			lib.format_value("count", object.get(before, "max_replicas", null)),
		],
	)
}
