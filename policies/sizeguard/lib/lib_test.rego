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

# Each pattern is matched on its own when one of them is not a valid regular expression (the
# alternation of all of them then does not compile): a bad pattern disables only itself.
test_a_bad_pattern_disables_only_itself if {
	bad := object.union(fixture, {
		"production": {"namespace_patterns": ["(", "-prod$"]},
		"critical": {"name_patterns": ["[", "(^|-)redis(-|$)"]},
	})
	lib.is_production("shop-prod", {}) with lib.config as bad
	not lib.is_production("shop", {}) with lib.config as bad
	lib.is_critical("redis-cache", {}) with lib.config as bad
	lib.is_critical("orders", {"app": "redis"}) with lib.config as bad
	not lib.is_critical("orders", {"app": 7}) with lib.config as bad
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

test_state_operation if {
	lib.state_operation(null, {}) == "create"
	lib.state_operation({}, null) == "delete"
	lib.state_operation({}, {}) == "update"
	lib.state_operation(null, null) == "update"
}

test_changed_values_of_footprint_fields if {
	before := object.union(state(2, {"web": container(100, null)}, {"log": container(50, null)}), {
		"max_surge": "25%", "runtime_class": null, "min_ready_seconds": null,
		"pod_resources": {"cpu_request": 500},
	})
	after := object.union(before, {
		"max_surge": 2, "runtime_class": "kata", "min_ready_seconds": 30,
		"containers": {"web": {"other_requests": {"nvidia.com/gpu": 1}, "other_limits": {"ephemeral-storage": gib}}},
		"init_containers": {"log": {"restart_policy": "Always"}},
		"pod_resources": null,
	})
	lib.changed_values(before, after) == {
		{"field": "max_surge", "resource": "word", "label": "rollout maxSurge", "where": "", "before": "25%", "after": 2},
		{
			"field": "runtime_class", "resource": "word", "label": "runtimeClassName",
			"where": "", "before": null, "after": "kata",
		},
		{
			"field": "min_ready_seconds", "resource": "seconds", "label": "minReadySeconds",
			"where": "", "before": null, "after": 30,
		},
		{
			"field": "nvidia.com/gpu_request", "resource": "count", "label": "nvidia.com/gpu request",
			"where": "container web in ", "before": null, "after": 1,
		},
		{
			"field": "ephemeral-storage_limit", "resource": "bytes", "label": "ephemeral-storage limit",
			"where": "container web in ", "before": null, "after": gib,
		},
		{
			"field": "restart_policy", "resource": "word", "label": "restartPolicy",
			"where": "init container log in ", "before": null, "after": "Always",
		},
		{
			"field": "cpu_request", "resource": "cpu", "label": "CPU request",
			"where": "the pod-level resources in ", "before": 500, "after": null,
		},
	}
}

# A create or delete compares with a state that does not exist: every value set is a change.
test_changed_values_of_a_created_or_deleted_state if {
	hpa := {
		"replicas": null, "containers": {}, "init_containers": {},
		"min_replicas": 2, "max_replicas": 5, "scale_target": "apps/v1/Deployment/web",
	}
	created := lib.changed_values(null, hpa)
	{value.field | some value in created} == {"min_replicas", "max_replicas", "scale_target"}
	lib.changed_values(hpa, null) == {object.union(value, {"before": value.after, "after": null}) | some value in created}
}

test_resource_holders if {
	s := object.union(
		state(1, {"web": {"cpu_request": 100}}, {"setup": null}),
		{"pod_resources": {"memory_limit": gib}},
	)
	holders := lib.resource_holders(s)
	holders == [
		{"noun": "container", "name": "web", "resources": {"cpu_request": 100}},
		{"noun": null, "name": null, "resources": {"memory_limit": gib}},
	]
	[lib.holder_where(holder) | some holder in holders] == ["container web in ", "the pod-level resources in "]
	lib.holder_where({"noun": "init container", "name": "setup"}) == "init container setup in "
	lib.resource_holders(null) == []
	odd := {"containers": {"web": {}}, "init_containers": [{}], "pod_resources": "none"}
	lib.resource_holders(odd) == [{"noun": "container", "name": "web", "resources": {}}]
}

test_resource_names_and_units if {
	lib.resource_label("cpu") == "CPU"
	lib.resource_label("memory") == "memory"
	lib.resource_label("nvidia.com/gpu") == "nvidia.com/gpu"
	lib.value_resource("cpu") == "cpu"
	lib.value_resource("memory") == "memory"
	lib.value_resource("ephemeral-storage") == "bytes"
	lib.value_resource("nvidia.com/gpu") == "count"
}

test_other_resource if {
	lib.other_resource("ephemeral-storage") == "bytes"
	lib.other_resource("hugepages-2Mi") == "bytes"
	lib.other_resource("nvidia.com/gpu") == "count"
}

test_pod_request_counts_sidecars if {
	sidecar := object.union(container(300, 32 * mib), {"restart_policy": "Always"})
	s := state(1, {"web": container(100, 64 * mib)}, {"init": container(500, mib), "proxy": sidecar})

	# sidecars (300m) + max(containers 100m, init 500m); memory: 32Mi + max(64Mi, 1Mi)
	lib.pod_request(s, "cpu") == 800
	lib.pod_request(s, "memory") == 96 * mib
}

test_pod_request_pod_level_resources_win if {
	s := object.union(
		state(1, {"web": container(100, 64 * mib)}, {}),
		{"pod_resources": {"cpu_request": 2000, "memory_request": null}},
	)
	lib.pod_request(s, "cpu") == 2000
	lib.pod_request(s, "memory") == 64 * mib
	lib.pod_request(null, "cpu") == 0
}

test_request_delta_of_a_created_or_deleted_hpa if {
	hpa := {"replicas": null, "containers": {}, "init_containers": {}, "min_replicas": 2, "max_replicas": 5}
	hpa_target := object.union(target, {"kind": "HorizontalPodAutoscaler"})
	lib.request_delta({"target": hpa_target, "before": null, "after": hpa}, "cpu", 3) == 0
	lib.request_delta({"target": hpa_target, "before": hpa}, "cpu", 3) == 0
}

test_surge_pods if {
	lib.surge_pods(2, 10) == 2
	lib.surge_pods("25%", 3) == 1
	lib.surge_pods("100%", 3) == 3
	lib.surge_pods("0%", 3) == 0
	lib.surge_pods("lots", 3) == 0
	lib.surge_pods(null, 3) == 0
}

test_is_zero_bound if {
	lib.is_zero_bound(0)
	lib.is_zero_bound("0%")
	not lib.is_zero_bound(1)
	not lib.is_zero_bound("25%")
}

test_format_value_of_footprint_values if {
	lib.format_value("bytes", gib) == "1Gi"
	lib.format_value("seconds", 600) == "600s"
	lib.format_value("word", "25%") == "25%"
	lib.format_value("word", null) == "unset"
}

test_changed_values_of_claims_and_grace_period if {
	before := object.union(state(2, {"web": container(100, null)}, {}), {
		"termination_grace_period_seconds": 30,
		"resource_claims": {"gpu": "template:one-gpu", "fpga": "claim:shared"},
	})
	after := object.union(before, {
		"termination_grace_period_seconds": 31536000,
		"resource_claims": {"gpu": "template:four-gpus", "fpga": "claim:shared"},
		"containers": {"web": {"claims": ["gpu"]}},
	})
	lib.changed_values(before, after) == {
		{
			"field": "termination_grace_period_seconds", "resource": "seconds",
			"label": "terminationGracePeriodSeconds", "where": "", "before": 30, "after": 31536000,
		},
		{
			"field": "resource_claim", "resource": "claim", "label": "resource claim gpu",
			"where": "", "before": "template:one-gpu", "after": "template:four-gpus",
		},
		{
			"field": "claims", "resource": "claims", "label": "resource claims",
			"where": "container web in ", "before": [], "after": ["gpu"],
		},
	}
	lib.changed_values(after, object.remove(after, ["resource_claims"])) == {
		{
			"field": "resource_claim", "resource": "claim", "label": "resource claim gpu",
			"where": "", "before": "template:four-gpus", "after": null,
		},
		{
			"field": "resource_claim", "resource": "claim", "label": "resource claim fpga",
			"where": "", "before": "claim:shared", "after": null,
		},
	}
}

test_format_claims if {
	lib.format_value("claim", "template:gpus") == "ResourceClaimTemplate gpus"
	lib.format_value("claim", "claim:shared") == "ResourceClaim shared"
	lib.format_value("claim", "other") == "other"
	lib.format_value("claim", null) == "unset"
	lib.format_value("claims", []) == "none"
	lib.format_value("claims", ["gpu", "fpga/big"]) == "gpu, fpga/big"
	lib.format_value("seconds", 30) == "30s"
}
