# The size rules of the change set policy (package metadata: changeset.rego): increases and
# decreases of requests, limits and replica counts beyond the deny thresholds are violations,
# beyond the warning ones warnings; a rollback only warns.
package sizeguard.changeset

import data.sizeguard.lib

# METADATA
# description: |
#   A message about the size of a change to one guarded value (a size_changes entry), e.g.
#   "CPU request of container web in shop/web rises 150% (100m → 250m); <tail>".
size_message(size, cctx, tail) := sprintf("%s of %s%s %s %s (%s → %s); %s", [
	size.value.label, size.value.where, cctx.short,
	size_words[size.pct > 0].verb, lib.format_percent(size.pct),
	lib.format_value(size.value.resource, size.value.before), lib.format_value(size.value.resource, size.value.after),
	tail,
])

# METADATA
# description: |
#   What a size finding says, by whether the value rises (true) or falls (false): its verb,
#   its codes (by level) and the thresholds it refers to (by level).
size_words := {
	true: {
		"verb": "rises",
		"code": {"deny": "increase_too_large", "warn": "increase_large"},
		"limit": {"deny": "deny_increase_percent", "warn": "warn_increase_percent"},
	},
	false: {
		"verb": "falls",
		"code": {"deny": "decrease_too_large", "warn": "decrease_large"},
		"limit": {"deny": "deny_decrease_percent", "warn": "warn_decrease_percent"},
	},
}

# METADATA
# description: |
#   Increases and decreases beyond the deny thresholds, of every sized value: requests and
#   limits of every resource (per container and pod-level), replicas and HPA bounds.
size_violations(change, values, cctx) := {{"code": words.code.deny, "target": cctx.key, "message": message} |
	some size in size_changes(values, cctx.thresholds)
	size.level == "deny"
	not restores(change)
	words := size_words[size.pct > 0]
	message := size_message(size, cctx, sprintf("the limit is %v%%", [cctx.thresholds[words.limit.deny]]))
}

# METADATA
# description: |
#   Increases and decreases beyond the warning thresholds but within the deny ones (and, for a
#   rollback, beyond the deny ones: see restores), at the threshold they go beyond.
size_warnings(change, values, cctx) := {{"code": words.code.warn, "target": cctx.key, "message": message} |
	some size in size_changes(values, cctx.thresholds)
	level := warning_level(change, size.level)
	words := size_words[size.pct > 0]
	message := size_message(size, cctx, sprintf(
		"changes beyond %v%% deserve a careful review",
		[cctx.thresholds[words.limit[level]]],
	))
}

# METADATA
# description: |
#   A rollback puts back values a human approved before (the server builds it from its
#   snapshots; at admission the op comes from a verified approval), so the size limits only
#   warn about it, and the availability floor rule (replicas.rego) lets it be. Every other
#   rule still applies.
restores(change) if change.op == "rollback"

# METADATA
# scope: document
# description: The threshold level a size change (of a size level, see size_level) is warned at, if any.
warning_level(_, "warn") := "warn"

warning_level(change, "deny") := "deny" if restores(change)
