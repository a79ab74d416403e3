# METADATA
# title: sizeguard shared helpers
# description: |
#   Helpers shared by the change set and admission policies: which namespaces are
#   production, which workloads are critical, the guarded values that differ between two
#   states and what holds resources (values.rego), percentage changes, per-pod request
#   totals, per-namespace overrides and human-readable formatting of guarded values.
#   Every threshold, pattern and principal comes from data.sizeguard.config
#   (policies/data.json); nothing here is hard-coded policy.
package sizeguard.lib

# METADATA
# description: |
#   The sizeguard configuration (policies/data.json). Regal does not read data files, so
#   the one reference to data.json carries an ignore directive for unresolved-reference.
config := data.sizeguard.config # regal ignore:unresolved-reference

# METADATA
# description: The replica counts of a GuardedState (workload replicas, HPA bounds) and their labels.
replica_fields := {"replicas": "replicas", "min_replicas": "HPA minReplicas", "max_replicas": "HPA maxReplicas"}

# METADATA
# description: The resources whose values have size limits (percentages, request > 0, limit >= request).
sized_resources := {"cpu", "memory", "bytes", "count"}

# METADATA
# description: cpu and memory, and how messages name them.
named_resources := {"cpu": "CPU", "memory": "memory"}

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
#   spells it (OPA compiles a pattern once and caches it): there are few, and an evaluation
#   asks about few namespaces (see critical_pattern for the workload names).
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
#   config.critical.name_patterns (as one alternation, see matches_any), or one of its labels
#   has a value listed in config.critical.labels.
is_critical(name, workload_labels) if {
	matches_any(critical_pattern, config.critical.name_patterns, name)
} else := critical_by_labels(object_or_empty(workload_labels))

# METADATA
# description: |
#   True when a workload's labels (an object) make it critical (see is_critical): one of them
#   has a value listed in config.critical.labels, or the value of one of
#   config.critical.name_label_keys matches config.critical.name_patterns. Computed once per
#   set of labels.
critical_by_labels(labels) if {
	some key, values in config.critical.labels
	labels[key] in values
} else if {
	some key in config.critical.name_label_keys
	matches_any(critical_pattern, config.critical.name_patterns, labels[key])
} else := false

# METADATA
# description: |
#   config.critical.name_patterns as one alternation (see alternation): every workload name
#   and label value of a change set is matched against it once, instead of once per pattern.
critical_pattern := alternation(config.critical.name_patterns)

# METADATA
# description: |
#   A list of regular expressions as one, "(?:p1)|(?:p2)|...", which matches a string exactly
#   when one of them does (each keeps its own flags inside its group); "" for no patterns.
#   Built once per evaluation; OPA compiles a pattern once per process and caches it by its
#   text, so the alternation costs one match per value instead of one per pattern.
alternation(patterns) := concat("", ["(?:", concat(")|(?:", patterns), ")"]) if count(patterns) > 0

else := ""

# METADATA
# description: |
#   True when a value matches one of patterns, given with their alternation: one match. When
#   there is no alternation (no patterns) or it does not compile (a pattern is not a valid
#   regular expression), each pattern is matched on its own, so that a bad pattern disables
#   only itself; a value that is not a string matches nothing.
matches_any(pattern, patterns, value) := regex.match(pattern, value) if pattern != ""

else if {
	some each in patterns
	regex.match(each, value)
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
# description: |
#   The thresholds, replica bounds and freeze of a namespace (thresholds_for, replica_bounds,
#   is_frozen) in one object: for a namespace without an override in config.namespaces, the
#   configured thresholds and bounds, not frozen, without merging anything.
namespace_settings(namespace) := configured_settings if {
	not config.namespaces[namespace]
} else := {
	"thresholds": thresholds_for(namespace),
	"bounds": replica_bounds(namespace),
	"frozen": is_frozen(namespace),
}

# METADATA
# description: The settings of a namespace without an override (see namespace_settings).
configured_settings := {"thresholds": config.thresholds, "bounds": config.replicas, "frozen": false}

# METADATA
# description: True when config.namespaces[namespace].frozen is true.
is_frozen(namespace) if {
	namespace_override(namespace).frozen == true
}

else := false

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
resource_label(name) := object.get(named_resources, name, name)

# METADATA
# description: The containers (or init containers) object of a GuardedState, {} when absent.
containers_of(state, group) := object_or_empty(object.get(object_or_empty(state), group, {}))

# METADATA
# description: |
#   The request of one pod for a resource ("cpu" or "memory"), as the scheduler counts it.
#   Pod-level resources win when they set it. Else: the sidecars (init containers with
#   restartPolicy Always, which run for the pod's life) plus the larger of the containers'
#   sum and the largest other init container. Kubernetes adds to an init container only the
#   sidecars started before it; the order is not part of the GuardedState, so all are added
#   (an upper bound). Unset (or not a number) counts as 0; RuntimeClass overhead is not known
#   here.
pod_request(state, resource) := pod_level if {
	pod_level := object.get(object_or_empty(state), ["pod_resources", concat("_", [resource, "request"])], null)
	is_number(pod_level)
} else := sidecars + max([total, init_peak]) if {
	field := concat("_", [resource, "request"])
	total := sum([request |
		some c in containers_of(state, "containers")
		request := c[field]
		is_number(request)
	])
	sidecars := sum([request |
		some c in containers_of(state, "init_containers")
		c.restart_policy == "Always"
		request := c[field]
		is_number(request)
	])
	init_peak := max({0} | {request |
		some c in containers_of(state, "init_containers")
		not c.restart_policy == "Always"
		request := c[field]
		is_number(request)
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
request_delta(change, resource, nodes) := pods_delta(
	change.target.kind,
	object.get(change, "before", null),
	object.get(change, "after", null),
	resource,
	nodes,
)

# METADATA
# description: |
#   What request_delta computes, from the kind and the two states: computed once for all the
#   changes of the same kind with the same before and after.
pods_delta(kind, before, after, resource, nodes) := after_total - before_total if {
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
