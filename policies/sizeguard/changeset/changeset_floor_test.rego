package sizeguard.changeset_test

# The availability floor rule (replicas.rego): replicas and HPA minReplicas and maxReplicas do
# not fall below the floor of the workload they scale (data.sizeguard.plan's, and at least the
# production floor in production). Fixtures are in changeset_test.rego and
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

# The policy input creating HPA name in namespace, scaling target ("apiVersion/kind/name")
# between min_replicas and 10.
new_scaler(namespace, name, target, min_replicas) := changes_input([change(
	"HorizontalPodAutoscaler", namespace, name,
	null, aimed(min_replicas, 10, target),
)])

# An HPA's state scaling target.
aimed(min_replicas, max_replicas, target) := object.union(new_hpa(min_replicas, max_replicas), {"scale_target": target})

# The configuration of policies/data.json with the floor of the fixed class raised to 3.
fixed_floor_3 := json.patch(
	lib_test.fixture,
	[{"op": "replace", "path": "/availability/min_replicas/fixed", "value": 3}],
)

floor_messages(d) := [v.message | some v in d.violations; v.code == floor_code]

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

test_fixed_workloads_in_production_keep_the_production_floor if {
	critical := changeset.decision with input as scaling("Deployment", "shop-prod", "redis", 3, 1)
		with lib.config as lib_test.fixture
	floor_messages(critical) == [concat("", [
		"replicas of shop-prod/redis would be 1, below its availability floor of 2: shop-prod/redis ",
		"is in production namespace shop-prod: at least 2 replicas (policy data config.availability.min_replicas)",
	])]
	stateful := changeset.decision with input as scaling("StatefulSet", "shop-prod", "postgres", 3, 1)
		with lib.config as lib_test.fixture
	floor_codes(stateful) == {floor_code}
	at := changeset.decision with input as scaling("StatefulSet", "shop-prod", "postgres", 3, 2)
		with lib.config as lib_test.fixture
	floor_codes(at) == set()
	kept := changeset.decision with input as scaling("StatefulSet", "shop-prod", "postgres", 1, 1)
		with lib.config as lib_test.fixture
	floor_codes(kept) == set() # already below the floor
	elsewhere := changeset.decision with input as scaling("StatefulSet", "shop", "postgres", 3, 1)
		with lib.config as lib_test.fixture
	floor_codes(elsewhere) == set() # the fixed floor, 1
}

test_a_fixed_floor_above_the_production_floor_applies if {
	production := changeset.decision with input as scaling("StatefulSet", "shop-prod", "orders", 3, 2)
		with lib.config as fixed_floor_3
	floor_messages(production) == [concat("", [
		"replicas of shop-prod/orders would be 2, below its availability floor of 3: the replica count of ",
		"StatefulSet shop-prod/orders is its application's (a StatefulSet): the plan keeps it and sizes its pods ",
		"(policy data config.availability.min_replicas)",
	])]
	elsewhere := changeset.decision with input as scaling("Deployment", "shop", "redis", 3, 2)
		with lib.config as fixed_floor_3
	floor_codes(elsewhere) == {floor_code}
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

test_hpa_max_replicas_below_the_floor_denied if {
	lowered := changeset.decision with input as hpa_change(new_hpa(1, 10), new_hpa(1, 1))
		with lib.config as lib_test.fixture
	floor_messages(lowered) == [concat("", [
		"HPA maxReplicas of shop-prod/web would be 1, below its availability floor of 2: shop-prod/web ",
		"is in production namespace shop-prod: at least 2 replicas (policy data config.availability.min_replicas)",
	])]
	created := changeset.decision with input as hpa_change(null, new_hpa(1, 1))
		with lib.config as lib_test.fixture
	count(floor_messages(created)) == 2 # minReplicas and maxReplicas
	at := changeset.decision with input as hpa_change(new_hpa(2, 10), new_hpa(2, 2))
		with lib.config as lib_test.fixture
	floor_codes(at) == set()
	raised := changeset.decision with input as hpa_change(new_hpa(1, 1), new_hpa(1, 3))
		with lib.config as lib_test.fixture
	floor_codes(raised) == set()
	elsewhere := changeset.decision with input as one("HorizontalPodAutoscaler", "shop", new_hpa(1, 10), new_hpa(1, 1))
		with lib.config as lib_test.fixture
	floor_codes(elsewhere) == set()
}

test_an_hpa_is_judged_by_the_workload_it_scales if {
	# Named like a critical workload, scaling Deployment web: web's production floor.
	named := changeset.decision with input as new_scaler("shop-prod", "redis", "apps/v1/Deployment/web", 1)
		with lib.config as lib_test.fixture
	floor_messages(named) == [concat("", [
		"HPA minReplicas of shop-prod/redis would be 1, below its availability floor of 2: shop-prod/web ",
		"is in production namespace shop-prod: at least 2 replicas (policy data config.availability.min_replicas)",
	])]
	not_critical := changeset.decision with input as new_scaler("shop", "redis", "apps/v1/Deployment/web", 2)
		with lib.config as fixed_floor_3
	floor_codes(not_critical) == set()
	critical := changeset.decision with input as new_scaler("shop", "web", "apps/v1/Deployment/redis", 2)
		with lib.config as fixed_floor_3
	floor_messages(critical) == [concat("", [
		"HPA minReplicas of shop/web would be 2, below its availability floor of 3: the replica count of ",
		"Deployment shop/redis is its application's (a critical workload): the plan keeps it and sizes its pods ",
		"(policy data config.availability.min_replicas)",
	])]
	stateful := changeset.decision with input as new_scaler("shop", "web", "apps/v1/StatefulSet/orders", 2)
		with lib.config as fixed_floor_3
	floor_codes(stateful) == {floor_code}
}

test_an_hpa_is_critical_by_its_target_s_labels if {
	labels := {"context": {"labels": {
		"Deployment/shop/cache": {"sizeguard.io/critical": "true"},
		"HorizontalPodAutoscaler/shop/web-hpa": {"sizeguard.io/critical": "true"},
	}}}
	cache := new_scaler("shop", "cache-hpa", "apps/v1/Deployment/cache", 2)
	by_target := changeset.decision with input as object.union(cache, labels)
		with lib.config as fixed_floor_3
	floor_codes(by_target) == {floor_code}
	web := new_scaler("shop", "web-hpa", "apps/v1/Deployment/web", 2)
	by_hpa := changeset.decision with input as object.union(web, labels)
		with lib.config as fixed_floor_3
	floor_codes(by_hpa) == set()
}

test_an_hpa_without_a_target_kind_is_judged_as_itself if {
	odd := changeset.decision with input as new_scaler("shop-prod", "web", "orders", 1) with lib.config as lib_test.fixture
	floor_codes(odd) == {floor_code}
}
