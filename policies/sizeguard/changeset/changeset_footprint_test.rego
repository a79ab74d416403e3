package sizeguard.changeset_test

# The footprint beyond CPU and memory: other resources, pod-level resources, rollout fields,
# RuntimeClass, sidecars, and HPAs created or deleted (before or after null). Fixtures are in
# changeset_test.rego and changeset_set_test.rego.

import data.sizeguard.changeset
import data.sizeguard.lib
import data.sizeguard.lib_test

# A Deployment of 3 replicas (web at 100m CPU) with some footprint fields set.
deployment_with(settings) := object.union(deployment(3, 100), settings)

# The policy input for one change of <namespace>/web from before to after.
one(kind, namespace, before, after) := changes_input([change(kind, namespace, "web", before, after)])

messages(findings) := {finding.message | some finding in findings}

# The warnings of a decision that are not about the namespace or the workload's kind.
footprint_messages(d) := {w.message |
	some w in d.warnings
	not w.code in {"production_namespace", "critical_workload"}
}

# --- other resources and pod-level resources -----------------------------------------------

# A Deployment whose container web requests some ephemeral storage and is limited to some GPUs.
storage(bytes, gpus) := deployment_with({"containers": {"web": {
	"other_requests": {"ephemeral-storage": bytes},
	"other_limits": {"nvidia.com/gpu": gpus},
}}})

test_other_resources_have_size_limits if {
	policy_input := one("Deployment", "shop", storage(gib, 1), storage(10 * gib, 8))
	d := changeset.decision with input as policy_input with lib.config as lib_test.fixture
	not d.allowed
	d.violations == [
		{
			"code": "increase_too_large",
			"target": "Deployment/shop/web",
			"message": "ephemeral-storage request of container web in shop/web rises 900% (1Gi → 10Gi); the limit is 500%",
		},
		{
			"code": "increase_too_large",
			"target": "Deployment/shop/web",
			"message": "nvidia.com/gpu limit of container web in shop/web rises 700% (1 → 8); the limit is 500%",
		},
	]
}

test_other_resources_request_and_limit_rules if {
	after := deployment_with({"init_containers": {"setup": {
		"other_requests": {"nvidia.com/gpu": 0, "ephemeral-storage": 2 * gib},
		"other_limits": {"ephemeral-storage": gib},
	}}})
	d := changeset.decision with input as one("Deployment", "shop", deployment(3, 100), after)
		with lib.config as lib_test.fixture
	messages(d.violations) == {
		"nvidia.com/gpu request of init container setup in shop/web is 0; a request must be greater than zero when set",
		concat("", [
			"ephemeral-storage limit of init container setup in shop/web (1Gi) is below its request (2Gi); ",
			"a limit must be at least the request",
		]),
	}
}

pod_level(cpu_request, memory_limit) := {
	"cpu_request": cpu_request, "cpu_limit": null,
	"memory_request": gib, "memory_limit": memory_limit,
	"other_requests": {"hugepages-2Mi": 4 * mib}, "other_limits": {},
}

test_pod_level_resources_follow_the_same_rules if {
	before := deployment_with({"pod_resources": pod_level(1000, gib)})
	after_pod := object.union(pod_level(50, 512 * mib), {"other_requests": {"hugepages-2Mi": 0}})
	policy_input := one("Deployment", "shop", before, deployment_with({"pod_resources": after_pod}))
	d := changeset.decision with input as policy_input with lib.config as lib_test.fixture
	messages(d.violations) == {
		"CPU request of the pod-level resources in shop/web falls 95% (1000m → 50m); the limit is 90%",
		concat("", [
			"hugepages-2Mi request of the pod-level resources in shop/web falls 100% (4Mi → 0 bytes); ",
			"the limit is 90%",
		]),
		concat("", [
			"hugepages-2Mi request of the pod-level resources in shop/web is 0 bytes; ",
			"a request must be greater than zero when set",
		]),
		concat("", [
			"memory limit of the pod-level resources in shop/web (512Mi) is below its request (1Gi); ",
			"a limit must be at least the request",
		]),
	}
}

