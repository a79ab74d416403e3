# The ReplicaSet part of the admission policy (package metadata: admission.rego).
#
# A ReplicaSet's footprint is its replicas and its pod template (the webhook's before/after).
# A Deployment's controller writes its ReplicaSets' replicas all the time; it does not always
# put back someone else's (a paused Deployment with two active ReplicaSets), so only its
# controllers may.
# Its controller ownerReference and its labels tie it to a Deployment: the webhook passes the
# controller owner of the old and the new object (context.owner_before, owner_after) and
# whether the labels change (context.labels_changed).
#
# - A Deployment's ReplicaSet (a controller owner that is an apps/v1 Deployment, on the old
#   object or on the new one) is part of a guarded workload in every namespace: its pod
#   template, labels and controller owner change, and it is created, only by the principals
#   in config.admission.replica_set_controllers (the deployment controller and the garbage
#   collector by default), lifecycle exempt principals and break-glass. Deleting it is
#   allowed: its Deployment makes it again from its own template.
# - A standalone ReplicaSet is a workload of its own: its CREATE, DELETE and pod template
#   changes follow config.admission.lifecycle.workloads (where the replica_set_controllers may
#   also create); its labels and owner are its own business. Scaling it through the scale
#   subresource is the scale rule's (exempt principals only), like any scale request.
package sizeguard.admission

import data.sizeguard.lib

# METADATA
# description: The kind of the objects replica_set_decision decides.
replica_set_kind := "ReplicaSet"

# METADATA
# description: The controller owner of the old object (null when it has none, or for a CREATE).
owner_before := object.get(input, ["context", "owner_before"], null)

# METADATA
# description: The controller owner of the new object (null when it has none, or for a DELETE).
owner_after := object.get(input, ["context", "owner_after"], null)

# METADATA
# scope: document
# description: True for a controller owner that is an apps/v1 Deployment.
deployment_owner(owner) if {
	owner.apiVersion == "apps/v1"
	owner.kind == "Deployment"
}

# METADATA
# description: |
#   The Deployment a ReplicaSet belongs to: the controller owner of the old object, else of
#   the new one (a ReplicaSet created for, or handed to, a Deployment). Undefined when neither
#   is a Deployment.
owning_deployment := owner_before if {
	deployment_owner(owner_before)
} else := owner_after if {
	deployment_owner(owner_after)
}

# METADATA
# scope: document
# description: True when the request changes what ties the ReplicaSet to a Deployment.
ownership_changed if input.context.labels_changed == true

ownership_changed if owner_before != owner_after

# METADATA
# scope: document
# description: True when the request's ownership context is what the webhook sends (see docs/policies.md).
ownership_well_formed if request.kind != replica_set_kind

ownership_well_formed if {
	is_boolean(input.context.labels_changed)
	owner_well_formed(object.get(input.context, "owner_before", false))
	owner_well_formed(object.get(input.context, "owner_after", false))
}

# METADATA
# scope: document
# description: True for null (no controller owner) or an owner with string apiVersion, kind, name and uid.
owner_well_formed(null)

owner_well_formed(owner) if {
	every key in ["apiVersion", "kind", "name", "uid"] {
		is_string(owner[key])
	}
}

# METADATA
# scope: document
# description: True when the request's user is one of config.admission.replica_set_controllers.
replica_set_controller if request.user in object.get(lib.config.admission, "replica_set_controllers", [])

# METADATA
# description: |
#   What an UPDATE changes, as people read it: its replicas, its pod template (which fields),
#   its labels, its controller owner.
replica_set_changes := [phrase |
	some phrase in [
		"the replicas",
		sprintf("the pod template (%s)", [template_summary]),
		"the labels",
		"the controller owner",
	]
	replica_set_change_applies(phrase)
]

# METADATA
# description: The pod template fields an UPDATE changes, e.g. "CPU request, memory limit".
template_summary := concat(", ", sort({value.label |
	some value in lib.changed_values(before, after)
	value.field != "replicas"
}))

# METADATA
# scope: document
# description: True when a phrase of replica_set_changes applies to the request.
replica_set_change_applies("the replicas") if {
	object.get(lib.object_or_empty(before), "replicas", null) != object.get(lib.object_or_empty(after), "replicas", null)
}

replica_set_change_applies(phrase) if {
	startswith(phrase, "the pod template")
	template_summary != ""
}

replica_set_change_applies("the labels") if input.context.labels_changed == true

replica_set_change_applies("the controller owner") if owner_before != owner_after

