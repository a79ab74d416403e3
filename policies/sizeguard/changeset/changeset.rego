# METADATA
# title: sizeguard change set policy
# description: |
#   Decides whether a proposed change set may be offered to a human for approval, how risky
#   it is, and what the confirmation requires. Input and output shapes are documented in
#   docs/policies.md; thresholds and patterns live in policies/data.json.
#   The per-change rules (change_violations, change_warnings) are also applied by the
#   admission policy to the single change the cluster is asked to admit.
package sizeguard.changeset

import data.sizeguard.lib

# METADATA
# title: Change set decision
# description: |
#   {allowed, risk, violations, warnings, requires, approval_levels}: allowed is true when
#   there are no violations; each violation and warning is {code, target, message};
#   approval_levels says requires names the levels of approval.rego (the server refuses a
#   decision without it: policies older than the approval page).
# entrypoint: true
decision := {
	"allowed": count(violations) == 0,
	"risk": risk,
	"violations": sort(violations),
	"warnings": sort(warnings),
	"requires": sort(requires),
	"approval_levels": approval_levels,
}

# METADATA
# scope: document
# description: The changes of the input; [] when absent or not a list.
default changes := []

changes := input.changes if is_array(input.changes)

# METADATA
# description: The context of the input (capacity, labels, now); {} when absent.
context := lib.object_or_empty(object.get(input, "context", {}))

# METADATA
# description: The risk levels, from a score of 0 upwards.
risk_levels := ["low", "medium", "high", "critical"]

# METADATA
# description: |
#   A finding, the shape of every violation and warning. The per-change rules, evaluated for
#   every change, write it as an object literal: a function call per finding costs more.
finding(code, target, message) := {"code": code, "target": target, "message": message}

# METADATA
# scope: document
# description: |
#   True when a change has the shape the rules need: a target with kind, namespace and name,
#   and before/after objects; before may be null (create) or after null (delete) for an HPA.
well_formed(change) if {
	is_string(change.target.kind)
	is_string(change.target.namespace)
	is_string(change.target.name)
	is_object(change.before)
	is_object(change.after)
}

well_formed(change) if {
	is_string(change.target.namespace)
	is_string(change.target.name)
	change.target.kind == lib.hpa_kind
	lib.state_operation(change.before, change.after) in {"create", "delete"}
}

# METADATA
# description: |
#   The facts the per-change rules need about a change's target: its key and short name,
#   whether it is production or critical, and the namespace's thresholds, bounds and freeze
#   (see namespace_context).
change_context(change, workload_labels, namespace_labels) := object.union(
	namespace_context(change.target.namespace, namespace_labels),
	{
		"key": lib.target_key(change.target),
		"short": lib.target_short(change.target),
		"critical": critical_change(change, workload_labels),
	},
)

# METADATA
# scope: document
# description: |
#   Whether a change touches a critical workload: its target is critical by its name or
#   labels, or, for an HPA, the workload it scales before or after the change is (by that
#   workload's name or its labels in input.context.labels) — an HPA's own name or labels
#   cannot make a critical workload's scaling ask for less.
default critical_change(_, _) := false

critical_change(change, workload_labels) if lib.is_critical(change.target.name, workload_labels)

critical_change(change, _) if {
	change.target.kind == lib.hpa_kind
	some state in [change.before, change.after]
	critical_workload(scaled_workload(state, change.target.namespace))
}

# METADATA
# description: |
#   The workload an HPA's state scales ({kind, namespace, name}): its scale_target
#   "apiVersion/kind/name", in the HPA's namespace; undefined without one.
scaled_workload(state, namespace) := {"kind": kind, "namespace": namespace, "name": name} if {
	is_string(state.scale_target)
	parts := split(state.scale_target, "/")
	count(parts) >= 3
	kind := parts[count(parts) - 2]
	name := parts[count(parts) - 1]
}

# METADATA
# description: |
#   Whether a workload ({kind, namespace, name}) is critical by its name or by its labels in
#   input.context.labels.
critical_workload(workload) := lib.is_critical(
	workload.name,
	object.get(context, ["labels", lib.target_key(workload)], {}),
)