test_pod_level_resources_added_and_removed if {
	with_pod := deployment_with({"pod_resources": pod_level(500, gib)})
	added := changeset.decision with input as one("Deployment", "shop", deployment(3, 100), with_pod)
		with lib.config as lib_test.fixture
	added.allowed
	added.warnings == []

	removed := changeset.decision with input as one("Deployment", "shop-prod", with_pod, deployment(3, 100))
		with lib.config as lib_test.fixture
	removed.violations == [{
		"code": "limit_removed_in_production",
		"target": "Deployment/shop-prod/web",
		"message": concat("", [
			"memory limit of the pod-level resources in shop-prod/web would be removed (1Gi → unset); ",
			"keep it set in production",
		]),
	}]
	"memory limit of the pod-level resources in shop-prod/web is removed (1Gi → unset)" in messages(removed.warnings)
}

test_kept_limits_may_name_other_resources if {
	before := deployment_with({"containers": {"web": {"other_limits": {"ephemeral-storage": gib}}}})
	d := changeset.decision with input as one("Deployment", "shop-prod", before, deployment(3, 100))
		with lib.config as patched({"production": {"keep_limits": ["ephemeral-storage_limit"]}})
	messages(d.violations) == {concat("", [
		"ephemeral-storage limit of container web in shop-prod/web would be removed (1Gi → unset); ",
		"keep it set in production",
	])}
}

# --- rollout fields -------------------------------------------------------------------------

test_max_surge_warns_with_the_peak_pod_count if {
	before := deployment_with({"strategy": "RollingUpdate", "max_surge": "25%"})
	d := changeset.decision with input as one("Deployment", "shop", before, object.union(before, {"max_surge": "100%"}))
		with lib.config as lib_test.fixture
	d.allowed
	d.risk == "medium"
	d.warnings == [{
		"code": "rollout_changed",
		"target": "Deployment/shop/web",
		"message": concat("", [
			"rollout maxSurge of shop/web: 25% → 100%; ",
			"a rollout may run up to 6 pods at once for 3 replicas, 2 times the replicas",
		]),
	}]
}

test_rollout_counts_are_not_sized if {
	policy_input := one("Deployment", "shop", deployment_with({"max_surge": 1}), deployment_with({"max_surge": 10}))
	d := changeset.decision with input as policy_input with lib.config as lib_test.fixture
	d.violations == []
	footprint_messages(d) == {concat("", [
		"rollout maxSurge of shop/web: 1 → 10; ",
		"a rollout may run up to 13 pods at once for 3 replicas, 4.3 times the replicas",
	])}
}

test_max_unavailable_to_zero if {
	policy_input := one("Deployment", "shop", deployment(3, 100), deployment_with({"max_unavailable": "0%"}))
	d := changeset.decision with input as policy_input with lib.config as lib_test.fixture
	footprint_messages(d) == {concat("", [
		"rollout maxUnavailable of shop/web: unset → 0%; no old pod stops before its replacement is ready, ",
		"so a rollout keeps the new pods beside all the old ones: ",
		"up to 4 pods at once for 3 replicas, 1.3 times the replicas",
	])}
}

test_max_unavailable_to_one if {
	policy_input := one("Deployment", "shop", deployment(3, 100), deployment_with({"max_unavailable": 1}))
	d := changeset.decision with input as policy_input with lib.config as lib_test.fixture
	footprint_messages(d) == {concat("", [
		"rollout maxUnavailable of shop/web: unset → 1; ",
		"a rollout may run up to 4 pods at once for 3 replicas, 1.3 times the replicas",
	])}
}

test_strategy_to_recreate if {
	policy_input := one(
		"Deployment", "shop",
		deployment_with({"strategy": "RollingUpdate"}), deployment_with({"strategy": "Recreate"}),
	)
	d := changeset.decision with input as policy_input with lib.config as lib_test.fixture
	footprint_messages(d) == {concat("", [
		"rollout strategy of shop/web: RollingUpdate → Recreate; every old pod stops before new ones start: ",
		"a rollout runs no more than its 3 replicas, with none running in between",
	])}
}

