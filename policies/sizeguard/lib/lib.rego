# METADATA
# title: sizeguard shared helpers
# description: |
#   Helpers shared by the change set and admission policies: which namespaces are
#   production, which workloads are critical, percentage changes, per-pod request totals,
#   per-namespace overrides and human-readable formatting of guarded values.
#   Every threshold, pattern and principal comes from data.sizeguard.config
#   (policies/data.json); nothing here is hard-coded policy.
package sizeguard.lib

# METADATA
# description: |
#   The sizeguard configuration (policies/data.json). Regal does not read data files, so
#   the one reference to data.json carries an ignore directive for unresolved-reference.
config := data.sizeguard.config # regal ignore:unresolved-reference

# METADATA
# description: |
#   The guarded fields of a GuardedState outside its containers (and its resource claims, see
#   changed_claims): the resource each measures (how its values read; only cpu, memory, bytes
#   and count values have size limits) and the label people read.
state_fields := {
	"replicas": {"resource": "count", "label": "replicas"},
	"min_replicas": {"resource": "count", "label": "HPA minReplicas"},
	"max_replicas": {"resource": "count", "label": "HPA maxReplicas"},
	"scale_target": {"resource": "word", "label": "HPA scaleTargetRef"},
	"runtime_class": {"resource": "word", "label": "runtimeClassName"},
	"strategy": {"resource": "word", "label": "rollout strategy"},
	"max_surge": {"resource": "word", "label": "rollout maxSurge"},
	"max_unavailable": {"resource": "word", "label": "rollout maxUnavailable"},
	"min_ready_seconds": {"resource": "seconds", "label": "minReadySeconds"},
	"progress_deadline_seconds": {"resource": "seconds", "label": "progressDeadlineSeconds"},
	"termination_grace_period_seconds": {"resource": "seconds", "label": "terminationGracePeriodSeconds"},
}

# METADATA
# description: The replica counts of a GuardedState (workload replicas, HPA bounds) and their labels.
replica_fields := {"replicas": "replicas", "min_replicas": "HPA minReplicas", "max_replicas": "HPA maxReplicas"}

# METADATA
# description: The resources whose values have size limits (percentages, request > 0, limit >= request).
sized_resources := {"cpu", "memory", "bytes", "count"}

# METADATA
# description: The values (of changed_values) with size limits, i.e. requests, limits and replica counts.
sized_values(values) := {value |
	some value in values
	value.resource in sized_resources
}

# METADATA
# description: The guarded cpu and memory fields of a container (or the pod), the resource each measures and its label.
resource_fields := {
	"cpu_request": {"resource": "cpu", "label": "CPU request"},
	"cpu_limit": {"resource": "cpu", "label": "CPU limit"},
	"memory_request": {"resource": "memory", "label": "memory request"},
	"memory_limit": {"resource": "memory", "label": "memory limit"},
}

# METADATA
# description: cpu and memory, how messages name them, and the fields of their request and limit.
named_resources := {
	"cpu": {"label": "CPU", "request": "cpu_request", "limit": "cpu_limit"},
	"memory": {"label": "memory", "request": "memory_request", "limit": "memory_limit"},
}

# METADATA
# description: The maps of other resources (ephemeral-storage, nvidia.com/gpu, ...) and what each holds.
other_fields := {"other_requests": "request", "other_limits": "limit"}

# METADATA
# description: The container groups of a GuardedState and how a message names a member.
container_groups := {"containers": "container", "init_containers": "init container"}

# METADATA
# description: How a message names the pod-level resources of a GuardedState (the "where" of a value).
pod_level_where := "the pod-level resources in "

# METADATA
# description: The kind of the only objects sizeguard creates and deletes by approval.
hpa_kind := "HorizontalPodAutoscaler"

# METADATA
# description: |
#   What a before/after pair does: "create" when only after exists, "delete" when only
#   before exists, else "update".
state_operation(before, after) := "create" if {
	before == null
	is_object(after)
} else := "delete" if {
	is_object(before)
	after == null
} else := "update"

# METADATA
# description: The key naming a workload in findings, "<Kind>/<namespace>/<name>".
target_key(target) := sprintf("%s/%s/%s", [target.kind, target.namespace, target.name])

# METADATA
# description: The short name of a workload used in messages, "<namespace>/<name>".
target_short(target) := sprintf("%s/%s", [target.namespace, target.name])

# METADATA
# description: The argument if it is an object, else an empty object (null-safe lookups).
object_or_empty(x) := x if is_object(x)

else := {}