# METADATA
# description: |
#   The facts of a namespace the per-change rules need: whether it is production, its
#   thresholds, replica bounds and freeze. Computed once per namespace (and its labels) in an
#   evaluation, however many changes it has.
namespace_context(namespace, namespace_labels) := {
	"namespace": namespace,
	"production": lib.is_production(namespace, namespace_labels),
	"thresholds": settings.thresholds,
	"bounds": settings.bounds,
	"frozen": settings.frozen,
} if {
	settings := lib.namespace_settings(namespace)
}

# METADATA
# description: The change context of each well-formed change, by its index in the input.
contexts[i] := change_context(change, workload_labels, namespace_labels) if {
	some i, change in changes
	well_formed(change)
	workload_labels := object.get(context, ["labels", lib.target_key(change.target)], {})
	namespace_labels := object.get(context, ["namespaces", change.target.namespace, "labels"], {})
}

# METADATA
# scope: document
# description: Every violation of the change set.
violations contains v if {
	some i, cctx in contexts
	some v in change_violations(changes[i], cctx)
}

violations contains finding("invalid_change", "", message) if {
	some i, change in changes
	not well_formed(change)
	message := sprintf(
		concat("", [
			"change #%d is malformed: it needs target.kind, target.namespace, target.name and before/after objects ",
			"(before null to create or after null to delete a HorizontalPodAutoscaler; nothing else is created or deleted)",
		]),
		[i + 1],
	)
}

violations contains finding("invalid_input", "", "the input's changes must be a list of changes") if {
	not is_array(input.changes)
	input.changes
}

violations contains finding("empty_change_set", "", "the change set is empty; propose at least one change") if {
	count(changes) == 0
}

violations contains finding("too_many_targets", "", message) if {
	count(changes) > lib.config.max_targets
	message := sprintf(
		"the change set has %d targets; at most %d are allowed in one change set, split it",
		[count(changes), lib.config.max_targets],
	)
}

violations contains finding("duplicate_target", key, message) if {
	count({cctx.key | some cctx in contexts}) < count(contexts)
	keys := sort([cctx.key | some cctx in contexts])
	some i in numbers.range(1, count(keys) - 1)
	key := keys[i]
	key == keys[i - 1]
	message := sprintf("%s appears more than once in the change set; merge its changes into one", [key])
}

violations contains finding("exceeds_capacity", "", message) if {
	capacity_known
	some resource in ["cpu", "memory"]
	delta := requested_delta[resource]
	delta > 0
	after := capacity.requested[resource] + delta
	usable := (capacity.allocatable[resource] * (100 - lib.config.capacity.headroom_percent)) / 100
	after > usable
	message := sprintf(
		concat("", [
			"the change set adds %s of %s requests, bringing the cluster to %s of %s allocatable; ",
			"with %v%% headroom at most %s may be requested",
		]),
		[
			lib.format_value(resource, delta), resource_names[resource],
			lib.format_value(resource, after), lib.format_value(resource, capacity.allocatable[resource]),
			lib.config.capacity.headroom_percent, lib.format_value(resource, round(usable)),
		],
	)
}

violations contains finding("capacity_unknown", "", message) if {
	not capacity_known
	some resource in ["cpu", "memory"]
	requested_delta[resource] > 0
	message := sprintf(
		"the change set adds %s requests but the context has no cluster capacity to check them against",
		[resource_names[resource]],
	)
}

# METADATA
# scope: document
# description: |
#   Every warning of the change set: each change's (change_warnings) and whether its target is
#   production or critical (target_warnings, which only the change set asks for).
warnings contains w if {
	some i, cctx in contexts
	some w in change_warnings(changes[i], cctx)
}

warnings contains w if {
	some cctx in contexts
	some w in target_warnings(cctx)
}

# METADATA
# description: The cluster capacity from the context ({} when absent).
capacity := lib.object_or_empty(object.get(context, "capacity", {}))

# METADATA
# description: Resource names as messages use them.
resource_names := {"cpu": "CPU", "memory": "memory"}

# METADATA
# description: True when the context carries every capacity figure the capacity rule needs.
capacity_known if {
	is_number(capacity.nodes)
	every resource in ["cpu", "memory"] {
		is_number(capacity.allocatable[resource])
		is_number(capacity.requested[resource])
	}
}