test_strategy_to_rolling_update if {
	policy_input := one(
		"Deployment", "shop",
		deployment_with({"strategy": "Recreate"}), deployment_with({"strategy": "RollingUpdate"}),
	)
	d := changeset.decision with input as policy_input with lib.config as lib_test.fixture
	footprint_messages(d) == {concat("", [
		"rollout strategy of shop/web: Recreate → RollingUpdate; old and new pods run side by side: ",
		"a rollout may run up to 4 pods at once for 3 replicas, 1.3 times the replicas",
	])}
}

test_max_surge_under_recreate_or_without_replicas if {
	recreate := deployment_with({"strategy": "Recreate"})
	under_recreate := changeset.decision with input as one(
		"Deployment", "shop",
		recreate, object.union(recreate, {"max_surge": "100%"}),
	)
		with lib.config as lib_test.fixture
	footprint_messages(under_recreate) == {concat("", [
		"rollout maxSurge of shop/web: unset → 100%; ",
		"a rollout may run no more than its 3 replicas at once",
	])}

	idle := {"replicas": 0, "max_surge": "50%"}
	scaled_to_zero := changeset.decision with input as one(
		"Deployment", "shop",
		deployment_with(idle), deployment_with(object.union(idle, {"max_surge": "100%"})),
	)
		with lib.config as lib_test.fixture
	footprint_messages(scaled_to_zero) == {concat("", [
		"rollout maxSurge of shop/web: 50% → 100%; ",
		"a rollout may run no pods while it has 0 replicas",
	])}
}

test_daemonset_rollout if {
	rolling := object.union(daemonset(100), {"strategy": "RollingUpdate", "max_surge": 0})
	surging := object.union(rolling, {"max_surge": "100%"})

	to_surge := changeset.decision with input as one("DaemonSet", "shop", rolling, surging)
		with lib.config as lib_test.fixture
	footprint_messages(to_surge) == {concat("", [
		"rollout maxSurge of shop/web: 0 → 100%; ",
		"a rollout may run an old and a new pod side by side on up to 100% of its nodes",
	])}

	unset := object.union(surging, {"max_surge": null})
	to_default := changeset.decision with input as one("DaemonSet", "shop", surging, unset)
		with lib.config as lib_test.fixture
	footprint_messages(to_default) == {concat("", [
		"rollout maxSurge of shop/web: 100% → unset; ",
		"a rollout may run one pod per node (old pods stop before new ones start)",
	])}

	replaced_on_delete := object.union(rolling, {"strategy": "OnDelete"})
	on_delete := changeset.decision with input as one("DaemonSet", "shop", rolling, replaced_on_delete)
		with lib.config as lib_test.fixture
	footprint_messages(on_delete) == {concat("", [
		"rollout strategy of shop/web: RollingUpdate → OnDelete; ",
		"a pod is replaced only when someone deletes it: one pod per node",
	])}
}

test_min_ready_seconds if {
	held := deployment_with({"min_ready_seconds": 3600})
	set := changeset.decision with input as one("Deployment", "shop", deployment(3, 100), held)
		with lib.config as lib_test.fixture
	footprint_messages(set) == {concat("", [
		"minReadySeconds of shop/web: unset → 3600s; each new pod must stay ready that long before a rollout moves on, ",
		"so old and new pods run side by side (up to 4 pods at once for 3 replicas, 1.3 times the replicas) ",
		"at least that long at each step",
	])}

	unset := changeset.decision with input as one("Deployment", "shop", held, deployment(3, 100))
		with lib.config as lib_test.fixture
	footprint_messages(unset) == {concat("", [
		"minReadySeconds of shop/web: 3600s → unset; ",
		"new pods count as available as soon as they are ready",
	])}

	stateful := changeset.decision with input as one("StatefulSet", "shop", deployment(3, 100), held)
		with lib.config as lib_test.fixture
	contains(stateful.warnings[0].message, "run side by side (no more than its 3 replicas at once) at least that long")
}

