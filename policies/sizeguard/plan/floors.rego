# METADATA
# title: sizeguard availability floors
# description: |
#   The fewest replicas a replica plan (sizeguard/recommend/replicas.py) may give each
#   workload, and the largest per-pod CPU request before it adds replicas instead, from
#   config.availability (policies/data.json). A workload is classified with the change set
#   policy's own rules: "fixed" when it is critical (databases, brokers, controllers) or of a
#   kind in config.availability.fixed_kinds (StatefulSets): its replica count is its
#   application's topology, so the plan keeps it and sizes its pods; else "production" in a
#   production namespace; else "default". Input and output shapes: docs/policies.md.
package sizeguard.plan

import data.sizeguard.lib

# METADATA
# description: The availability settings, config.availability (min_replicas by class, fixed_kinds, max_pod_cpu).
availability := lib.config.availability

# METADATA
# title: Availability floors
# description: |
#   {"<Kind>/<namespace>/<name>": {class, min_replicas, max_pod_cpu, reason}} for each
#   workload of input.workloads ({kind, namespace, name, labels}); namespace labels come from
#   input.namespaces[namespace].labels. max_pod_cpu (cores) is null when unset or when the
#   workload's replicas are fixed.
# entrypoint: true
floors[key] := floor_of(workload, workload_class(workload)) if {
	some workload in input.workloads
	is_string(workload.kind)
	is_string(workload.namespace)
	is_string(workload.name)
	key := lib.target_key(workload)
}

# METADATA
# description: The class of a workload, fixed, production or default (see the package description).
workload_class(workload) := class_of(
	workload.kind,
	lib.is_critical(workload.name, object.get(workload, "labels", {})),
	workload.namespace in production_namespaces,
)

# METADATA
# description: |
#   The class of a workload of a kind, critical or not, in a production namespace or not:
#   the one classification of the plans and of the change set's availability floor rule
#   (changeset/replicas.rego).
class_of(kind, critical, production) := "fixed" if {
	kind in availability.fixed_kinds
} else := "fixed" if {
	critical
} else := "production" if {
	production
} else := "default"

# METADATA
# description: |
#   The namespaces of input.workloads that are production, each judged once (with its labels
#   from input.namespaces) however many workloads it holds.
production_namespaces contains namespace if {
	some namespace in {workload.namespace | some workload in input.workloads}
	lib.is_production(namespace, object.get(input, ["namespaces", namespace, "labels"], {}))
}

# METADATA
# description: The floor of a workload of a class, with the reason a plan states.
floor_of(workload, class) := {
	"class": class,
	"min_replicas": minimum,
	"max_pod_cpu": max_pod_cpu(class),
	"reason": reason(workload, class, minimum),
} if {
	minimum := min_replicas_of(class)
}

# METADATA
# description: The fewest replicas of a class, config.availability.min_replicas (its default for another class).
min_replicas_of(class) := object.get(availability.min_replicas, class, availability.min_replicas.default)

# METADATA
# description: The per-pod CPU cap, config.availability.max_pod_cpu, or null (unset, or replicas fixed).
max_pod_cpu(class) := null if {
	class == "fixed"
} else := object.get(availability, "max_pod_cpu", null)

# METADATA
# scope: document
# description: Why a workload has its floor, one sentence for the plan's reason.
reason(workload, "fixed", _) := sprintf(
	"the replica count of %s %s is its application's (%s): the plan keeps it and sizes its pods",
	[workload.kind, lib.target_short(workload), fixed_why(workload)],
)

reason(workload, "production", minimum) := sprintf(
	"%s is in production namespace %s: at least %d replicas",
	[lib.target_short(workload), workload.namespace, minimum],
)

reason(_, "default", minimum) := sprintf("at least %d replica(s)", [minimum])

# METADATA
# description: What makes a workload's replicas fixed, its kind or else its being critical.
fixed_why(workload) := sprintf("a %s", [workload.kind]) if {
	workload.kind in availability.fixed_kinds
} else := "a critical workload"
