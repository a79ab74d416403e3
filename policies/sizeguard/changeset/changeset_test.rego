package sizeguard.changeset_test

import data.sizeguard.changeset
import data.sizeguard.lib
import data.sizeguard.lib_test

mib := 1024 * 1024

# The configuration of policies/data.json with some settings replaced.
patched(settings) := object.union(lib_test.fixture, settings)

gib := 1024 * mib

capacity := {
	"nodes": 3,
	"allocatable": {"cpu": 12000, "memory": 48 * gib},
	"requested": {"cpu": 4000, "memory": 16 * gib},
}

web(cpu_request, cpu_limit) := {
	"cpu_request": cpu_request,
	"cpu_limit": cpu_limit,
	"memory_request": 256 * mib,
	"memory_limit": 512 * mib,
}

deployment(replicas, cpu_request) := {
	"replicas": replicas,
	"containers": {"web": web(cpu_request, null)},
	"init_containers": {},
	"min_replicas": null,
	"max_replicas": null,
}

change(kind, namespace, name, before, after) := {
	"target": {"apiVersion": "apps/v1", "kind": kind, "namespace": namespace, "name": name, "uid": "u-1"},
	"before": before,
	"after": after,
	"reason": "test",
	"source": "test",
}

web_change(namespace, before_cpu, after_cpu) := change(
	"Deployment", namespace, "web",
	deployment(3, before_cpu), deployment(3, after_cpu),
)

# The policy input for a list of changes in a cluster with the given capacity.
within(changes, cluster) := {"changes": changes, "context": {"capacity": cluster}}

# The policy input for a list of changes in the default test cluster.
changes_input(changes) := within(changes, capacity)

codes(findings) := {finding.code | some finding in findings}

# The example the project started from: 100m -> 250m CPU in a production namespace.
test_production_increase_needs_an_authenticated_approver if {
	d := changeset.decision with input as changes_input([web_change("shop-prod", 100, 250)])
		with lib.config as lib_test.fixture
	d.allowed
	d.risk == "high"
	d.requires == ["authenticated_approver", "typed_confirmation"]
	d.violations == []
	codes(d.warnings) == {"increase_large", "production_namespace"}
}

test_small_change_is_low_risk if {
	d := changeset.decision with input as changes_input([web_change("shop", 100, 120)])
		with lib.config as lib_test.fixture
	d == {"allowed": true, "risk": "low", "violations": [], "warnings": [], "requires": [], "approval_levels": 1}
}

test_warned_change_is_medium_risk if {
	d := changeset.decision with input as changes_input([web_change("shop", 100, 250)])
		with lib.config as lib_test.fixture
	d.allowed
	d.risk == "medium"
	d.requires == []
}

test_increase_over_500_percent_denied if {
	d := changeset.decision with input as changes_input([web_change("shop-prod", 100, 700)])
		with lib.config as lib_test.fixture
	not d.allowed
	d.violations == [{
		"code": "increase_too_large",
		"target": "Deployment/shop-prod/web",
		"message": "CPU request of container web in shop-prod/web rises 600% (100m → 700m); the limit is 500%",
	}]
	d.risk == "critical"
}

test_increase_of_exactly_500_percent_allowed if {
	d := changeset.decision with input as changes_input([web_change("shop", 100, 600)])
		with lib.config as lib_test.fixture
	d.allowed
	codes(d.warnings) == {"increase_large"}
}

test_decrease_over_90_percent_denied if {
	d := changeset.decision with input as changes_input([web_change("shop", 1000, 50)])
		with lib.config as lib_test.fixture
	not d.allowed
	d.violations == [{
		"code": "decrease_too_large",
		"target": "Deployment/shop/web",
		"message": "CPU request of container web in shop/web falls 95% (1000m → 50m); the limit is 90%",
	}]
	d.risk == "high"
}

test_rollback_beyond_the_size_limits_is_warned_not_denied if {
	rollback := object.union(web_change("shop", 50, 1000), {"op": "rollback"})
	d := changeset.decision with input as changes_input([rollback]) with lib.config as lib_test.fixture
	d.allowed
	codes(d.warnings) == {"increase_large"}
	d.warnings[0].message == concat("", [
		"CPU request of container web in shop/web rises 1900% (50m → 1000m); ",
		"changes beyond 500% deserve a careful review",
	])
}

test_rollback_still_obeys_the_other_rules if {
	rollback := object.union(web_change("shop", 100, 0), {"op": "rollback"})
	d := changeset.decision with input as changes_input([rollback]) with lib.config as lib_test.fixture
	not d.allowed
	codes(d.violations) == {"request_not_positive"}
}