test_progress_deadline_seconds if {
	before := deployment_with({"progress_deadline_seconds": 600})
	longer := changeset.decision with input as one(
		"Deployment", "shop",
		before, deployment_with({"progress_deadline_seconds": 86400}),
	)
		with lib.config as lib_test.fixture
	footprint_messages(longer) == {concat("", [
		"progressDeadlineSeconds of shop/web: 600s → 86400s; a rollout that stops making progress is reported as ",
		"failed only after that long and is not rolled back: its old and new pods (up to 4 pods at once for ",
		"3 replicas, 1.3 times the replicas) stay until someone acts",
	])}

	unset := changeset.decision with input as one("Deployment", "shop", before, deployment(3, 100))
		with lib.config as lib_test.fixture
	footprint_messages(unset) == {concat("", [
		"progressDeadlineSeconds of shop/web: 600s → unset; ",
		"Kubernetes applies its default deadline, 600s",
	])}
}

test_runtime_class if {
	kata := deployment_with({"runtime_class": "kata"})
	to_kata := changeset.decision with input as one("Deployment", "shop", deployment(3, 100), kata)
		with lib.config as lib_test.fixture
	to_kata.allowed
	to_kata.risk == "medium"
	to_kata.warnings == [{
		"code": "runtime_class_changed",
		"target": "Deployment/shop/web",
		"message": concat("", [
			"runtimeClassName of shop/web: unset → kata; every new pod also gets the overhead RuntimeClass kata sets ",
			"(if any) on top of its requests; sizeguard does not count it",
		]),
	}]

	from_kata := changeset.decision with input as one("Deployment", "shop", kata, deployment(3, 100))
		with lib.config as lib_test.fixture
	footprint_messages(from_kata) == {concat("", [
		"runtimeClassName of shop/web: kata → unset; ",
		"new pods no longer get a RuntimeClass's overhead",
	])}
}

log_init(restart_policy) := deployment_with({"init_containers": {"log": {
	"cpu_request": 100, "cpu_limit": null, "memory_request": 64 * mib, "memory_limit": null,
	"restart_policy": restart_policy,
}}})

test_init_container_becomes_a_sidecar if {
	d := changeset.decision with input as one("Deployment", "shop", log_init(null), log_init("Always"))
		with lib.config as lib_test.fixture
	d.allowed
	d.warnings == [{
		"code": "sidecar_changed",
		"target": "Deployment/shop/web",
		"message": concat("", [
			"restartPolicy of init container log in shop/web: unset → Always; it becomes a sidecar: its requests count ",
			"for the pod's whole life, on top of the containers' (per pod after the change: CPU 200m, memory 320Mi)",
		]),
	}]
}

test_sidecar_becomes_an_init_container_again if {
	d := changeset.decision with input as one("Deployment", "shop", log_init("Always"), log_init(null))
		with lib.config as lib_test.fixture
	footprint_messages(d) == {concat("", [
		"restartPolicy of init container log in shop/web: Always → unset; it stops being a sidecar: it must finish ",
		"before the containers start, and its requests no longer count for the pod's life",
	])}

	other := changeset.decision with input as one("Deployment", "shop", log_init(null), log_init("OnFailure"))
		with lib.config as lib_test.fixture
	footprint_messages(other) == {concat("", [
		"restartPolicy of init container log in shop/web: unset → OnFailure; ",
		"only restartPolicy Always (a sidecar) changes what the pod requests",
	])}
}

test_a_sidecar_counts_against_capacity if {
	# 3 replicas x (100m web + 3000m sidecar) = 9300m, from 3 x 3000m (init peak) = 9000m: +300m.
	before := object.union(log_init(null), {"init_containers": {"log": {"cpu_request": 3000}}})
	after := object.union(before, {"init_containers": {"log": {"restart_policy": "Always"}}})
	cluster := {"nodes": 3, "allocatable": {"cpu": 10000, "memory": 48 * gib}, "requested": {"cpu": 8800, "memory": 0}}
	d := changeset.decision with input as within([change("Deployment", "shop", "web", before, after)], cluster)
		with lib.config as lib_test.fixture
	codes(d.violations) == {"exceeds_capacity"}
	contains(d.violations[0].message, "the change set adds 300m of CPU requests")
}

# --- HPAs created and deleted (before or after null) ----------------------------------------

# Every rule below reads a state that is null for a create or a delete: an error on null
# would make the rule undefined, i.e. silently no finding. Each case shows the rule still fires.

new_hpa(min_replicas, max_replicas) := object.union(
	hpa(min_replicas, max_replicas),
	{"scale_target": "apps/v1/Deployment/web"},
)

