package sizeguard.plan_test

import data.sizeguard.lib
import data.sizeguard.lib_test
import data.sizeguard.plan

namespaces := {
	"shop-prod": {"labels": {}},
	"data": {"labels": {"environment": "production"}},
	"tools": {"labels": {"team": "platform"}},
}

workload(kind, namespace, name, labels) := {"kind": kind, "namespace": namespace, "name": name, "labels": labels}

input_of(workloads) := {"workloads": workloads, "namespaces": namespaces}

test_production_by_name_and_by_label if {
	floors := plan.floors with input as input_of([
		workload("Deployment", "shop-prod", "checkout", {}),
		workload("Deployment", "data", "etl", {}),
	])
		with lib.config as lib_test.fixture
	floors["Deployment/shop-prod/checkout"] == {
		"class": "production",
		"min_replicas": 2,
		"max_pod_cpu": null,
		"reason": "shop-prod/checkout is in production namespace shop-prod: at least 2 replicas",
	}
	floors["Deployment/data/etl"].min_replicas == 2
}

test_default_elsewhere if {
	floors := plan.floors with input as input_of([workload("Deployment", "tools", "grafana", {})])
		with lib.config as lib_test.fixture
	floors["Deployment/tools/grafana"] == {
		"class": "default",
		"min_replicas": 1,
		"max_pod_cpu": null,
		"reason": "at least 1 replica(s)",
	}
}

test_a_namespace_without_labels_is_judged_by_its_name if {
	floors := plan.floors with input as {"workloads": [workload("Deployment", "prod", "web", {})]}
		with lib.config as lib_test.fixture
	floors["Deployment/prod/web"].class == "production"
}

test_statefulsets_and_critical_workloads_keep_their_replicas if {
	floors := plan.floors with input as input_of([
		workload("StatefulSet", "shop-prod", "orders", {}),
		workload("Deployment", "data", "redis", {}),
		workload("Deployment", "tools", "cache", {"sizeguard.io/critical": "true"}),
	])
		with lib.config as lib_test.fixture
	orders := floors["StatefulSet/shop-prod/orders"]
	object.remove(orders, ["reason"]) == {"class": "fixed", "min_replicas": 1, "max_pod_cpu": null}
	startswith(orders.reason, "the replica count of StatefulSet shop-prod/orders is its application's")
	endswith(orders.reason, "(a StatefulSet): the plan keeps it and sizes its pods")
	floors["Deployment/data/redis"].class == "fixed"
	endswith(floors["Deployment/data/redis"].reason, "(a critical workload): the plan keeps it and sizes its pods")
	floors["Deployment/tools/cache"].class == "fixed"
}

test_max_pod_cpu_applies_except_to_fixed_replicas if {
	config := object.union(lib_test.fixture, {"availability": {"max_pod_cpu": 2}})
	floors := plan.floors with input as {
		"workloads": [
			workload("Deployment", "tools", "grafana", {}),
			workload("StatefulSet", "tools", "db", {}),
		],
		"namespaces": namespaces,
	}
		with lib.config as config
	floors["Deployment/tools/grafana"].max_pod_cpu == 2
	floors["StatefulSet/tools/db"].max_pod_cpu == null
}

test_a_class_without_its_own_floor_gets_the_default if {
	config := json.patch(lib_test.fixture, [
		{"op": "remove", "path": "/availability/min_replicas/production"},
		{"op": "replace", "path": "/availability/min_replicas/default", "value": 3},
	])
	floors := plan.floors with input as {
		"workloads": [workload("Deployment", "shop-prod", "web", {})],
		"namespaces": namespaces,
	}
		with lib.config as config
	floors["Deployment/shop-prod/web"].min_replicas == 3
}

test_malformed_workloads_are_left_out if {
	nameless := {"kind": "Deployment", "namespace": "tools"}
	floors := plan.floors with input as input_of([nameless, workload("Deployment", "tools", "a", {})])
		with lib.config as lib_test.fixture
	object.keys(floors) == {"Deployment/tools/a"}
}

test_no_workloads_no_floors if {
	floors := plan.floors with input as input_of([]) with lib.config as lib_test.fixture
	floors == {}
}

# The shipped data.json: production 2, everything else 1, StatefulSets fixed, no CPU cap.
test_shipped_availability if {
	lib.config.availability.min_replicas == {"default": 1, "production": 2, "fixed": 1}
	lib.config.availability.fixed_kinds == ["StatefulSet"]
	lib.config.availability.max_pod_cpu == null
}
