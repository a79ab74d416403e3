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
# description: Labels of the guarded scalar fields of a GuardedState, as people read them.
scalar_fields := {
	"replicas": "replicas",
	"min_replicas": "HPA minReplicas",
	"max_replicas": "HPA maxReplicas",
	"scale_target": "HPA scaleTargetRef",
}

# METADATA
# description: The guarded per-container fields, the resource each measures and its label.
resource_fields := {
	"cpu_request": {"resource": "cpu", "label": "CPU request"},
	"cpu_limit": {"resource": "cpu", "label": "CPU limit"},
	"memory_request": {"resource": "memory", "label": "memory request"},
	"memory_limit": {"resource": "memory", "label": "memory limit"},
}

# METADATA
# description: The container groups of a GuardedState and how a message names a member.
container_groups := {"containers": "container", "init_containers": "init container"}

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
#   config.production.namespace_labels.
is_production(namespace, namespace_labels) if {
	count(config.production.namespace_patterns) > 0
	regex.match(production_name_regex, namespace)
}

else if {
	some key, values in config.production.namespace_labels
	object_or_empty(namespace_labels)[key] in values
}

else := false

# METADATA
# description: |
#   True when a workload is critical (databases, queues, brokers, controllers): its name or
#   the value of one of config.critical.name_label_keys matches config.critical.name_patterns,
#   or one of its labels has a value listed in config.critical.labels.
is_critical(name, workload_labels) if {
	count(config.critical.name_patterns) > 0
	regex.match(critical_name_regex, name)
}

else if {
	some key, values in config.critical.labels
	object_or_empty(workload_labels)[key] in values
}

else if {
	count(config.critical.name_patterns) > 0
	some key in config.critical.name_label_keys
	regex.match(critical_name_regex, object_or_empty(workload_labels)[key])
}

else := false

# METADATA
# description: config.production.namespace_patterns as one regular expression (any matches).
production_name_regex := any_of(config.production.namespace_patterns)

# METADATA
# description: config.critical.name_patterns as one regular expression (any matches).
critical_name_regex := any_of(config.critical.name_patterns)

# METADATA
# description: |
#   One regular expression matching what any of the given ones matches. Callers check that
#   the list is not empty: the empty expression would match everything.
any_of(patterns) := concat("|", [sprintf("(?:%s)", [pattern]) | some pattern in patterns])

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
#   Every guarded value that differs between two GuardedStates: one entry per changed scalar
#   field and per changed container (and init container) resource field, with both values
#   (null if unset), the resource it measures (cpu, memory or count) and the words a message
#   uses for it. Unchanged values are skipped before any entry is built.
changed_values(before, after) := changed_scalars(before, after) | changed_resources(before, after)

# METADATA
# description: The changed scalar values (replicas, HPA min/max) of a before/after pair.
changed_scalars(before, after) := {value |
	some field, label in scalar_fields
	old := object.get(object_or_empty(before), field, null)
	new := object.get(object_or_empty(after), field, null)
	old != new
	value := {"field": field, "resource": "count", "label": label, "where": "", "before": old, "after": new}
}

# METADATA
# description: The changed per-container values of a before/after pair.
changed_resources(before, after) := {value |
	some group, noun in container_groups
	old_group := containers_of(before, group)
	new_group := containers_of(after, group)
	some name in (object.keys(old_group) | object.keys(new_group))
	old_container := object_or_empty(object.get(old_group, name, {}))
	new_container := object_or_empty(object.get(new_group, name, {}))
	old_container != new_container
	some field, meta in resource_fields
	old := object.get(old_container, field, null)
	new := object.get(new_container, field, null)
	old != new
	value := {
		"field": field,
		"resource": meta.resource,
		"label": meta.label,
		"where": sprintf("%s %s in ", [noun, name]),
		"before": old,
		"after": new,
	}
}

# METADATA
# description: The containers (or init containers) object of a GuardedState, {} when absent.
containers_of(state, group) := object_or_empty(object.get(object_or_empty(state), group, {}))

# METADATA
# description: |
#   The request of one pod for a resource ("cpu" or "memory"), as the scheduler counts it:
#   the larger of the sum over containers and the largest init container. Unset counts as 0.
pod_request(state, resource) := max([total, init_peak]) if {
	field := sprintf("%s_request", [resource])
	total := sum([number_or_zero(object.get(c, field, null)) |
		some c in containers_of(state, "containers")
	])
	init_peak := max({0} | {number_or_zero(object.get(c, field, null)) |
		some c in containers_of(state, "init_containers")
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
request_delta(change, resource, nodes) := after_total - before_total if {
	kind := change.target.kind
	before_total := pod_count(kind, change.before, nodes) * pod_request(change.before, resource)
	after_total := pod_count(kind, change.after, nodes) * pod_request(change.after, resource)
}

# METADATA
# description: A guarded value as people read it ("250m", "512Mi", "3", or "unset").
format_value(resource, value) := "unset" if value == null

else := sprintf("%vm", [value]) if resource == "cpu"

else := format_bytes(value) if resource == "memory"

else := sprintf("%v", [value])

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