test_hpa_create_allowed_with_a_warning if {
	policy_input := {"changes": [change("HorizontalPodAutoscaler", "shop", "web", null, new_hpa(2, 10))]}
	d := changeset.decision with input as policy_input with lib.config as lib_test.fixture
	d == {
		"allowed": true,
		"risk": "medium",
		"violations": [],
		"warnings": [{
			"code": "hpa_created",
			"target": "HorizontalPodAutoscaler/shop/web",
			"message": concat("", [
				"creating the HPA shop/web lets the HPA controller move apps/v1/Deployment/web ",
				"to between 2 and 10 replicas within seconds",
			]),
		}],
		"requires": [],
		"approval_levels": 1,
	}
}

test_hpa_create_bounds_apply_to_the_new_hpa if {
	d := changeset.decision with input as one("HorizontalPodAutoscaler", "shop", null, new_hpa(2, 300))
		with lib.config as lib_test.fixture
	d.violations == [{
		"code": "replicas_out_of_bounds",
		"target": "HorizontalPodAutoscaler/shop/web",
		"message": "HPA maxReplicas of shop/web would be 300; the allowed range is 0 to 200",
	}]
}

test_hpa_create_min_above_max_denied if {
	d := changeset.decision with input as one("HorizontalPodAutoscaler", "shop", null, new_hpa(8, 4))
		with lib.config as lib_test.fixture
	codes(d.violations) == {"hpa_min_above_max"}
}

test_hpa_create_with_zero_min_replicas_in_production_denied if {
	d := changeset.decision with input as one("HorizontalPodAutoscaler", "shop-prod", null, new_hpa(0, 4))
		with lib.config as lib_test.fixture
	d.violations == [{
		"code": "replicas_zero_in_production",
		"target": "HorizontalPodAutoscaler/shop-prod/web",
		"message": "HPA minReplicas of shop-prod/web would go to 0 in production namespace shop-prod; keep at least one",
	}]
	d.risk == "high"
}

test_hpa_create_is_not_a_retarget if {
	d := changeset.decision with input as one("HorizontalPodAutoscaler", "shop", null, new_hpa(2, 10))
		with lib.config as lib_test.fixture
	d.violations == []
}

test_hpa_delete_in_production_warns_that_the_workload_stays if {
	d := changeset.decision with input as one("HorizontalPodAutoscaler", "shop-prod", new_hpa(2, 10), null)
		with lib.config as lib_test.fixture
	d.allowed
	d.risk == "high"
	d.requires == ["authenticated_approver", "typed_confirmation"]
	codes(d.warnings) == {"hpa_deleted", "production_namespace"}
	concat("", [
		"deleting the HPA shop-prod/web leaves apps/v1/Deployment/web at the replicas it runs at that moment ",
		"(the HPA kept it between 2 and 10); nothing scales it afterwards",
	]) in messages(d.warnings)
}

test_hpa_delete_outside_production_has_no_warning if {
	d := changeset.decision with input as one("HorizontalPodAutoscaler", "shop", new_hpa(2, 10), null)
		with lib.config as lib_test.fixture
	d == {"allowed": true, "risk": "medium", "violations": [], "warnings": [], "requires": [], "approval_levels": 1}
}

test_hpa_delete_in_a_frozen_namespace_denied if {
	d := changeset.decision with input as one("HorizontalPodAutoscaler", "kube-system", new_hpa(2, 10), null)
		with lib.config as lib_test.fixture
	codes(d.violations) == {"namespace_frozen"}
}

test_only_hpas_are_created_or_deleted if {
	every case in [
		{"kind": "Deployment", "before": null, "after": deployment(3, 100)},
		{"kind": "StatefulSet", "before": deployment(3, 100), "after": null},
		{"kind": "HorizontalPodAutoscaler", "before": null, "after": null},
		{"kind": "HorizontalPodAutoscaler", "before": "none", "after": new_hpa(1, 2)},
	] {
		d := changeset.decision with input as one(case.kind, "shop", case.before, case.after)
			with lib.config as lib_test.fixture
		codes(d.violations) == {"invalid_change"}
	}
}
