# sizeguard approval strength (part of the change set policy, package sizeguard.changeset).
# How strongly a person must prove they approved a change set: the requires member of the
# change set decision. Each target falls in one category — critical_production (a critical
# workload in a production namespace), production, critical or other — and the categories
# of a change set's targets name the levels it requires, from
# data.sizeguard.config.approval (policies/data.json). The levels, weakest first:
# confirmation (the MCP client's answer is enough; the default, named by nothing),
# typed_confirmation (the namespace typed), authenticated_approver (an enrolled approver's
# passkey on the approval page), two_approvers (two different enrolled approvers, neither
# the requester). A category without configured levels, or levels that are not a list of
# known names, requires the strongest set (fail closed).
package sizeguard.changeset

import data.sizeguard.lib

# METADATA
# description: |
#   The version of the approval levels requires names, in the decision as approval_levels
#   (sizeguard.policy.APPROVAL_LEVELS): the server refuses a change set decision without it.
approval_levels := 1

# METADATA
# description: |
#   The approval levels sizeguard knows, weakest first: confirmation, typed_confirmation,
#   authenticated_approver, two_approvers.
known_approval_levels := {"confirmation", "typed_confirmation", "authenticated_approver", "two_approvers"}

# METADATA
# description: What a category requires when data.json does not say (or says it wrongly).
strongest_requirements := {"typed_confirmation", "authenticated_approver", "two_approvers"}

# METADATA
# description: |
#   The approval category of a target by its context's production and critical flags:
#   approval_category_of[production][critical] (a lookup, not a function call per target).
approval_category_of := {
	true: {true: "critical_production", false: "production"},
	false: {true: "critical", false: "other"},
}

# METADATA
# description: |
#   The levels data.json gives an approval category, as a set; the strongest when missing or
#   not a list of known levels.
category_requirements(name) := levels if {
	configured := lib.config.approval[name]
	is_array(configured)
	levels := {level | some level in configured}
	count(levels - known_approval_levels) == 0
} else := strongest_requirements

# METADATA
# description: |
#   What approving this change set requires of the person, beyond a confirmation: the levels
#   of the categories of its targets (looked up once per category, not once per target).
requires contains level if {
	some name in {approval_category_of[cctx.production][cctx.critical] | some cctx in contexts}
	some level in category_requirements(name)
}
