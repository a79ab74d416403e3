# METADATA
# title: sizeguard admission policy
# description: |
#   Decides whether the cluster admits one request to a guarded workload. The webhook
#   verifies the approval's signature and binding and passes the result in input.approval;
#   this policy decides what that means: unchanged guarded state is admitted, a change needs
#   a valid approval, scale requests are denied unless the principal is exempt, dry runs
#   without an approval are admitted with a warning, a break-glass group is admitted but
#   named, and the change set rules are applied again to the change (defense in depth).
#   Input and output shapes are documented in docs/policies.md.
package sizeguard.admission

import data.sizeguard.changeset
import data.sizeguard.lib

# METADATA
# title: Admission decision
# description: |
#   {allowed, reasons, warnings}. Every reason and warning starts with "sizeguard:" and says
#   what to do. The first matching case decides: malformed input (deny), unchanged guarded
#   state (allow), break-glass group (allow, named), scale subresource (exempt principals
#   only), then policy violations and the approval.
# entrypoint: true
decision := {"allowed": false, "reasons": [malformed_reason], "warnings": []} if {
	not well_formed
} else := {"allowed": true, "reasons": [], "warnings": []} if {
	not guarded_change
} else := {"allowed": true, "reasons": [break_glass_reason], "warnings": [break_glass_reason]} if {
	count(break_glass_groups) > 0
} else := scale_decision if {
	request.subresource == "scale"
} else := change_decision

# METADATA
# description: The admission request of the input ({} when absent).
request := lib.object_or_empty(object.get(input, "request", {}))

# METADATA
# description: The operations whose changes sizeguard guards (config.admission.guarded_operations).
guarded_operation if request.operation in lib.config.admission.guarded_operations

# METADATA
# scope: document
# description: |
#   True when the input has what the decision needs: an operation; for a guarded operation
#   also the user, kind, namespace and name and both guarded states.
well_formed if {
	is_string(request.operation)
	not guarded_operation
}

well_formed if {
	guarded_operation
	is_object(input.before)
	is_object(input.after)
	every field in ["user", "kind", "namespace", "name"] {
		is_string(request[field])
	}
}

# METADATA
# description: The reason a malformed input is denied.
malformed_reason := concat("", [
	"sizeguard: the admission input is malformed (it needs request.operation, user, kind, ",
	"namespace, name and the guarded before/after states); the change is denied, ",
	"check the sizeguard webhook's logs",
])

# METADATA
# description: True when a guarded operation changes the guarded state.
guarded_change if {
	guarded_operation
	input.before != input.after
}

# METADATA
# description: The target of the request, shaped like a change set target.
target := {"kind": request.kind, "namespace": request.namespace, "name": request.name}

# METADATA
# description: The request's workload as "<namespace>/<name>" for messages.
short := lib.target_short(target)

# METADATA
# scope: document
# description: The request's groups ([] when absent).
default groups := []

groups := request.groups if is_array(request.groups)

# METADATA
# description: True for a dry-run request.
dry_run if request.dry_run == true

# METADATA
# description: What changes, as people read it, e.g. "CPU request" or "CPU limit, replicas".
summary := concat(", ", sort({value.label | some value in lib.changed_values(input.before, input.after)}))

# METADATA
# description: The request's break-glass groups (config.admission.break_glass_groups).
break_glass_groups contains group if {
	some group in groups
	group in lib.config.admission.break_glass_groups
}

# METADATA
# description: The reason (and warning) naming a break-glass admission.
break_glass_reason := sprintf(
	"sizeguard: break-glass: %s (group %s) changed %s on %s without an approval or policy checks; %s",
	[
		request.user, concat(", ", sort(break_glass_groups)), summary, short,
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
# description: The facts the change set rules need about the target.
change_context := changeset.change_context(
	target,
	object.get(input, ["context", "labels"], {}),
	object.get(input, ["context", "namespace_labels"], {}),
)

# METADATA
# description: The change set rules' violations for this change (defense in depth).
violations := changeset.change_violations(
	{"target": target, "before": input.before, "after": input.after, "op": approved_op},
	change_context,
)

# METADATA
# scope: document
# description: The operation a valid approval signs (apply or rollback); apply without one.
default approved_op := "apply"

approved_op := input.approval.claims.op if approved

# METADATA
# description: True when the webhook verified a valid approval for exactly this change.
approved if input.approval.valid == true

# METADATA
# description: The decision for a changed guarded state that is not break-glass or scale.
change_decision := {
	"allowed": count(deny_reasons) == 0,
	"reasons": array.concat(sort(deny_reasons), sort(allow_reasons)),
	"warnings": sort(warnings),
}

# METADATA
# scope: document
# description: Why the change is denied (policy violations, a missing or invalid approval).
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
	not input.approval.present
	reason := sprintf(
		"sizeguard: %s change on %s needs an approval; request one through the sizeguard MCP server",
		[summary, short],
	)
}

deny_reasons contains reason if {
	not approved
	not dry_run
	input.approval.present
	reason := sprintf(
		"sizeguard: the approval on %s is not valid (%s); request a new one through the sizeguard MCP server",
		[short, approval_error],
	)
}

# METADATA
# scope: document
# description: The verifier's error code for an invalid approval ("invalid" when none given).
default approval_error := "invalid"

approval_error := input.approval.error if is_string(input.approval.error)

# METADATA
# scope: document
# description: Informational reasons when the change is admitted.
allow_reasons contains reason if {
	count(deny_reasons) == 0
	approved
	reason := sprintf("sizeguard: %s change on %s admitted with a valid approval", [summary, short])
}

allow_reasons contains reason if {
	count(deny_reasons) == 0
	not approved
	reason := sprintf("sizeguard: dry run of the %s change on %s admitted without a valid approval", [summary, short])
}

# METADATA
# scope: document
# description: Warnings returned to the client (kubectl prints them).
warnings contains warning if {
	dry_run
	not approved
	warning := sprintf(
		"sizeguard: dry run admitted; the real %s change on %s needs an approval from the sizeguard MCP server",
		[summary, short],
	)
}

warnings contains warning if {
	some finding in changeset.change_warnings(
		{"target": target, "before": input.before, "after": input.after},
		change_context,
	)
	not finding.code in {"production_namespace", "critical_workload"}
	warning := sprintf("sizeguard: %s", [finding.message])
}