# METADATA
# description: The argument if it is a number, else 0 (unset requests count as zero).
number_or_zero(x) := x if is_number(x)

else := 0

# METADATA
# description: |
#   True when a namespace is production: its name matches one of
#   config.production.namespace_patterns, or one of its labels has a value listed in
#   config.production.namespace_labels. Each pattern is matched on its own, as data.json
#   spells it: OPA compiles a pattern once and caches it, where a pattern assembled from the
#   list would be rebuilt on every evaluation.
is_production(namespace, namespace_labels) if {
	some pattern in config.production.namespace_patterns
	regex.match(pattern, namespace)
}

else if {
	some key, values in config.production.namespace_labels
	object_or_empty(namespace_labels)[key] in values
}

else := false

# METADATA
# description: |
#   True when a workload is critical (databases, queues, brokers, controllers): its name or
#   the value of one of config.critical.name_label_keys matches one of
#   config.critical.name_patterns (each matched on its own, see is_production), or one of
#   its labels has a value listed in config.critical.labels.
is_critical(name, workload_labels) if {
	some pattern in config.critical.name_patterns
	regex.match(pattern, name)
}

else if {
	some key, values in config.critical.labels
	object_or_empty(workload_labels)[key] in values
}

else if {
	labels := object_or_empty(workload_labels)
	some key in config.critical.name_label_keys
	value := labels[key]
	some pattern in config.critical.name_patterns
	regex.match(pattern, value)
}

else := false

# METADATA
# description: |
#   Signed percentage change from before to after, e.g. 100 -> 250 is 150 and 100 -> 5 is -95.
#   Undefined when either side is unset or before is not positive (no meaningful ratio).
percent_change(before, after) := ((after - before) * 100) / before if {
	is_number(before)
	is_number(after)
	before > 0
}

# METADATA
# description: The per-namespace override object from config.namespaces ({} when none).
namespace_override(namespace) := object.get(config.namespaces, namespace, {})

# METADATA
# description: The size thresholds for a namespace, config.thresholds merged with its override.
thresholds_for(namespace) := object.union(
	config.thresholds,
	object.get(namespace_override(namespace), "thresholds", {}),
)

# METADATA
# description: The replica bounds for a namespace, config.replicas merged with its override.
replica_bounds(namespace) := object.union(
	config.replicas,
	object.get(namespace_override(namespace), "replicas", {}),
)

# METADATA
# description: True when config.namespaces[namespace].frozen is true.
is_frozen(namespace) if {
	namespace_override(namespace).frozen == true
}

else := false

# METADATA
# description: |
#   Every guarded value that differs between two GuardedStates (either may be null: a state
#   that does not exist): one entry per changed field outside the containers, per changed
#   DRA resource claim of the pod, per changed resource of a container, init container or the
#   pod-level resources (cpu, memory and every other resource), per changed init-container
#   restartPolicy and per container whose resource claims change. Each entry has both values
#   (null if unset), the resource it measures (cpu, memory, bytes, count, seconds, word, claim
#   or claims) and the words a message uses for it. Unchanged groups and holders are skipped
#   early.
changed_values(before, after) := union({
	changed_scalars(old, new),
	changed_claims(old, new),
	changed_resources(old, new),
}) if {
	old := object_or_empty(before)
	new := object_or_empty(after)
}

# METADATA
# description: The changed values of two states (objects) outside the containers.
changed_scalars(old, new) := {value |
	some field, meta in state_fields
	before := object.get(old, field, null)
	after := object.get(new, field, null)
	before != after
	value := {
		"field": field, "resource": meta.resource, "label": meta.label,
		"where": "", "before": before, "after": after,
	}
}

# METADATA
# description: |
#   The changed DRA resource claims of two states (objects): one entry per claim name whose
#   ResourceClaim or ResourceClaimTemplate ("claim:<name>", "template:<name>") changes.
changed_claims(old, new) := {value |
	old_claims := object_or_empty(object.get(old, "resource_claims", {}))
	new_claims := object_or_empty(object.get(new, "resource_claims", {}))
	old_claims != new_claims
	some name in (object.keys(old_claims) | object.keys(new_claims))
	before := object.get(old_claims, name, null)
	after := object.get(new_claims, name, null)
	before != after
	value := {
		"field": "resource_claim", "resource": "claim", "label": concat(" ", ["resource claim", name]),
		"where": "", "before": before, "after": after,
	}
}

