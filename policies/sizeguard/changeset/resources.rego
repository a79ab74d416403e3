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
request_violations(after, cctx) := {finding("request_not_positive", cctx.key, message) |
	some where, holder in lib.resource_holders(after)
	some resource, meta in lib.named_resources
	request := holder[meta.request]
	is_number(request)
	request <= 0
	message := request_message(resource, where, request, cctx)
} | {finding("request_not_positive", cctx.key, message) |
	some where, holder in lib.resource_holders(after)
	some resource, request in holder.other_requests
	is_number(request)
	request <= 0
	message := request_message(resource, where, request, cctx)
}

# METADATA
# description: The message of a request that is not greater than zero.
request_message(resource, where, request, cctx) := sprintf(
	"%s request of %s%s is %s; a request must be greater than zero when set",
	[lib.resource_label(resource), where, cctx.short, lib.format_value(lib.value_resource(resource), request)],
)

# METADATA
# description: Limits must be at least the requests, per holder and resource (see request_violations).
limit_violations(after, cctx) := {finding("limit_below_request", cctx.key, message) |
	some where, holder in lib.resource_holders(after)
	some resource, meta in lib.named_resources
	limit := holder[meta.limit]
	request := holder[meta.request]
	is_number(limit)
	is_number(request)
	limit < request
	message := limit_message(resource, where, limit, request, cctx)
} | {finding("limit_below_request", cctx.key, message) |
	some where, holder in lib.resource_holders(after)
	some resource, limit in holder.other_limits
	request := holder.other_requests[resource]
	is_number(limit)
	is_number(request)
	limit < request
	message := limit_message(resource, where, limit, request, cctx)
}

# METADATA
# description: The message of a limit below its request.
limit_message(resource, where, limit, request, cctx) := sprintf(
	"%s limit of %s%s (%s) is below its request (%s); a limit must be at least the request",
	[
		lib.resource_label(resource), where, cctx.short,
		lib.format_value(lib.value_resource(resource), limit), lib.format_value(lib.value_resource(resource), request),
	],
)

# METADATA
# description: In production, the limits in config.production.keep_limits stay set.
kept_limit_violations(values, cctx) := {finding("limit_removed_in_production", cctx.key, message) |
	cctx.production
	some value in values
	value.field in lib.config.production.keep_limits
	is_number(value.before)
	value.after == null
	message := sprintf(
		"%s of %s%s would be removed (%s → unset); keep it set in production",
		[value.label, value.where, cctx.short, lib.format_value(value.resource, value.before)],
	)
}
