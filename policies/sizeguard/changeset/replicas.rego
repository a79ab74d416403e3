# The replica and HPA rules of the change set policy (package metadata: changeset.rego):
# replica counts never go to 0 in production and stay within bounds, an HPA's min stays at or
# below its max, and an existing HPA is never retargeted. A new HPA (before null) is held to
# the same bounds; every rule reads before and after null-safely.
package sizeguard.changeset

import data.sizeguard.lib
import data.sizeguard.plan

# METADATA
# description: |
#   Replica counts are never 0 in production, stay within bounds, HPA min <= max. The zero and
#   bound rules look only at changed replica counts, so they are skipped when none changes.
replica_violations(change, cctx) := hpa_violations(after, cctx) if {
	count(value_facts(values_of(change)).fields & replica_field_names) == 0
	after := lib.object_or_empty(object.get(change, "after", null))
} else := union({
	zero_replica_violations(before, after, cctx),
	bound_violations(before, after, cctx),
	hpa_violations(after, cctx),
}) if {
	before := lib.object_or_empty(object.get(change, "before", null))
	after := lib.object_or_empty(object.get(change, "after", null))
}

# METADATA
# description: |
#   Replicas (or HPA minReplicas, also of a new HPA) never go to 0 in a production namespace.
#   before and after are objects ({} for a state that does not exist).
zero_replica_violations(before, after, cctx) := {violation |
	cctx.production
	some field in ["replicas", "min_replicas"]
	after[field] == 0
	object.get(before, field, null) != 0
	message := sprintf(
		"%s of %s would go to 0 in production namespace %s; keep at least one",
		[lib.replica_fields[field], cctx.short, cctx.namespace],
	)
	violation := {"code": "replicas_zero_in_production", "target": cctx.key, "message": message}
}

# METADATA
# description: |
#   A changed replica count (or HPA min/max, also of a new HPA) stays within the namespace's
#   bounds. before and after are objects ({} for a state that does not exist).
bound_violations(before, after, cctx) := {{"code": "replicas_out_of_bounds", "target": cctx.key, "message": message} |
	some field, label in lib.replica_fields
	value := after[field]
	is_number(value)
	value != object.get(before, field, null)
	out_of_bounds(value, cctx.bounds)
	message := sprintf(
		"%s of %s would be %v; the allowed range is %v to %v",
		[label, cctx.short, value, cctx.bounds.min, cctx.bounds.max],
	)
}

# METADATA
# scope: document
# description: True when a replica count is outside {min, max}.
out_of_bounds(value, bounds) if value < bounds.min

out_of_bounds(value, bounds) if value > bounds.max

# METADATA
# description: An HPA's minReplicas must not exceed its maxReplicas (after is an object, {} when deleted).
hpa_violations(after, cctx) := {{"code": "hpa_min_above_max", "target": cctx.key, "message": message} |
	is_number(after.min_replicas)
	is_number(after.max_replicas)
	after.min_replicas > after.max_replicas
	message := sprintf(
		"HPA minReplicas of %s (%v) is above its maxReplicas (%v); min must not exceed max",
		[cctx.short, after.min_replicas, after.max_replicas],
	)
}

# METADATA
# description: |
#   Pointing an existing HPA at another workload (scaleTargetRef, "apiVersion/kind/name")
#   changes that workload's replicas without touching it; sizeguard never approves it.
#   Creating or deleting an HPA is not a retarget.
retarget_violations(change, cctx) := {{"code": "hpa_retarget", "target": cctx.key, "message": message} |
	"scale_target" in value_facts(values_of(change)).fields
	old := object.get(change.before, "scale_target", null)
	new := object.get(change.after, "scale_target", null)
	old != new
	operation(change) == "update"
	message := sprintf(
		"the HPA %s would be retargeted from %v to %v; sizeguard does not approve retargeting an HPA",
		[cctx.short, old, new],
	)
}

# METADATA
# description: |
#   A change that lowers replicas or an HPA's minReplicas or maxReplicas (or sets them, on a
#   new HPA) below the availability floor of the workload it scales (floor_class; a maxReplicas
#   below the floor holds the workload under it whatever its min), with the plans' reason.
#   Going to 0 is the zero rule's (replicas_zero_in_production) and elsewhere a deliberate
#   stop, not a smaller count; a count that is already below the floor and does not fall,
#   and a rollback (restores: it puts back what was there), are not refused. Only the change
#   set asks this rule (a violation of the decision, not of change_violations): admission is
#   unchanged.
violations contains finding("replicas_below_availability_floor", cctx.key, message) if {
	some i, cctx in contexts
	change := changes[i]
	some field in ["replicas", "min_replicas", "max_replicas"]
	value := change.after[field]
	is_number(value)
	value > 0
	lowers(object.get(lib.object_or_empty(change.before), field, null), value)
	not restores(change)
	workload := floor_workload(change, cctx)
	class := floor_class(plan.class_of(workload.kind, workload.critical, cctx.production), cctx)
	minimum := plan.min_replicas_of(class)
	value < minimum
	message := sprintf(
		"%s of %s would be %v, below its availability floor of %v: %s (policy data config.availability.min_replicas)",
		[lib.replica_fields[field], cctx.short, value, minimum, plan.reason(workload, class, minimum)],
	)
}

# METADATA
# scope: document
# description: True when a replica count goes down to after, or is set where there was none.
lowers(before, _) if not is_number(before)

lowers(before, after) if before > after

# METADATA
# description: |
#   The workload whose availability a change's counts hold ({kind, namespace, name,
#   critical}): for an HPA, the workload it scales (scale_target "apiVersion/kind/name", in
#   the HPA's namespace), critical by its name or by its labels in input.context.labels, not
#   by the HPA's; else, and for a scale_target without a kind, the change's target.
floor_workload(change, cctx) := object.union(workload, {"critical": critical_workload(workload)}) if {
	change.target.kind == lib.hpa_kind
	workload := scaled_workload(change.after, cctx.namespace)
} else := {
	"kind": change.target.kind,
	"namespace": cctx.namespace,
	"name": change.target.name,
	"critical": cctx.critical,
}

# METADATA
# description: |
#   The class whose floor (config.availability.min_replicas) a change set holds a workload of
#   a class to, in the namespace of a change context (cctx): production's in a production
#   namespace unless the workload's own class asks for more. The plans keep a fixed
#   (StatefulSet or critical) workload's count, which is about not adding replicas; a
#   person's edit must still not lower a production workload below the production floor.
floor_class(class, cctx) := "production" if {
	cctx.production
	plan.min_replicas_of("production") >= plan.min_replicas_of(class)
} else := class