# METADATA
# description: |
#   How much the whole change set adds to the cluster's requested CPU (millicores) and
#   memory (bytes): per change, pods after x per-pod request after, minus the same before.
#   A change that alters none of pod_fields[resource] adds nothing and is skipped.
requested_delta[resource] := sum([lib.pods_delta(change.target.kind, change.before, change.after, resource, nodes) |
	some i, _ in contexts
	count(value_facts(values_of(changes[i])).fields & pod_fields[resource]) > 0
	change := changes[i]
]) if {
	some resource in ["cpu", "memory"]
	nodes := object.get(capacity, "nodes", 1)
}

# METADATA
# description: |
#   The fields (of lib.changed_values) that decide how many pods run (lib.pod_count) and what
#   each requests of a resource (lib.pod_request): replicas, sidecars, the resource's requests.
pod_fields := {
	"cpu": {"replicas", "restart_policy", "cpu_request"},
	"memory": {"replicas", "restart_policy", "memory_request"},
}

# METADATA
# description: |
#   The highest risk score of any change (0 for an empty change set). The risk score of one
#   change: the size of its largest change (values_score: deny_size above the deny
#   thresholds, warn_size above the warning thresholds or for a change the size rules cannot
#   measure: an HPA created or deleted, a rollout, RuntimeClass or sidecar change) plus the
#   production and critical workload weights when they apply. Weights live in config.risk.weights.
risk_score := max({0} | {score |
	some i, cctx in contexts
	change := changes[i]
	size := values_score(values_of(change), lib.state_operation(change.before, change.after), cctx.thresholds)
	score := (size + weight_if("production", cctx.production)) + weight_if("critical_workload", cctx.critical)
})

# METADATA
# description: The risk level of the change set.
risk := risk_levels[min([risk_score, count(risk_levels) - 1])]

# METADATA
# scope: document
# description: A risk weight from config.risk.weights when the condition holds, else 0.
weight_if(name, true) := lib.config.risk.weights[name]

weight_if(_, false) := 0

# METADATA
# description: |
#   The size part of the risk score (see risk_score) of a change's values, operation and
#   thresholds: computed once for all the changes that share them.
values_score(values, op, thresholds) := max(measured | unmeasured) if {
	measured := {0} | {size_weights[size.level] | some size in size_changes(values, thresholds)}
	unmeasured := {size_weights.warn | unmeasured_change(values, op)}
}

# METADATA
# scope: document
# description: |
#   True when a change (its values and operation) alters the footprint in a way the size rules
#   do not measure.
unmeasured_change(_, op) if op in {"create", "delete"}

unmeasured_change(values, _) if count(value_facts(values).footprint) > 0

# METADATA
# description: |
#   What the rules look up in a change's values, computed once per set of values (changes
#   with the same before and after share it): the fields that change, the values set before
#   and unset after (removed), and the changed footprint fields the size rules do not
#   measure, with their warning code (footprint, see footprint_codes).
value_facts(values) := {
	"fields": {value.field | some value in values},
	"removed": [value |
		some value in values
		value.after == null
		is_number(value.before)
	],
	"footprint": [[code, value] |
		some value in values
		code := footprint_codes[value.field]
	],
}

# METADATA
# description: |
#   The sized values of a change (requests, limits, replica counts; lib.sized_resources) that
#   go beyond a threshold, each with its percentage (pct) and level ("deny" or "warn", see
#   size_level): computed once per values and thresholds, for the size rules and the risk.
size_changes(values, thresholds) := [{"value": value, "pct": pct, "level": level} |
	some value in values
	value.resource in lib.sized_resources
	pct := lib.percent_change(value.before, value.after)
	level := size_level(pct, thresholds)
	level != "ok"
]

# METADATA
# description: What a change does, "create", "delete" or "update" (see lib.state_operation).
operation(change) := lib.state_operation(object.get(change, "before", null), object.get(change, "after", null))

# METADATA
# description: The guarded values a change alters (lib.changed_values of its before and after).
values_of(change) := lib.changed_values(object.get(change, "before", null), object.get(change, "after", null))

# METADATA
# description: The risk weight of each size level (config.risk.weights).
size_weights := {
	"deny": lib.config.risk.weights.deny_size,
	"warn": lib.config.risk.weights.warn_size,
	"ok": 0,
}

