package sizeguard.changeset_test

import data.sizeguard.changeset
import data.sizeguard.lib
import data.sizeguard.lib_test

one_passkey := ["authenticated_approver", "typed_confirmation"]

two_passkeys := ["authenticated_approver", "two_approvers", "typed_confirmation"]

redis_change(namespace) := change("StatefulSet", namespace, "redis", deployment(1, 500), deployment(1, 600))

test_other_namespace_needs_a_confirmation_only if {
	d := changeset.decision with input as changes_input([web_change("shop", 100, 120)])
		with lib.config as lib_test.fixture
	d.requires == []
}

test_production_needs_an_authenticated_approver if {
	d := changeset.decision with input as changes_input([web_change("shop-prod", 100, 120)])
		with lib.config as lib_test.fixture
	d.requires == one_passkey
}

test_critical_workload_needs_an_authenticated_approver if {
	d := changeset.decision with input as changes_input([redis_change("shop")])
		with lib.config as lib_test.fixture
	d.requires == one_passkey
}

test_critical_in_production_needs_two_approvers if {
	d := changeset.decision with input as changes_input([redis_change("shop-prod")])
		with lib.config as lib_test.fixture
	d.requires == two_passkeys
}

# The strongest target decides for the whole change set.
test_mixed_change_set_takes_the_strongest if {
	d := changeset.decision with input as changes_input([web_change("shop", 100, 120), redis_change("shop-prod")])
		with lib.config as lib_test.fixture
	d.requires == two_passkeys
	e := changeset.decision with input as changes_input([web_change("shop", 100, 120), web_change("shop-prod", 100, 120)])
		with lib.config as lib_test.fixture
	e.requires == one_passkey
}

test_approval_categories if {
	changeset.approval_category_of[true][true] == "critical_production"
	changeset.approval_category_of[true][false] == "production"
	changeset.approval_category_of[false][true] == "critical"
	changeset.approval_category_of[false][false] == "other"
}

# Fail closed: no approval settings at all, a category missing, an unknown level, not a list.
test_missing_approval_config_requires_the_strongest if {
	d := changeset.decision with input as changes_input([web_change("shop", 100, 120)])
		with lib.config as object.remove(lib_test.fixture, ["approval"])
	d.requires == two_passkeys
}

test_missing_category_requires_the_strongest if {
	config := json.patch(lib_test.fixture, [{"op": "remove", "path": "/approval/production"}])
	changeset.category_requirements("production") == changeset.strongest_requirements with lib.config as config
	changeset.category_requirements("other") == set() with lib.config as config
}

test_unknown_level_requires_the_strongest if {
	config := json.patch(lib_test.fixture, [{"op": "replace", "path": "/approval/other", "value": ["retina_scan"]}])
	changeset.category_requirements("other") == changeset.strongest_requirements with lib.config as config
}

test_levels_not_a_list_require_the_strongest if {
	config := json.patch(lib_test.fixture, [{"op": "replace", "path": "/approval/other", "value": "confirmation"}])
	changeset.category_requirements("other") == changeset.strongest_requirements with lib.config as config
}

# A security team may raise a category, e.g. a passkey for every namespace.
test_security_team_raises_other_namespaces if {
	config := patched({"approval": object.union(lib_test.fixture.approval, {"other": ["authenticated_approver"]})})
	d := changeset.decision with input as changes_input([web_change("shop", 100, 120)])
		with lib.config as config
	d.requires == ["authenticated_approver"]
}

# What sizeguard promises by default (docs/policies.md); change together with data.json.
test_shipped_approval_defaults if {
	lib.config.approval.other == []
	lib.config.approval.production == ["typed_confirmation", "authenticated_approver"]
	lib.config.approval.critical == ["typed_confirmation", "authenticated_approver"]
	lib.config.approval.critical_production == ["typed_confirmation", "authenticated_approver", "two_approvers"]
}

test_the_decision_says_its_requires_come_from_approval_rego if {
	d := changeset.decision with input as changes_input([web_change("shop-prod", 100, 120)])
		with lib.config as lib_test.fixture
	d.approval_levels == 1
}

# An HPA is judged by the workload it scales too: a plain name on a critical workload's HPA
# does not make its change ask for less.
autoscale(before, after) := changes_input([change("HorizontalPodAutoscaler", "shop-prod", "autoscale", before, after)])

scaling_state(target) := {"min_replicas": 2, "max_replicas": 10, "scale_target": target}

test_an_hpa_of_a_critical_workload_needs_two_approvers if {
	before := scaling_state("apps/v1/Deployment/redis")
	d := changeset.decision with input as autoscale(before, object.union(before, {"max_replicas": 12}))
		with lib.config as lib_test.fixture
	d.requires == two_passkeys
}

test_an_hpa_is_critical_by_its_targets_labels if {
	inp := object.union(
		autoscale(scaling_state("apps/v1/Deployment/web"), null),
		{"context": {"labels": {"Deployment/shop-prod/web": {"sizeguard.io/critical": "true"}}}},
	)
	d := changeset.decision with input as inp with lib.config as lib_test.fixture
	d.requires == two_passkeys
}

test_an_hpa_of_a_plain_workload_keeps_the_production_requirement if {
	before := scaling_state("apps/v1/Deployment/web")
	d := changeset.decision with input as autoscale(before, object.union(before, {"max_replicas": 12}))
		with lib.config as lib_test.fixture
	d.requires == one_passkey
}