# METADATA
# description: The changed values of the containers, init containers and pod-level resources of two states (objects).
changed_resources(old, new) := {value |
	some group, noun in container_groups
	old_group := object_or_empty(object.get(old, group, {}))
	new_group := object_or_empty(object.get(new, group, {}))
	old_group != new_group
	some name in (object.keys(old_group) | object.keys(new_group))
	old_holder := object_or_empty(object.get(old_group, name, {}))
	new_holder := object_or_empty(object.get(new_group, name, {}))
	old_holder != new_holder
	some value in holder_changes(old_holder, new_holder, concat("", [noun, " ", name, " in "]))
} | {value |
	old_pod := object_or_empty(object.get(old, "pod_resources", {}))
	new_pod := object_or_empty(object.get(new, "pod_resources", {}))
	old_pod != new_pod
	some value in holder_changes(old_pod, new_pod, pod_level_where)
}

# METADATA
# description: The changed values of one holder of resources (a container or the pod).
holder_changes(old, new, where) := union({
	{value |
		some field, meta in resource_fields
		before := object.get(old, field, null)
		after := object.get(new, field, null)
		before != after
		value := {
			"field": field, "resource": meta.resource, "label": meta.label,
			"where": where, "before": before, "after": after,
		}
	},
	{value |
		some field, noun in other_fields
		old_map := object_or_empty(object.get(old, field, {}))
		new_map := object_or_empty(object.get(new, field, {}))
		old_map != new_map
		some name in (object.keys(old_map) | object.keys(new_map))
		before := object.get(old_map, name, null)
		after := object.get(new_map, name, null)
		before != after
		value := {
			"field": concat("_", [name, noun]), "resource": other_resource(name),
			"label": concat(" ", [name, noun]), "where": where, "before": before, "after": after,
		}
	},
	{value |
		before := object.get(old, "restart_policy", null)
		after := object.get(new, "restart_policy", null)
		before != after
		value := {
			"field": "restart_policy", "resource": "word", "label": "restartPolicy",
			"where": where, "before": before, "after": after,
		}
	},
	{value |
		before := object.get(old, "claims", [])
		after := object.get(new, "claims", [])
		before != after
		value := {
			"field": "claims", "resource": "claims", "label": "resource claims",
			"where": where, "before": before, "after": after,
		}
	},
})

# METADATA
# description: |
#   How the values of a resource read: "cpu" and "memory" for themselves, "bytes" for other
#   storage (ephemeral-storage, hugepages-*), else "count" (extended resources such as
#   nvidia.com/gpu).
value_resource(name) := name if name in {"cpu", "memory"}

else := other_resource(name)

# METADATA
# description: How the values of a resource other than cpu and memory read (see value_resource).
other_resource(name) := "bytes" if storage_resource(name)

else := "count"

# METADATA
# scope: document
# description: True for a resource measured in bytes other than memory (ephemeral-storage, hugepages-*).
storage_resource("ephemeral-storage")

storage_resource(name) if startswith(name, "hugepages-")

# METADATA
# description: How a message names a resource ("CPU", "memory", "ephemeral-storage", "nvidia.com/gpu").
resource_label(name) := object.get(named_resources, [name, "label"], name)

# METADATA
# description: |
#   What holds resources in a GuardedState, keyed by how a message names it ("container web
#   in ", "init container migrate in ", "the pod-level resources in "): each container's
#   object, and the pod-level resources when set. {} for null.
resource_holders(state) := object.union(
	{where: object_or_empty(container) |
		some group, noun in container_groups
		some name, container in containers_of(state, group)
		where := concat("", [noun, " ", name, " in "])
	},
	pod_holder(object.get(object_or_empty(state), "pod_resources", null)),
)

# METADATA
# description: The pod-level resources as a holder ({} when unset).
pod_holder(pod) := {pod_level_where: pod} if is_object(pod)

else := {}

# METADATA
# description: The containers (or init containers) object of a GuardedState, {} when absent.
containers_of(state, group) := object_or_empty(object.get(object_or_empty(state), group, {}))

# METADATA
# description: True for an init container that is a sidecar (restartPolicy Always).
is_sidecar(container) if object.get(object_or_empty(container), "restart_policy", null) == "Always"

