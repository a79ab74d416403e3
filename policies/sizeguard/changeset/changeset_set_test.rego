package sizeguard.changeset_test

# Replica, HPA, capacity and change-set-wide rules. Fixtures are in changeset_test.rego.

import data.sizeguard.changeset
import data.sizeguard.lib
import data.sizeguard.lib_test

hpa(min_replicas, max_replicas) := {
	"replicas": null,
	"containers": {},
	"init_containers": {},
	"min_replicas": min_replicas,
	"max_replicas": max_replicas,
}

daemonset(cpu) := deployment(null, cpu)

test_replicas_to_zero_in_production_denied if {
	policy_input := changes_input([change("Deployment", "shop-prod", "web", deployment(2, 100), deployment(0, 100))])
	d := changeset.decision with input as policy_input with lib.config as lib_test.fixture
	codes(d.violations) == {"replicas_zero_in_production", "decrease_too_large"}
	some v in d.violations
	v.code == "replicas_zero_in_production"
	v.message == "replicas of shop-prod/web would go to 0 in production namespace shop-prod; keep at least one"
}

test_replicas_to_zero_outside_production_is_only_a_size_violation if {
	policy_input := changes_input([change("Deployment", "shop", "web", deployment(2, 100), deployment(0, 100))])
	d := changeset.decision with input as policy_input with lib.config as lib_test.fixture
	codes(d.violations) == {"decrease_too_large"}
}

test_replicas_above_bound_denied if {
	roomy := {"nodes": 50, "allocatable": {"cpu": 500000, "memory": 500 * gib}, "requested": capacity.requested}
	changes := [change("Deployment", "shop", "web", deployment(100, 100), deployment(250, 100))]
	d := changeset.decision with input as within(changes, roomy) with lib.config as lib_test.fixture
	d.violations == [{
		"code": "replicas_out_of_bounds",
		"target": "Deployment/shop/web",
		"message": "replicas of shop/web would be 250; the allowed range is 0 to 200",
	}]
}

test_replicas_below_namespace_bound_denied if {
	changes := [change("Deployment", "shop", "web", deployment(3, 100), deployment(2, 100))]
	d := changeset.decision with input as changes_input(changes)
		with lib.config as patched({"namespaces": {"shop": {"replicas": {"min": 3}}}})
	codes(d.violations) == {"replicas_out_of_bounds"}
}

test_unchanged_replicas_out_of_bounds_not_reported if {
	policy_input := changes_input([change("Deployment", "shop", "web", deployment(250, 100), deployment(250, 110))])
	d := changeset.decision with input as policy_input with lib.config as lib_test.fixture
	d.allowed
}

test_hpa_min_above_max_denied if {
	policy_input := changes_input([change("HorizontalPodAutoscaler", "shop", "web", hpa(2, 10), hpa(8, 6))])
	d := changeset.decision with input as policy_input with lib.config as lib_test.fixture
	codes(d.violations) == {"hpa_min_above_max"}
	some v in d.violations
	v.code == "hpa_min_above_max"
	v.message == "HPA minReplicas of shop/web (8) is above its maxReplicas (6); min must not exceed max"
}

test_hpa_retarget_denied if {
	before := object.union(hpa(2, 10), {"scale_target": "apps/v1/Deployment/web"})
	after := object.union(hpa(2, 10), {"scale_target": "apps/v1/Deployment/db"})
	policy_input := changes_input([change("HorizontalPodAutoscaler", "shop", "web", before, after)])
	d := changeset.decision with input as policy_input with lib.config as lib_test.fixture
	codes(d.violations) == {"hpa_retarget"}
	d.violations[0].message == concat("", [
		"the HPA shop/web would be retargeted from apps/v1/Deployment/web to apps/v1/Deployment/db; ",
		"sizeguard does not approve retargeting an HPA",
	])
}

test_hpa_min_to_zero_in_production_denied if {
	policy_input := changes_input([change("HorizontalPodAutoscaler", "shop-prod", "web", hpa(2, 10), hpa(0, 10))])
	d := changeset.decision with input as policy_input with lib.config as lib_test.fixture
	"replicas_zero_in_production" in codes(d.violations)
}

test_empty_change_set_denied if {
	d := changeset.decision with input as changes_input([]) with lib.config as lib_test.fixture
	d == {
		"allowed": false,
		"risk": "low",
		"violations": [{
			"code": "empty_change_set",
			"target": "",
			"message": "the change set is empty; propose at least one change",
		}],
		"warnings": [],
		"requires": [],
		"approval_levels": 1,
	}
}

