# METADATA
# title: sizeguard admission policy
# description: |
#   Decides whether the cluster admits one request that may change a workload's footprint:
#   an UPDATE of a workload or HPA, a scale or pods/resize request, a LimitRange, a
#   ReplicaSet, or the CREATE or DELETE of a workload or HPA. The webhook verifies the
#   approval's signature and binding and passes the result in input.approval; this policy
#   decides what that means. Unchanged guarded state is admitted; a break-glass group is
#   admitted but named; a Deployment's ReplicaSets are left to its controllers, standalone
#   ReplicaSets, scale and resize requests, LimitRanges and workload creates/deletes to exempt
#   principals (per namespace scope, in data); an HPA create/delete and every other change
#   needs a valid approval, and the change set rules are applied again (defense in depth).
#   Dry runs without an approval are admitted with a warning. Shapes are in docs/policies.md.
package sizeguard.admission

import data.sizeguard.changeset
import data.sizeguard.lib

# METADATA
# title: Admission decision
# description: |
#   {allowed, reasons, warnings}. Every reason and warning starts with "sizeguard:" and says
#   what to do. The first matching case decides: malformed input or an unknown resource
#   (deny), no guarded change (allow), break-glass group (allow, named), scale subresource
#   (exempt principals only), ReplicaSet (a Deployment's: its controllers; standalone: like a
#   workload's lifecycle), pods/resize, LimitRange (exempt principals only), workload create/delete
#   (exempt principals only, in scope), HPA create/delete (in scope: exempt principals, or an
#   approval and the rules), then every other change: an approval and the rules.
# entrypoint: true
decision := {"allowed": false, "reasons": [malformed_reason], "warnings": []} if {
	not well_formed
} else := {"allowed": false, "reasons": [unknown_resource_reason], "warnings": []} if {
	guarded_operation
	not known_resource
} else := {"allowed": true, "reasons": [], "warnings": []} if {
	not guarded_change
} else := {"allowed": true, "reasons": [break_glass_reason], "warnings": [break_glass_reason]} if {
	count(break_glass_groups) > 0
} else := scale_decision if {
	subresource == "scale"
} else := replica_set_decision if {
	request.kind == replica_set_kind
} else := resize_decision if {
	subresource == "resize"
} else := limit_range_decision if {
	request.kind == "LimitRange"
} else := workload_lifecycle_decision if {
	request.kind in workload_kinds
	lifecycle_operation
} else := hpa_lifecycle_decision if {
	request.kind == lib.hpa_kind
	lifecycle_operation
} else := change_decision

# METADATA
# description: The admission request of the input ({} when absent).
request := lib.object_or_empty(object.get(input, "request", {}))

# METADATA
# scope: document
# description: The subresource of the request ("" when absent or null).
default subresource := ""

subresource := request.subresource if request.subresource != null

# METADATA
# description: The workload kinds sizeguard guards (apps/v1).
workload_kinds := {"Deployment", "StatefulSet", "DaemonSet"}

# METADATA
# description: The operations whose changes sizeguard guards (config.admission.guarded_operations).
guarded_operation if request.operation in lib.config.admission.guarded_operations

# METADATA
# description: True for a CREATE or DELETE (an object appears or disappears).
lifecycle_operation if request.operation in {"CREATE", "DELETE"}

# METADATA
# description: The state before the request (null for CREATE).
before := object.get(input, "before", null)

# METADATA
# description: The state after the request (null for DELETE).
after := object.get(input, "after", null)

# METADATA
# scope: document
# description: |
#   True when the input has what the decision needs: an operation; for a guarded operation
#   also the user, kind, namespace and name, a string subresource (or none), the states
#   the operation implies (before null for CREATE, after null for DELETE, else objects) and,
#   for a ReplicaSet, the ownership context.
well_formed if {
	is_string(request.operation)
	not guarded_operation
}

well_formed if {
	guarded_operation
	is_string(subresource)
	states_fit_operation
	ownership_well_formed
	is_string(request.user)
	is_string(request.kind)
	is_string(request.namespace)
	is_string(request.name)
}

# METADATA
# scope: document
# description: True when before/after are what the operation implies.
states_fit_operation if {
	request.operation == "CREATE"
	before == null
	is_object(after)
}

states_fit_operation if {
	request.operation == "DELETE"
	is_object(before)
	after == null
}

states_fit_operation if {
	not request.operation in {"CREATE", "DELETE"}
	is_object(before)
	is_object(after)
}

# METADATA
# description: The reason a malformed input is denied.
malformed_reason := concat("", [
	"sizeguard: the admission input is malformed (it needs request.operation, user, kind, ",
	"namespace, name and the guarded before/after states: before null only for CREATE, ",
	"after null only for DELETE; for a ReplicaSet also context.owner_before, owner_after ",
	"and labels_changed); the request is denied, check the sizeguard webhook's logs",
])