# METADATA
# description: |
#   "deny" when a percentage change goes beyond the deny thresholds, "warn" when it goes
#   beyond the warning ones, else "ok".
size_level(pct, thresholds) := "deny" if pct > thresholds.deny_increase_percent

else := "deny" if pct < 0 - thresholds.deny_decrease_percent

else := "warn" if pct > thresholds.warn_increase_percent

else := "warn" if pct < 0 - thresholds.warn_decrease_percent

else := "ok"

# METADATA
# description: |
#   Every violation of one change, given its context (see change_context). The admission
#   policy applies this same function to the change it is asked to admit. before or after
#   may be null (an HPA created or deleted): every rule reads them null-safely.
#   Each rule is asked only when what it looks at is there (a size beyond a threshold, a
#   request or limit problem, a changed field it checks, a frozen or production namespace):
#   a function call costs far more in OPA than the check that skips it.
change_violations(change, cctx) := union({
	{v | count(sizes) > 0; some v in size_violations(change, values, cctx)},
	{v | count(request_problems(after)) > 0; some v in request_violations(after, cctx)},
	{v | count(limit_problems(after)) > 0; some v in limit_violations(after, cctx)},
	{v | count(facts.fields & replica_field_names) > 0; some v in replica_violations(change, cctx)},
	{v | is_number(after.min_replicas); some v in replica_violations(change, cctx)},
	{v | cctx.frozen; some v in frozen_violations(cctx)},
	{v | cctx.production; count(facts.removed) > 0; some v in kept_limit_violations(values, cctx)},
	{v | "scale_target" in facts.fields; some v in retarget_violations(change, cctx)},
	{v | count(facts.fields & {"strategy", "max_surge"}) > 0; some v in peak_violations(change, cctx)},
}) if {
	values := values_of(change)
	facts := value_facts(values)
	sizes := size_changes(values, cctx.thresholds)
	after := object.get(change, "after", null)
}

# METADATA
# description: The fields of lib.replica_fields (the replica counts), as a set.
replica_field_names := object.keys(lib.replica_fields)

# METADATA
# description: |
#   Every warning of one change, given its context (the admission policy applies it too).
#   Whether the target is production or critical is the change set's own warning
#   (target_warnings): the cluster does not ask for a typed confirmation.
change_warnings(change, cctx) := union({
	{w | count(size_changes(values, cctx.thresholds)) > 0; some w in size_warnings(change, values, cctx)},
	{w | count(facts.removed) > 0; some w in removed_warnings(change, values, cctx)},
	{w | count(facts.footprint) > 0; some w in footprint_warnings(change, values, cctx)},
	{w |
		null in {object.get(change, "before", null), object.get(change, "after", null)}
		some w in lifecycle_warnings(change, cctx)
	},
}) if {
	values := values_of(change)
	facts := value_facts(values)
}

# METADATA
# description: A frozen namespace (config.namespaces[ns].frozen) admits no change at all.
frozen_violations(cctx) := {{"code": "namespace_frozen", "target": cctx.key, "message": message} |
	cctx.frozen
	message := sprintf(
		"namespace %s is frozen by policy; no change to %s is allowed until the freeze is lifted",
		[cctx.namespace, cctx.short],
	)
}

# METADATA
# description: A sized value (a request, a limit, a replica count) that was set and becomes unset.
removed_warnings(change, values, cctx) := {{"code": "value_removed", "target": cctx.key, "message": message} |
	some value in value_facts(values).removed
	value.resource in lib.sized_resources
	operation(change) == "update"
	message := sprintf(
		"%s of %s%s is removed (%s → unset)",
		[value.label, value.where, cctx.short, lib.format_value(value.resource, value.before)],
	)
}

# METADATA
# description: Production and critical targets, which need a typed confirmation.
target_warnings(cctx) := {finding("production_namespace", cctx.key, message) |
	cctx.production
	message := sprintf(
		"%s is in production namespace %s; confirm by typing %s",
		[cctx.short, cctx.namespace, cctx.namespace],
	)
} | {finding("critical_workload", cctx.key, message) |
	cctx.critical
	message := sprintf(
		"%s is a critical workload (database, queue, broker or controller); confirm by typing %s",
		[cctx.short, cctx.namespace],
	)
}