# METADATA
# description: What the request does to the ReplicaSet, as people read it.
replica_set_action := sprintf("creating ReplicaSet %s", [short]) if {
	request.operation == "CREATE"
} else := sprintf("deleting ReplicaSet %s and orphaning its pods", [short]) if {
	request.operation == "DELETE"
	object.get(request, "orphan", true) != false
} else := sprintf("deleting ReplicaSet %s", [short]) if {
	request.operation == "DELETE"
} else := sprintf("changing %s of ReplicaSet %s", [spoken_list(replica_set_changes), short])

# METADATA
# description: A list as a sentence says it, "a", "a and b", "a, b and c".
spoken_list(items) := items[0] if {
	count(items) == 1
} else := concat(" and ", [concat(", ", array.slice(items, 0, count(items) - 1)), items[count(items) - 1]])

# METADATA
# description: |
#   The decision for a ReplicaSet (see the top of this file): a Deployment's ReplicaSet, else a
#   standalone one.
replica_set_decision := owned_replica_set_decision if {
	owning_deployment
} else := standalone_replica_set_decision

# METADATA
# description: The name of the ReplicaSet's Deployment in messages, "<namespace>/<name>".
owner_short := sprintf("%s/%s", [request.namespace, owning_deployment.name])

# METADATA
# description: |
#   A Deployment's ReplicaSet: deleting it is admitted (its Deployment makes it again from its
#   own template) unless the delete orphans its pods (they would keep running beside the new
#   ReplicaSet's); anything else (creating it, changing its replicas, pod template, labels or
#   controller owner) only for config.admission.replica_set_controllers and lifecycle exempt
#   principals.
owned_replica_set_decision := {"allowed": true, "reasons": [reason], "warnings": []} if {
	request.operation == "DELETE"
	object.get(request, "orphan", true) == false # the webhook always says; unknown: orphaning
	reason := sprintf(
		"sizeguard: %s by %s admitted: Deployment %s makes its ReplicaSets again from its own template",
		[replica_set_action, request.user, owner_short],
	)
} else := {"allowed": true, "reasons": [reason], "warnings": []} if {
	replica_set_controller
	reason := sprintf(
		"sizeguard: %s by %s admitted (config.admission.replica_set_controllers)",
		[replica_set_action, request.user],
	)
} else := {"allowed": true, "reasons": [exempt_reason], "warnings": []} if {
	lifecycle_exempt
} else := {"allowed": false, "reasons": [owned_replica_set_reason], "warnings": []}

# METADATA
# description: Why a change of a Deployment's ReplicaSet is denied, and what to do instead.
owned_replica_set_reason := sprintf(
	"sizeguard: %s by %s is denied: it belongs to Deployment %s, %s; %s",
	[
		replica_set_action, request.user, owner_short,
		concat("", [
			"and only its controllers (config.admission.replica_set_controllers), lifecycle exempt ",
			"principals and break-glass may create it, scale it, orphan its pods or change its pod ",
			"template, labels or owner, ",
			"since the pods it runs would no longer be the ones the Deployment says",
		]),
		concat("", [
			"change the Deployment instead, through the sizeguard MCP server ",
			"(its controller then rolls out a ReplicaSet of its own)",
		]),
	],
)

# METADATA
# description: |
#   A standalone ReplicaSet is a workload of its own: its CREATE, DELETE, replicas and pod
#   template changes follow config.admission.lifecycle.workloads (in scope: exempt
#   principals, and the replica_set_controllers may create); its labels and owner alone are
#   admitted.
standalone_replica_set_decision := {"allowed": true, "reasons": [reason], "warnings": []} if {
	request.operation == "UPDATE"
	before == after
	reason := sprintf(
		"sizeguard: %s by %s admitted: its replicas and pod template are unchanged and no Deployment owns it",
		[replica_set_action, request.user],
	)
} else := {"allowed": true, "reasons": [out_of_scope_reason("workloads")], "warnings": []} if {
	not in_scope("workloads")
} else := {"allowed": true, "reasons": [exempt_reason], "warnings": []} if {
	lifecycle_exempt
} else := {"allowed": true, "reasons": [reason], "warnings": []} if {
	request.operation == "CREATE"
	replica_set_controller
	reason := sprintf(
		"sizeguard: %s by %s admitted (config.admission.replica_set_controllers)",
		[replica_set_action, request.user],
	)
} else := {"allowed": false, "reasons": [standalone_replica_set_reason], "warnings": []}

# METADATA
# description: Why a standalone ReplicaSet's create, delete or pod template change is denied, and what to do.
standalone_replica_set_reason := sprintf(
	"sizeguard: %s by %s is denied: %s only exempt principals may %s (%s); %s; %s",
	[
		replica_set_action, request.user, scope_phrase("workloads"),
		"create, delete, scale or change the pod template of a standalone ReplicaSet",
		"sizeguard approves none of these, since its pods can have any size",
		pipeline_hint,
		"to run pods of a size sizeguard approves, use a Deployment and change it through the sizeguard MCP server",
	],
)