# METADATA
# scope: document
# description: |
#   True for the resources this policy decides: workloads (and their scale subresource),
#   ReplicaSets, HPAs, LimitRanges and pods/resize.
known_resource if {
	request.kind in (workload_kinds | {replica_set_kind})
	subresource in {"", "scale"}
}

known_resource if {
	request.kind in {lib.hpa_kind, "LimitRange"}
	subresource == ""
}

known_resource if {
	request.kind == "Pod"
	subresource == "resize"
}

# METADATA
# description: The reason a request of a resource this policy does not know is denied.
unknown_resource_reason := sprintf(
	"sizeguard: %s of %s %s (subresource %q) by %s is denied: sizeguard decides only %s; %s",
	[
		request.operation, request.kind, short, subresource, request.user,
		"workloads, their scale subresource, ReplicaSets, HPAs, LimitRanges and pods/resize",
		"check the webhook registration (rules) against docs/webhook.md",
	],
)

# METADATA
# scope: document
# description: |
#   True when a guarded operation changes the guarded state, or (a ReplicaSet) what ties it
#   to a Deployment: its labels or its controller owner.
guarded_change if {
	guarded_operation
	before != after
}

guarded_change if {
	guarded_operation
	request.kind == replica_set_kind
	ownership_changed
}

# METADATA
# description: The target of the request, shaped like a change set target.
target := {"kind": request.kind, "namespace": request.namespace, "name": request.name}

# METADATA
# description: The request's object as "<namespace>/<name>" for messages.
short := lib.target_short(target)

# METADATA
# description: The request's object as "<Kind> <namespace>/<name>" for messages.
named := concat(" ", [request.kind, short])

# METADATA
# scope: document
# description: The request's groups ([] when absent).
default groups := []

groups := request.groups if is_array(request.groups)

# METADATA
# description: True for a dry-run request.
dry_run if request.dry_run == true

# METADATA
# description: The namespace's labels from the context ({} when absent).
namespace_labels := lib.object_or_empty(object.get(input, ["context", "namespace_labels"], {}))

# METADATA
# description: True when the request's namespace is production (by name or by label).
production := lib.is_production(request.namespace, namespace_labels)

# METADATA
# scope: document
# description: What changes, as people read it, e.g. "CPU request" or "CPU limit, replicas".
default summary := "footprint"

summary := "LimitRange limits" if {
	request.kind == "LimitRange"
} else := concat(", ", labels) if {
	labels := sort({value.label | some value in lib.changed_values(before, after)})
	count(labels) > 0
}

# METADATA
# description: |
#   What the request does, as people read it: "CPU request change on shop/web",
#   "creation of HorizontalPodAutoscaler shop/web".
change_phrase := sprintf("creation of %s", [named]) if {
	request.operation == "CREATE"
} else := sprintf("deletion of %s", [named]) if {
	request.operation == "DELETE"
} else := sprintf("%s change on %s", [summary, short])

# METADATA
# description: The gerund of the request's operation, for messages ("creating", "deleting", "changing").
doing := object.get({"CREATE": "creating", "DELETE": "deleting"}, request.operation, "changing")

# METADATA
# description: The request's break-glass groups (config.admission.break_glass_groups).
break_glass_groups contains group if {
	some group in groups
	group in lib.config.admission.break_glass_groups
}

# METADATA
# description: What a break-glass request did, as its reason says it.
break_glass_action := sprintf("created %s", [named]) if {
	request.operation == "CREATE"
} else := sprintf("deleted %s", [named]) if {
	request.operation == "DELETE"
} else := sprintf("changed %s on %s", [summary, short])

# METADATA
# description: The reason (and warning) naming a break-glass admission.
break_glass_reason := sprintf(
	"sizeguard: break-glass: %s (group %s) %s without an approval or policy checks; %s",
	[
		request.user, concat(", ", sort(break_glass_groups)), break_glass_action,
		"record why, and bring the workload back to an approved state through sizeguard",
	],
)

# METADATA
# scope: document
# description: True when the request's user or one of its groups is exempt from the scale rule.
scale_exempt if request.user in lib.config.admission.scale_exempt_users

# Users and groups are separate lists: a group that happens to be named like the HPA
# controller's service account must not exempt whoever can assert it.
scale_exempt if {
	some group in groups
	group in lib.config.admission.scale_exempt_groups
}

# METADATA
# description: Scale subresource requests are admitted for exempt principals only.
scale_decision := {"allowed": true, "reasons": [reason], "warnings": []} if {
	scale_exempt
	reason := sprintf("sizeguard: scale of %s by exempt principal %s admitted", [short, request.user])
} else := {"allowed": false, "reasons": [reason], "warnings": []} if {
	reason := sprintf(
		"sizeguard: scale requests on %s are denied for %s; %s",
		[
			short, request.user,
			"change replicas through the sizeguard MCP server, which applies an approved change",
		],
	)
}