test_missing_changes_denied if {
	d := changeset.decision with input as {} with lib.config as lib_test.fixture
	codes(d.violations) == {"empty_change_set"}
}

test_changes_not_a_list_denied if {
	d := changeset.decision with input as {"changes": "all of them"} with lib.config as lib_test.fixture
	codes(d.violations) == {"empty_change_set", "invalid_input"}
}

test_malformed_change_denied if {
	d := changeset.decision with input as changes_input([{"target": {"kind": "Deployment"}}])
		with lib.config as lib_test.fixture
	d.violations == [{
		"code": "invalid_change",
		"target": "",
		"message": concat("", [
			"change #1 is malformed: it needs target.kind, target.namespace, target.name and before/after objects ",
			"(before null to create or after null to delete a HorizontalPodAutoscaler; nothing else is created or deleted)",
		]),
	}]
}

test_too_many_targets_denied if {
	changes := [web_change(sprintf("team-%d", [i]), 100, 110) | some i in numbers.range(1, 3)]
	d := changeset.decision with input as changes_input(changes) with lib.config as patched({"max_targets": 2})
	d.violations == [{
		"code": "too_many_targets",
		"target": "",
		"message": "the change set has 3 targets; at most 2 are allowed in one change set, split it",
	}]
}

test_duplicate_target_denied if {
	policy_input := changes_input([web_change("shop", 100, 110), web_change("shop", 100, 120)])
	d := changeset.decision with input as policy_input with lib.config as lib_test.fixture
	d.violations == [{
		"code": "duplicate_target",
		"target": "Deployment/shop/web",
		"message": "Deployment/shop/web appears more than once in the change set; merge its changes into one",
	}]
}

test_exceeds_cpu_capacity_denied if {
	# 3 replicas x +2500m = +7500m; 4000m + 7500m = 11500m > 90% of 12000m
	d := changeset.decision with input as changes_input([web_change("shop", 500, 3000)])
		with lib.config as lib_test.fixture
	d.violations == [{
		"code": "exceeds_capacity",
		"target": "",
		"message": concat("", [
			"the change set adds 7500m of CPU requests, bringing the cluster to 11500m of 12000m allocatable; ",
			"with 10% headroom at most 10800m may be requested",
		]),
	}]
}

test_exceeds_memory_capacity_denied if {
	before := deployment(4, 100)
	bigger := {"memory_request": 2 * gib, "memory_limit": 2 * gib}
	after := object.union(before, {"replicas": 20, "containers": {"web": bigger}})
	d := changeset.decision with input as changes_input([change("Deployment", "shop", "web", before, after)])
		with lib.config as patched({"thresholds": {"deny_increase_percent": 10000}})
	codes(d.violations) == {"exceeds_capacity"}
	contains(d.violations[0].message, "of memory requests")
}

test_daemonset_capacity_counts_nodes if {
	# 3 nodes x +2000m = +6000m; 4000m + 6000m = 10000m fits within 10800m
	fits_input := changes_input([change("DaemonSet", "shop", "agent", daemonset(1000), daemonset(3000))])
	fits := changeset.decision with input as fits_input with lib.config as lib_test.fixture
	fits.allowed

	# 3 nodes x +2400m = +7200m exceeds it
	exceeds_input := changes_input([change("DaemonSet", "shop", "agent", daemonset(1000), daemonset(3400))])
	exceeds := changeset.decision with input as exceeds_input with lib.config as lib_test.fixture
	codes(exceeds.violations) == {"exceeds_capacity"}
}

test_decrease_fits_even_over_capacity if {
	full := {"nodes": 1, "allocatable": {"cpu": 1000, "memory": gib}, "requested": {"cpu": 5000, "memory": 2 * gib}}
	policy_input := {"changes": [web_change("shop", 200, 150)], "context": {"capacity": full}}
	d := changeset.decision with input as policy_input with lib.config as lib_test.fixture
	d.allowed
}

test_unknown_capacity_denies_increases if {
	d := changeset.decision with input as {"changes": [web_change("shop", 100, 150)], "context": {}}
		with lib.config as lib_test.fixture
	d.violations == [{
		"code": "capacity_unknown",
		"target": "",
		"message": "the change set adds CPU requests but the context has no cluster capacity to check them against",
	}]
}

test_unknown_capacity_allows_decreases if {
	d := changeset.decision with input as {"changes": [web_change("shop", 200, 150)]}
		with lib.config as lib_test.fixture
	d.allowed
}
