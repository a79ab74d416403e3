# The lifecycle part of the admission policy (package metadata: admission.rego): LimitRanges,
# and the CREATE and DELETE of workloads and HPAs. Whether a namespace is guarded for each
# kind of object is a scope in config.admission.lifecycle ("production", "all" or "none"); in
# scope, workloads and LimitRanges are left to exempt principals (sizeguard approves neither),
# HPAs to exempt principals or an approval (change_decision in admission.rego).
package sizeguard.admission

import data.sizeguard.lib

# METADATA
# description: The lifecycle settings (config.admission.lifecycle; {} when absent).
lifecycle := object.get(lib.config.admission, "lifecycle", {})

# METADATA
# description: |
#   The scope set for a kind of object (workloads, hpas, limit_ranges) in
#   config.admission.lifecycle; "all" when unset (fail closed).
scope(kind_of) := object.get(lifecycle, kind_of, "all")

# METADATA
# scope: document
# description: |
#   True when the request's namespace is in the scope set for a kind of object in
#   config.admission.lifecycle: "production" (a production namespace), "all" or "none".
#   An unknown value is treated as "all" (fail closed).
in_scope(kind_of) if {
	scope(kind_of) == "production"
	production
}

in_scope(kind_of) if not scope(kind_of) in {"production", "none"}

# METADATA
# scope: document
# description: True when the request's user or one of its groups is a lifecycle exempt principal.
lifecycle_exempt if request.user in object.get(lifecycle, "exempt_users", [])

lifecycle_exempt if {
	some group in groups
	group in object.get(lifecycle, "exempt_groups", [])
}

# METADATA
# description: How a lifecycle reason names the scope that put the namespace in scope.
scope_phrase(kind_of) := sprintf(
	"in namespace %s (config.admission.lifecycle.%s: %v)",
	[request.namespace, kind_of, scope(kind_of)],
)

# METADATA
# description: The reason an exempt principal's lifecycle request is admitted.
exempt_reason := sprintf("sizeguard: %s %s by exempt principal %s admitted", [doing, named, request.user])

# METADATA
# description: The reason a request outside a lifecycle scope is admitted.
out_of_scope_reason(kind_of) := sprintf(
	"sizeguard: %s %s admitted: namespace %s is outside config.admission.lifecycle.%s (%v)",
	[doing, named, request.namespace, kind_of, scope(kind_of)],
)

# METADATA
# description: What a deploying pipeline needs, for lifecycle reasons.
pipeline_hint := concat("", [
	"a deploying pipeline needs its user in config.admission.lifecycle.exempt_users ",
	"or one of its groups in exempt_groups (policies/data.json)",
])

# METADATA
# description: |
#   Workload CREATE/DELETE in scope (config.admission.lifecycle.workloads): exempt principals
#   only, since sizeguard approves no workload create or delete (a new or re-created workload
#   could have any size); out of scope: admitted.
workload_lifecycle_decision := {"allowed": true, "reasons": [out_of_scope_reason("workloads")], "warnings": []} if {
	not in_scope("workloads")
} else := {"allowed": true, "reasons": [exempt_reason], "warnings": []} if {
	lifecycle_exempt
} else := {"allowed": false, "reasons": [reason], "warnings": []} if {
	reason := sprintf(
		"sizeguard: %s %s is denied for %s: %s only exempt principals may create or delete workloads (%s); %s; %s",
		[
			doing, named, request.user, scope_phrase("workloads"),
			"sizeguard approves no workload create or delete, since a new workload can have any size",
			pipeline_hint,
			"to resize a workload, change it through the sizeguard MCP server",
		],
	)
}

# METADATA
# description: |
#   A LimitRange sets default requests and limits for containers that leave them unset: in
#   scope (config.admission.lifecycle.limit_ranges) only exempt principals may create, change
#   or delete one; out of scope: admitted.
limit_range_decision := {"allowed": true, "reasons": [out_of_scope_reason("limit_ranges")], "warnings": []} if {
	not in_scope("limit_ranges")
} else := {"allowed": true, "reasons": [exempt_reason], "warnings": []} if {
	lifecycle_exempt
} else := {"allowed": false, "reasons": [reason], "warnings": []} if {
	reason := sprintf(
		"sizeguard: %s %s is denied for %s: %s only exempt principals may create, change or delete LimitRanges (%s); %s",
		[
			doing, named, request.user, scope_phrase("limit_ranges"),
			"a LimitRange sets the default requests and limits of containers that leave them unset",
			pipeline_hint,
		],
	)
}

# METADATA
# description: |
#   HPA CREATE/DELETE: out of scope (config.admission.lifecycle.hpas) admitted, exempt
#   principals admitted, else like any other change: a valid approval for exactly this
#   create or delete, and the rules (replica bounds of the new HPA, ...).
hpa_lifecycle_decision := {"allowed": true, "reasons": [out_of_scope_reason("hpas")], "warnings": []} if {
	not in_scope("hpas")
} else := {"allowed": true, "reasons": [exempt_reason], "warnings": []} if {
	lifecycle_exempt
} else := change_decision
