# The request and limit rules of the change set policy (package metadata: changeset.rego), for
# every holder of resources (containers, init containers, the pod-level resources) and every
# resource (cpu, memory, ephemeral-storage, extended resources such as nvidia.com/gpu): a set
# request is greater than zero, a limit is at least its request, and in production the limits
# in config.production.keep_limits stay set.
package sizeguard.changeset

import data.sizeguard.lib

# METADATA
# description: |
#   Requests that are set must be greater than zero, per container, init container and the
#   pod-level resources, for cpu, memory and every other resource.
request_violations(after, cctx) := {{"code": "request_not_positive", "target": cctx.key, "message": message} |
	some problem in request_problems(after)
	message := sprintf(
		"%s request of %s%s is %s; a request must be greater than zero when set",
		[
			lib.resource_label(problem.resource), lib.holder_where(problem.holder), cctx.short,
			lib.format_value(lib.value_resource(problem.resource), problem.request),
		],
	)
}

# METADATA
# description: |
#   The requests of a state that are set but not greater than zero, as {holder, resource,
#   request}: computed once per state, however many changes share it. cpu and memory are
#   checked field by field, the other resources entry by entry.
request_problems(state) := array.concat(
	array.concat(
		[{"holder": holder, "resource": "cpu", "request": request} |
			some holder in lib.resource_holders(state)
			request := holder.resources.cpu_request
			request <= 0
			is_number(request)
		],
		[{"holder": holder, "resource": "memory", "request": request} |
			some holder in lib.resource_holders(state)
			request := holder.resources.memory_request
			request <= 0
			is_number(request)
		],
	),
	[{"holder": holder, "resource": resource, "request": request} |
		some holder in lib.resource_holders(state)
		some resource, request in holder.resources.other_requests
		request <= 0
		is_number(request)
	],
)

# METADATA
# description: Limits must be at least the requests, per holder and resource (see request_violations).
limit_violations(after, cctx) := {{"code": "limit_below_request", "target": cctx.key, "message": message} |
	some problem in limit_problems(after)
	resource := lib.value_resource(problem.resource)
	message := sprintf(
		"%s limit of %s%s (%s) is below its request (%s); a limit must be at least the request",
		[
			lib.resource_label(problem.resource), lib.holder_where(problem.holder), cctx.short,
			lib.format_value(resource, problem.limit), lib.format_value(resource, problem.request),
		],
	)
}

# METADATA
# description: |
#   The limits of a state that are below their requests, as {holder, resource, limit,
#   request}: computed once per state, however many changes share it (see request_problems).
limit_problems(state) := array.concat(
	array.concat(
		[{"holder": holder, "resource": "cpu", "limit": limit, "request": request} |
			some holder in lib.resource_holders(state)
			limit := holder.resources.cpu_limit
			request := holder.resources.cpu_request
			limit < request
			is_number(limit)
			is_number(request)
		],
		[{"holder": holder, "resource": "memory", "limit": limit, "request": request} |
			some holder in lib.resource_holders(state)
			limit := holder.resources.memory_limit
			request := holder.resources.memory_request
			limit < request
			is_number(limit)
			is_number(request)
		],
	),
	[{"holder": holder, "resource": resource, "limit": limit, "request": request} |
		some holder in lib.resource_holders(state)
		some resource, limit in holder.resources.other_limits
		request := holder.resources.other_requests[resource]
		limit < request
		is_number(limit)
		is_number(request)
	],
)

# METADATA
# description: In production, the limits in config.production.keep_limits stay set.
kept_limit_violations(values, cctx) := {violation |
	cctx.production
	some value in values
	value.field in lib.config.production.keep_limits
	is_number(value.before)
	value.after == null
	message := sprintf(
		"%s of %s%s would be removed (%s → unset); keep it set in production",
		[value.label, value.where, cctx.short, lib.format_value(value.resource, value.before)],
	)
	violation := {"code": "limit_removed_in_production", "target": cctx.key, "message": message}
}
