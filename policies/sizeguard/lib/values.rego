# The guarded values of the shared helpers (package metadata: lib.rego): which guarded values
# differ between two GuardedStates (changed_values, what every rule about a change reads) and
# what holds resources in a state (resource_holders, for the rules that check every request and
# limit of a state). Parts of two states that are equal as a whole are skipped with one
# comparison, so that a change costs what it changes.
package sizeguard.lib

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
# description: The fields of a GuardedState that are not in state_fields (see changed_scalars).
state_parts := ["containers", "init_containers", "pod_resources", "resource_claims"]

# METADATA
# description: |
#   Every guarded value that differs between two GuardedStates (either may be null: a state
#   that does not exist): one entry per changed field outside the containers, per changed
#   DRA resource claim of the pod, per changed resource of a container, init container or the
#   pod-level resources (cpu, memory and every other resource), per changed init-container
#   restartPolicy and per container whose resource claims change. Each entry has both values
#   (null if unset), the resource it measures (cpu, memory, bytes, count, seconds, word, claim
#   or claims) and the words a message uses for it. Parts that are equal as a whole (the
#   fields outside the containers, a group, a holder, a map) are skipped with one comparison.
changed_values(before, after) := set() if {
	before == after
} else := (changed_scalars(old, new) | changed_claims(old, new)) | changed_resources(old, new) if {
	old := object_or_empty(before)
	new := object_or_empty(after)
}

# METADATA
# description: |
#   The changed values of two states (objects) outside the containers: none when the states
#   are equal once their container groups, pod-level resources and claims are left out (one
#   comparison), else one per changed field of state_fields.
changed_scalars(old, new) := set() if {
	object.remove(old, state_parts) == object.remove(new, state_parts)
} else := {value |
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
	object.get(old, "resource_claims", {}) != object.get(new, "resource_claims", {})
	old_claims := object_or_empty(object.get(old, "resource_claims", {}))
	new_claims := object_or_empty(object.get(new, "resource_claims", {}))
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
	object.get(old, group, {}) != object.get(new, group, {})
	old_group := object_or_empty(object.get(old, group, {}))
	new_group := object_or_empty(object.get(new, group, {}))
	some name in (object.keys(old_group) | object.keys(new_group))
	object.get(old_group, name, {}) != object.get(new_group, name, {})
	old_holder := object_or_empty(object.get(old_group, name, {}))
	new_holder := object_or_empty(object.get(new_group, name, {}))
	some value in holder_changes(old_holder, new_holder, concat("", [noun, " ", name, " in "]))
} | {value |
	object.get(old, "pod_resources", {}) != object.get(new, "pod_resources", {})
	old_pod := object_or_empty(object.get(old, "pod_resources", {}))
	new_pod := object_or_empty(object.get(new, "pod_resources", {}))
	some value in holder_changes(old_pod, new_pod, pod_level_where)
}

# METADATA
# description: |
#   The changed values of one holder of resources (a container or the pod): the fields of
#   holder_fields, read directly when both holders have the same fields (an unset field
#   reads as its unset value only when one of them lacks it), and the other resources.
holder_changes(old, new, where) := ({value |
	some field, meta in holder_fields
	before := old[field]
	after := new[field]
	before != after
	value := {
		"field": field, "resource": meta.resource, "label": meta.label,
		"where": where, "before": before, "after": after,
	}
} | {value |
	object.keys(old) != object.keys(new)
	some field, meta in holder_fields
	before := object.get(old, field, meta.unset)
	after := object.get(new, field, meta.unset)
	before != after
	value := {
		"field": field, "resource": meta.resource, "label": meta.label,
		"where": where, "before": before, "after": after,
	}
}) | changed_others(old, new, where)

# METADATA
# description: The changed other resources (other_requests, other_limits) of one holder.
changed_others(old, new, where) := {value |
	some field, noun in other_fields
	object.get(old, field, {}) != object.get(new, field, {})
	old_map := object_or_empty(object.get(old, field, {}))
	new_map := object_or_empty(object.get(new, field, {}))
	some name in (object.keys(old_map) | object.keys(new_map))
	before := object.get(old_map, name, null)
	after := object.get(new_map, name, null)
	before != after
	value := {
		"field": concat("_", [name, noun]), "resource": other_resource(name),
		"label": concat(" ", [name, noun]), "where": where, "before": before, "after": after,
	}
}

# METADATA
# description: |
#   The fields of a holder of resources other than the maps of other resources: the cpu and
#   memory requests and limits, an init container's restartPolicy and a container's resource
#   claims. What changed_values calls each, and its value when unset.
holder_fields := {
	"cpu_request": {"resource": "cpu", "label": "CPU request", "unset": null},
	"cpu_limit": {"resource": "cpu", "label": "CPU limit", "unset": null},
	"memory_request": {"resource": "memory", "label": "memory request", "unset": null},
	"memory_limit": {"resource": "memory", "label": "memory limit", "unset": null},
	"restart_policy": {"resource": "word", "label": "restartPolicy", "unset": null},
	"claims": {"resource": "claims", "label": "resource claims", "unset": []},
}

# METADATA
# description: |
#   What holds resources in a GuardedState: each container and init container that is an
#   object, as {"noun", "name", "resources"}, and the pod-level resources when set (noun and
#   name null). [] for null. How a message names a holder is holder_where, built only for the
#   holders a message is about.
resource_holders(state) := array.concat(
	[{"noun": noun, "name": name, "resources": holder} |
		some group, noun in container_groups
		holders := object.get(state, group, {})
		is_object(holders)
		some name, holder in holders
		is_object(holder)
	],
	[{"noun": null, "name": null, "resources": pod} |
		pod := object.get(state, "pod_resources", null)
		is_object(pod)
	],
) if {
	is_object(state)
}

else := []

# METADATA
# description: |
#   How a message names a holder of resource_holders: "container web in ", "init container
#   migrate in ", "the pod-level resources in ".
holder_where(holder) := pod_level_where if holder.noun == null

else := concat("", [holder.noun, " ", holder.name, " in "])