# METADATA
# scope: document
# description: True when the request's user or one of its groups may resize pods in place.
resize_exempt if request.user in lib.config.admission.resize_exempt_users

resize_exempt if {
	some group in groups
	group in lib.config.admission.resize_exempt_groups
}

# METADATA
# description: |
#   In-place pod resize (pods/resize) changes what a running pod requests without touching
#   its workload: admitted for config.admission.resize_exempt_users/groups only.
resize_decision := {"allowed": true, "reasons": [reason], "warnings": []} if {
	resize_exempt
	reason := sprintf("sizeguard: resize of pod %s by exempt principal %s admitted", [short, request.user])
} else := {"allowed": false, "reasons": [reason], "warnings": []} if {
	reason := sprintf(
		"sizeguard: in-place resize (pods/resize) of pod %s by %s is denied; %s",
		[
			short, request.user,
			concat("", [
				"change the resources of the workload that owns the pod through the sizeguard MCP server, ",
				"which applies an approved change",
			]),
		],
	)
}

# METADATA
# description: The facts the change set rules need about the target.
change_context := changeset.change_context(
	change,
	object.get(input, ["context", "labels"], {}),
	namespace_labels,
)

# METADATA
# description: The change as the change set rules see it.
change := {"target": target, "before": before, "after": after, "op": approved_op}

# METADATA
# description: The change set rules' violations for this change (defense in depth).
violations := changeset.change_violations(change, change_context)

# METADATA
# scope: document
# description: The operation a valid approval signs; apply without one.
default approved_op := "apply"

approved_op := input.approval.claims.op if approved

# METADATA
# description: The approval ops that fit each operation (an UPDATE is applied or rolled back).
fitting_ops := {"CREATE": {"create"}, "DELETE": {"delete"}, "UPDATE": {"apply", "rollback"}}

# METADATA
# description: True when the webhook verified a valid approval whose op fits this operation.
approved if {
	input.approval.valid == true
	input.approval.claims.op in fitting_ops[request.operation]
}

# METADATA
# scope: document
# description: True when the request carries an approval (valid or not).
approval_present if input.approval.present == true

approval_present if input.approval.valid == true

# METADATA
# description: The decision for a change that needs an approval (and passes the rules).
change_decision := {
	"allowed": count(deny_reasons) == 0,
	"reasons": array.concat(sort(deny_reasons), sort(allow_reasons)),
	"warnings": sort(warnings),
}

# METADATA
# scope: document
# description: Why the change is denied (policy violations, a missing or invalid approval, an HPA too young to delete).
deny_reasons contains reason if {
	some violation in violations
	reason := sprintf(
		"sizeguard: %s [%s]; this is denied even with an approval, propose a change within policy",
		[violation.message, violation.code],
	)
}

deny_reasons contains reason if {
	not approved
	not dry_run
	not approval_present
	reason := sprintf(
		"sizeguard: %s needs an approval; request one through the sizeguard MCP server",
		[change_phrase],
	)
}

deny_reasons contains reason if {
	not approved
	not dry_run
	approval_present
	reason := sprintf(
		"sizeguard: the approval on %s is not valid (%s); request a new one through the sizeguard MCP server",
		[short, approval_error],
	)
}

deny_reasons contains reason if {
	request.kind == lib.hpa_kind
	request.operation == "DELETE"
	not input.context.recently_created == false
	reason := sprintf(
		"sizeguard: deleting %s by %s is denied: it was created less than 2 minutes ago (or its age is unknown); %s",
		[
			named, request.user,
			"try again once it is 2 minutes old, when no approval that could create it again is still valid",
		],
	)
}

# METADATA
# scope: document
# description: The verifier's error code for an invalid approval ("invalid" when none given).
default approval_error := "invalid"

approval_error := "wrong_operation" if {
	input.approval.valid == true
} else := input.approval.error if {
	is_string(input.approval.error)
}

# METADATA
# scope: document
# description: Informational reasons when the change is admitted.
allow_reasons contains reason if {
	count(deny_reasons) == 0
	approved
	reason := sprintf("sizeguard: %s admitted with a valid approval", [change_phrase])
}

allow_reasons contains reason if {
	count(deny_reasons) == 0
	not approved
	reason := sprintf("sizeguard: dry run of the %s admitted without a valid approval", [change_phrase])
}

# METADATA
# scope: document
# description: Warnings returned to the client (kubectl prints them).
warnings contains warning if {
	dry_run
	not approved
	warning := sprintf(
		"sizeguard: dry run admitted; the real %s needs an approval from the sizeguard MCP server",
		[change_phrase],
	)
}

warnings contains warning if {
	some finding in changeset.change_warnings(change, change_context)
	warning := sprintf("sizeguard: %s", [finding.message])
}