# METADATA
# description: |
#   The request of one pod for a resource ("cpu" or "memory"), as the scheduler counts it.
#   Pod-level resources win when they set it. Else: the sidecars (init containers with
#   restartPolicy Always, which run for the pod's life) plus the larger of the containers'
#   sum and the largest other init container. Kubernetes adds to an init container only the
#   sidecars started before it; the order is not part of the GuardedState, so all are added
#   (an upper bound). Unset counts as 0; RuntimeClass overhead is not known here.
pod_request(state, resource) := pod_level if {
	pod_level := object.get(object_or_empty(state), ["pod_resources", concat("_", [resource, "request"])], null)
	is_number(pod_level)
} else := sidecars + max([total, init_peak]) if {
	field := concat("_", [resource, "request"])
	total := sum([number_or_zero(object.get(c, field, null)) |
		some c in containers_of(state, "containers")
	])
	sidecars := sum([number_or_zero(object.get(c, field, null)) |
		some c in containers_of(state, "init_containers")
		is_sidecar(c)
	])
	init_peak := max({0} | {number_or_zero(object.get(c, field, null)) |
		some c in containers_of(state, "init_containers")
		not is_sidecar(c)
	})
}

# METADATA
# description: |
#   How many pods a workload runs: the number of nodes for a DaemonSet, else its replicas
#   (0 for kinds without pods, such as a HorizontalPodAutoscaler).
pod_count(kind, state, nodes) := nodes if kind == "DaemonSet"

else := number_or_zero(object.get(object_or_empty(state), "replicas", null))

# METADATA
# description: |
#   How much a change adds to the cluster's total requests of a resource: pods after the
#   change times the per-pod request after, minus the same before. Negative when it frees.
#   A state that does not exist (null: an HPA created or deleted) runs no pods.
request_delta(change, resource, nodes) := after_total - before_total if {
	kind := change.target.kind
	before := object.get(change, "before", null)
	after := object.get(change, "after", null)
	before_total := pod_count(kind, before, nodes) * pod_request(before, resource)
	after_total := pod_count(kind, after, nodes) * pod_request(after, resource)
}

# METADATA
# description: |
#   The extra pods a rollout may start for a maxSurge (or maxUnavailable) of a count:
#   an integer as it is, a percentage of the count rounded up, as Kubernetes rounds maxSurge.
surge_pods(surge, pods) := surge if is_number(surge)

else := ceil((pods * to_number(trim_suffix(surge, "%"))) / 100) if {
	is_string(surge)
	endswith(surge, "%")
}

else := 0

# METADATA
# description: |
#   True when a rollout bound (maxSurge, maxUnavailable) is zero: 0 or "0%".
is_zero_bound(bound) if bound in {0, "0%"}

# METADATA
# description: |
#   A guarded value as people read it ("250m", "512Mi", "600s", "3", "25%",
#   "ResourceClaimTemplate gpus", "gpu, fpga/big", "none" or "unset").
format_value(resource, value) := "unset" if value == null

else := sprintf("%vm", [value]) if resource == "cpu"

else := claim_source(value) if resource == "claim"

else := "none" if {
	resource == "claims"
	count(value) == 0
}

else := concat(", ", value) if resource == "claims"

else := format_bytes(value) if resource in {"bytes", "memory"}

else := sprintf("%vs", [value]) if resource == "seconds"

else := sprintf("%v", [value])

# METADATA
# description: |
#   Where a pod's resource claim comes from, as people read it: "claim:x" is
#   "ResourceClaim x", "template:y" is "ResourceClaimTemplate y" (anything else as it is).
claim_source(source) := concat(" ", ["ResourceClaim", trim_prefix(source, "claim:")]) if {
	startswith(source, "claim:")
} else := concat(" ", ["ResourceClaimTemplate", trim_prefix(source, "template:")]) if {
	startswith(source, "template:")
} else := source

# METADATA
# description: |
#   A byte count as people read it: exact in the largest binary unit that divides it
#   ("2Gi", "1536Mi"), else rounded to one decimal ("37.5Gi", "953.7Mi"), else in bytes.
format_bytes(bytes) := sprintf("%vGi", [bytes / gib]) if {
	gib := (1024 * 1024) * 1024
	bytes % gib == 0
	bytes >= gib
} else := sprintf("%vGi", [round((bytes * 10) / gib) / 10]) if {
	gib := (1024 * 1024) * 1024
	bytes >= gib
} else := sprintf("%vMi", [bytes / mib]) if {
	mib := 1024 * 1024
	bytes % mib == 0
	bytes >= mib
} else := sprintf("%vMi", [round((bytes * 10) / mib) / 10]) if {
	mib := 1024 * 1024
	bytes >= mib
} else := sprintf("%vKi", [bytes / 1024]) if {
	bytes % 1024 == 0
	bytes >= 1024
} else := sprintf("%v bytes", [bytes])

# METADATA
# description: The magnitude of a percentage with at most one decimal, e.g. "150%" or "66.7%".
format_percent(pct) := sprintf("%v%%", [round(abs(pct) * 10) / 10])
