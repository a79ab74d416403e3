package sizeguard.changeset_test

# The availability floor rule (replicas.rego): replicas and HPA minReplicas do not fall below
# the floor data.sizeguard.plan gives the workload. Fixtures are in changeset_test.rego and
# changeset_footprint_test.rego.

import data.sizeguard.changeset
import data.sizeguard.lib
import data.sizeguard.lib_test

floor_code := "replicas_below_availability_floor"

floor_codes(d) := {v.code | some v in d.violations} & {floor_code}

# The policy input scaling a workload from before to after replicas.
scaling(kind, namespace, name, before, after) := changes_input([change(
	kind, namespace, name,
	deployment(before, 100), deployment(after, 100),
)])

# The policy input of one HPA change in shop-prod.
hpa_change(before, after) := one("HorizontalPodAutoscaler", "shop-prod", before, after)

test_replicas_below_the_production_floor_denied if {
	d := changeset.decision with input as scaling("Deployment", "shop-prod", "web", 3, 1)
		with lib.config as lib_test.fixture
	d.violations == [{
		"code": floor_code,
		"target": "Deployment/shop-prod/web",
		"message": concat("", [
			"replicas of shop-prod/web would be 1, below its availability floor of 2: shop-prod/web ",
			"is in production namespace shop-prod: at least 2 replicas (policy data config.availability.min_replicas)",
		]),
	}]
}

test_replicas_at_the_floor_or_above_allowed if {
	at := changeset.decision with input as scaling("Deployment", "shop-prod", "web", 3, 2)
		with lib.config as lib_test.fixture
	floor_codes(at) == set()
	untouched := changeset.decision with input as scaling("Deployment", "shop-prod", "web", 1, 1)
		with lib.config as lib_test.fixture
	floor_codes(untouched) == set() # already below the floor
	raised := changeset.decision with input as scaling("Deployment", "shop-prod", "web", 0, 1)
		with lib.config as lib_test.fixture
	floor_codes(raised) == set()
	elsewhere := changeset.decision with input as scaling("Deployment", "shop", "web", 3, 1)
		with lib.config as lib_test.fixture
	floor_codes(elsewhere) == set() # not production: at least 1
}

test_zero_is_the_zero_rules if {
	d := changeset.decision with input as scaling("Deployment", "shop-prod", "web", 3, 0)
		with lib.config as lib_test.fixture
	codes(d.violations) == {"replicas_zero_in_production", "decrease_too_large"}
}

test_a_rollback_restores_a_count_below_the_floor if {
	policy_input := scaling("Deployment", "shop-prod", "web", 3, 1)
	rollback := json.patch(policy_input, [{"op": "add", "path": "/changes/0/op", "value": "rollback"}])
	d := changeset.decision with input as rollback with lib.config as lib_test.fixture
	d.violations == []
}

test_fixed_workloads_keep_their_count if {
	critical := changeset.decision with input as scaling("Deployment", "shop-prod", "redis", 3, 1)
		with lib.config as lib_test.fixture
	floor_codes(critical) == set()
	stateful := changeset.decision with input as scaling("StatefulSet", "shop-prod", "orders", 3, 1)
		with lib.config as lib_test.fixture
	floor_codes(stateful) == set()
}

test_production_by_namespace_labels if {
	policy_input := object.union(
		scaling("Deployment", "shop", "web", 3, 1),
		{"context": {"namespaces": {"shop": {"labels": {"environment": "production"}}}}},
	)
	d := changeset.decision with input as policy_input with lib.config as lib_test.fixture
	floor_codes(d) == {floor_code}
}

test_a_configured_default_floor_applies_everywhere if {
	config := json.patch(lib_test.fixture, [{"op": "replace", "path": "/availability/min_replicas/default", "value": 2}])
	d := changeset.decision with input as scaling("Deployment", "shop", "web", 3, 1)
		with lib.config as config
	[v.message | some v in d.violations] == [concat("", [
		"replicas of shop/web would be 1, below its availability floor of 2: at least 2 replica(s) ",
		"(policy data config.availability.min_replicas)",
	])]
}

test_hpa_min_replicas_below_the_floor_denied if {
	lowered := changeset.decision with input as hpa_change(new_hpa(3, 10), new_hpa(1, 10))
		with lib.config as lib_test.fixture
	[v.message | some v in lowered.violations; v.code == floor_code] == [concat("", [
		"HPA minReplicas of shop-prod/web would be 1, below its availability floor of 2: shop-prod/web ",
		"is in production namespace shop-prod: at least 2 replicas (policy data config.availability.min_replicas)",
	])]
	created := changeset.decision with input as hpa_change(null, new_hpa(1, 10))
		with lib.config as lib_test.fixture
	floor_codes(created) == {floor_code}
	kept := changeset.decision with input as hpa_change(new_hpa(1, 10), new_hpa(1, 12))
		with lib.config as lib_test.fixture
	floor_codes(kept) == set()
}

test_an_hpa_of_a_statefulset_is_fixed if {
	orders := object.union(new_hpa(1, 10), {"scale_target": "apps/v1/StatefulSet/orders"})
	d := changeset.decision with input as hpa_change(null, orders) with lib.config as lib_test.fixture
	floor_codes(d) == set()
	odd := object.union(new_hpa(1, 10), {"scale_target": "orders"}) # no kind: judged as the HPA
	judged := changeset.decision with input as hpa_change(null, odd) with lib.config as lib_test.fixture
	floor_codes(judged) == {floor_code}
}