test_large_decrease_warned if {
	d := changeset.decision with input as changes_input([web_change("shop", 1000, 400)])
		with lib.config as lib_test.fixture
	d.allowed
	d.warnings == [{
		"code": "decrease_large",
		"target": "Deployment/shop/web",
		"message": concat("", [
			"CPU request of container web in shop/web falls 60% (1000m → 400m); ",
			"changes beyond 50% deserve a careful review",
		]),
	}]
}

test_database_in_production_is_critical_and_needs_two_approvers if {
	policy_input := changes_input([change("StatefulSet", "shop-prod", "postgres", deployment(1, 500), deployment(1, 600))])
	d := changeset.decision with input as policy_input with lib.config as lib_test.fixture
	d.allowed
	d.risk == "critical"
	d.requires == ["authenticated_approver", "two_approvers", "typed_confirmation"]
	codes(d.warnings) == {"production_namespace", "critical_workload"}
}

test_critical_by_workload_label if {
	policy_input := {
		"changes": [web_change("shop", 100, 120)],
		"context": {"capacity": capacity, "labels": {"Deployment/shop/web": {"sizeguard.io/critical": "true"}}},
	}
	d := changeset.decision with input as policy_input with lib.config as lib_test.fixture
	d.risk == "high"
	d.requires == ["authenticated_approver", "typed_confirmation"]
}

test_production_by_namespace_label if {
	policy_input := {
		"changes": [web_change("payments", 100, 120)],
		"context": {"capacity": capacity, "namespaces": {"payments": {"labels": {"environment": "production"}}}},
	}
	d := changeset.decision with input as policy_input with lib.config as lib_test.fixture
	d.risk == "medium"
	d.requires == ["authenticated_approver", "typed_confirmation"]
}

test_namespace_threshold_override if {
	overrides := {"payments-prod": {"thresholds": {"deny_increase_percent": 200}}}
	d := changeset.decision with input as changes_input([web_change("payments-prod", 100, 350)])
		with lib.config as patched({"namespaces": overrides})
	codes(d.violations) == {"increase_too_large"}
	contains(d.violations[0].message, "the limit is 200%")
}

test_frozen_namespace_denies_every_change if {
	d := changeset.decision with input as changes_input([web_change("kube-system", 100, 110)])
		with lib.config as lib_test.fixture
	d.violations == [{
		"code": "namespace_frozen",
		"target": "Deployment/kube-system/web",
		"message": concat("", [
			"namespace kube-system is frozen by policy; ",
			"no change to kube-system/web is allowed until the freeze is lifted",
		]),
	}]
}

test_limit_below_request_denied if {
	after := object.union(deployment(3, 100), {"containers": {"web": web(800, 500)}})
	policy_input := changes_input([change("Deployment", "shop", "web", deployment(3, 100), after)])
	d := changeset.decision with input as policy_input with lib.config as lib_test.fixture
	codes(d.violations) == {"limit_below_request", "increase_too_large"}
	some v in d.violations
	v.code == "limit_below_request"
	v.message == concat("", [
		"CPU limit of container web in shop/web (500m) is below its request (800m); ",
		"a limit must be at least the request",
	])
}

test_request_not_positive_denied if {
	d := changeset.decision with input as changes_input([web_change("shop", 100, 0)])
		with lib.config as lib_test.fixture
	codes(d.violations) == {"request_not_positive", "decrease_too_large"}
	some v in d.violations
	v.code == "request_not_positive"
	v.message == "CPU request of container web in shop/web is 0m; a request must be greater than zero when set"
}

test_removed_value_warned if {
	after := object.union(deployment(3, 100), {"containers": {"web": {"memory_limit": null}}})
	policy_input := changes_input([change("Deployment", "shop", "web", deployment(3, 100), after)])
	d := changeset.decision with input as policy_input with lib.config as lib_test.fixture
	d.allowed
	d.warnings == [{
		"code": "value_removed",
		"target": "Deployment/shop/web",
		"message": "memory limit of container web in shop/web is removed (512Mi → unset)",
	}]
}

test_memory_limit_removal_in_production_denied if {
	after := object.union(deployment(3, 100), {"containers": {"web": {"memory_limit": null}}})
	changes := [change("Deployment", "shop-prod", "web", deployment(3, 100), after)]
	d := changeset.decision with input as changes_input(changes) with lib.config as lib_test.fixture
	d.violations == [{
		"code": "limit_removed_in_production",
		"target": "Deployment/shop-prod/web",
		"message": concat("", [
			"memory limit of container web in shop-prod/web would be removed (512Mi → unset); ",
			"keep it set in production",
		]),
	}]
}
