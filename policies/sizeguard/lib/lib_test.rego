package sizeguard.lib_test

import data.sizeguard.lib

mib := 1024 * 1024

gib := 1024 * mib

target := {"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "shop-prod", "name": "web", "uid": "u-1"}

container(cpu, memory) := {"cpu_request": cpu, "cpu_limit": null, "memory_request": memory, "memory_limit": null}

state(replicas, containers, init_containers) := {
	"replicas": replicas,
	"containers": containers,
	"init_containers": init_containers,
	"min_replicas": null,
	"max_replicas": null,
}

test_target_names if {
	lib.target_key(target) == "Deployment/shop-prod/web"
	lib.target_short(target) == "shop-prod/web"
}

test_null_safe_helpers if {
	lib.object_or_empty({"a": 1}) == {"a": 1}
	lib.object_or_empty(null) == {}
	lib.number_or_zero(7) == 7
	lib.number_or_zero(null) == 0
}

test_production_by_name if {
	lib.is_production("shop-prod", {}) with lib.config as fixture
	lib.is_production("prod-payments", {}) with lib.config as fixture
	lib.is_production("production-eu", {}) with lib.config as fixture
	lib.is_production("prod", null) with lib.config as fixture
}

test_production_by_label if {
	lib.is_production("payments", {"environment": "production"}) with lib.config as fixture
	lib.is_production("payments", {"sizeguard.io/production": "true"}) with lib.config as fixture
}

test_not_production if {
	not lib.is_production("staging", {"environment": "staging"}) with lib.config as fixture
	not lib.is_production("product-catalog", {}) with lib.config as fixture
	not lib.is_production("reprod", null) with lib.config as fixture
}

test_critical_by_name if {
	lib.is_critical("postgres", {}) with lib.config as fixture
	lib.is_critical("orders-postgresql-primary", {}) with lib.config as fixture
	lib.is_critical("redis-cache", {}) with lib.config as fixture
	lib.is_critical("kafka", {}) with lib.config as fixture
	lib.is_critical("orders-db", {}) with lib.config as fixture
	lib.is_critical("cert-manager-controller", {}) with lib.config as fixture
	lib.is_critical("prometheus-operator", {}) with lib.config as fixture
}

test_critical_by_label if {
	lib.is_critical("orders", {"sizeguard.io/critical": "true"}) with lib.config as fixture
}

test_critical_by_name_label if {
	lib.is_critical("orders-store", {"app.kubernetes.io/name": "mongodb"}) with lib.config as fixture
}

test_not_critical if {
	web_labels := {"app.kubernetes.io/name": "web", "sizeguard.io/critical": "false"}
	not lib.is_critical("web", web_labels) with lib.config as fixture
	not lib.is_critical("dbadmin-ui", null) with lib.config as fixture
	not lib.is_critical("controller-ui", {}) with lib.config as fixture
}

test_empty_pattern_lists_match_nothing if {
	no_patterns := object.union(fixture, {
		"production": {"namespace_patterns": []},
		"critical": {"name_patterns": []},
	})
	not lib.is_production("shop-prod", {}) with lib.config as no_patterns
	lib.is_production("shop-prod", {"environment": "prod"}) with lib.config as no_patterns
	not lib.is_critical("postgres", {"app": "postgres"}) with lib.config as no_patterns
	lib.is_critical("postgres", {"sizeguard.io/critical": "true"}) with lib.config as no_patterns
}

test_percent_change if {
	lib.percent_change(100, 250) == 150
	lib.percent_change(100, 700) == 600
	lib.percent_change(100, 5) == -95
	lib.percent_change(3, 3) == 0
}

test_percent_change_undefined if {
	not lib.percent_change(null, 100)
	not lib.percent_change(100, null)
	not lib.percent_change(0, 100)
}

test_namespace_overrides if {
	overrides := {"payments-prod": {"thresholds": {"deny_increase_percent": 200}, "replicas": {"max": 10}}}
	patched := object.union(fixture, {"namespaces": overrides})
	thresholds := lib.thresholds_for("payments-prod") with lib.config as patched
	thresholds.deny_increase_percent == 200
	thresholds.deny_decrease_percent == 90
	bounds := lib.replica_bounds("payments-prod") with lib.config as patched
	bounds == {"min": 0, "max": 10}
	lib.thresholds_for("shop") == fixture.thresholds with lib.config as fixture
}

test_frozen if {
	lib.is_frozen("kube-system") with lib.config as fixture
	not lib.is_frozen("shop-prod") with lib.config as fixture
}

test_changed_values if {
	before := state(2, {"web": container(100, null)}, {"migrate": container(50, null)})
	after := state(3, {"web": container(200, null), "sidecar": container(10, null)}, {})
	values := lib.changed_values(before, after)
	values == {
		{"field": "replicas", "resource": "count", "label": "replicas", "where": "", "before": 2, "after": 3},
		{
			"field": "cpu_request", "resource": "cpu", "label": "CPU request",
			"where": "container web in ", "before": 100, "after": 200,
		},
		{
			"field": "cpu_request", "resource": "cpu", "label": "CPU request",
			"where": "container sidecar in ", "before": null, "after": 10,
		},
		{
			"field": "cpu_request", "resource": "cpu", "label": "CPU request",
			"where": "init container migrate in ", "before": 50, "after": null,
		},
	}
}

test_changed_values_of_unchanged_and_null_states if {
	s := state(2, {"web": container(100, null)}, {})
	lib.changed_values(s, s) == set()
	lib.changed_values(null, {"containers": null}) == set()
	count(lib.changed_values({"containers": {"web": null}}, {"containers": {"web": {"cpu_request": 5}}})) == 1
}

test_pod_request if {
	s := state(1, {"web": container(100, 64 * mib), "log": container(null, 32 * mib)}, {"init": container(500, mib)})
	lib.pod_request(s, "cpu") == 500
	lib.pod_request(s, "memory") == 96 * mib
	lib.pod_request(state(1, {}, {}), "cpu") == 0
}

test_pod_count if {
	lib.pod_count("DaemonSet", {"replicas": null}, 4) == 4
	lib.pod_count("Deployment", {"replicas": 3}, 4) == 3
	lib.pod_count("HorizontalPodAutoscaler", {"replicas": null}, 4) == 0
	lib.pod_count("StatefulSet", null, 4) == 0
}

test_request_delta if {
	change := {
		"target": target,
		"before": state(2, {"web": container(100, gib)}, {}),
		"after": state(3, {"web": container(250, gib)}, {}),
	}
	lib.request_delta(change, "cpu", 5) == 550
	lib.request_delta(change, "memory", 5) == gib
}

test_format_value if {
	lib.format_value("cpu", null) == "unset"
	lib.format_value("cpu", 250) == "250m"
	lib.format_value("memory", 512 * mib) == "512Mi"
	lib.format_value("count", 3) == "3"
}

test_format_bytes if {
	lib.format_bytes(2 * gib) == "2Gi"
	lib.format_bytes(1536 * mib) == "1.5Gi"
	lib.format_bytes(1000 * mib) == "1000Mi"
	lib.format_bytes(37.5 * gib) == "37.5Gi"
	lib.format_bytes(1000000000) == "953.7Mi"
	lib.format_bytes(46385646797) == "43.2Gi"
	lib.format_bytes(2048) == "2Ki"
	lib.format_bytes(1000) == "1000 bytes"
}

test_format_percent if {
	lib.format_percent(600) == "600%"
	lib.format_percent(-95) == "95%"
	lib.format_percent(200 / 3) == "66.7%"
}
