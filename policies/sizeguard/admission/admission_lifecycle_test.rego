package sizeguard.admission_test

# CREATE and DELETE of workloads and HPAs, LimitRanges and pods/resize: the paths around a
# workload's footprint that do not update the workload. Fixtures are in admission_test.rego.

import data.sizeguard.admission
import data.sizeguard.lib
import data.sizeguard.lib_test

namespace_controller := "system:serviceaccount:kube-system:namespace-controller"

hpa(min_replicas, max_replicas) := {
	"replicas": null, "containers": {}, "init_containers": {},
	"min_replicas": min_replicas, "max_replicas": max_replicas,
	"scale_target": "apps/v1/Deployment/web",
}

# An admission input for a CREATE (before null) or DELETE (after null) of an object.
lifecycle_input(operation, overrides, before, after, approval) := object.union(
	admission_input(request(object.union({"operation": operation}, overrides)), before, after, approval),
	{"context": {"recently_created": false}},
)

# The configuration with some admission.lifecycle settings replaced.
with_lifecycle(settings) := patched({"admission": object.union(
	lib_test.fixture.admission,
	{"lifecycle": object.union(lib_test.fixture.admission.lifecycle, settings)},
)})

# --- workloads ----------------------------------------------------------------------------

test_workload_create_in_production_denied if {
	d := admission.decision with input as lifecycle_input("CREATE", {}, null, state(3, 100), no_approval)
		with lib.config as lib_test.fixture
	d == {
		"allowed": false,
		"reasons": [concat("", [
			"sizeguard: creating Deployment shop-prod/web is denied for alice@example.com: in namespace shop-prod ",
			"(config.admission.lifecycle.workloads: production) only exempt principals may create or delete ",
			"workloads (sizeguard approves no workload create or delete, since a new workload can have any size); ",
			"a deploying pipeline needs its user in config.admission.lifecycle.exempt_users or one of its groups ",
			"in exempt_groups (policies/data.json); to resize a workload, change it through the sizeguard MCP server",
		])],
		"warnings": [],
	}
}

test_workload_delete_in_production_denied_even_with_an_approval if {
	policy_input := lifecycle_input("DELETE", {"kind": "StatefulSet"}, state(3, 100), null, approval_for("delete"))
	d := admission.decision with input as policy_input with lib.config as lib_test.fixture
	not d.allowed
	startswith(d.reasons[0], "sizeguard: deleting StatefulSet shop-prod/web is denied for alice@example.com")
}

test_workload_create_outside_production_allowed if {
	req := {"namespace": "shop", "kind": "DaemonSet"}
	policy_input := lifecycle_input("CREATE", req, null, state(null, 100), no_approval)
	d := admission.decision with input as policy_input with lib.config as lib_test.fixture
	d == {
		"allowed": true,
		"reasons": [concat("", [
			"sizeguard: creating DaemonSet shop/web admitted: ",
			"namespace shop is outside config.admission.lifecycle.workloads (production)",
		])],
		"warnings": [],
	}
}

test_workload_create_in_a_namespace_production_by_label_denied if {
	policy_input := object.union(
		lifecycle_input("CREATE", {"namespace": "payments"}, null, state(3, 100), no_approval),
		{"context": {"namespace_labels": {"environment": "production"}}},
	)
	d := admission.decision with input as policy_input with lib.config as lib_test.fixture
	not d.allowed
	contains(d.reasons[0], "in namespace payments (config.admission.lifecycle.workloads: production)")
}

test_workload_lifecycle_by_exempt_principals_allowed if {
	by_user := lifecycle_input("DELETE", {"user": namespace_controller}, state(3, 100), null, no_approval)
	d := admission.decision with input as by_user with lib.config as lib_test.fixture
	d == {
		"allowed": true,
		"reasons": [sprintf(
			"sizeguard: deleting Deployment shop-prod/web by exempt principal %s admitted",
			[namespace_controller],
		)],
		"warnings": [],
	}
	by_group := lifecycle_input("CREATE", {"user": "ci", "groups": ["deployers"]}, null, state(3, 100), no_approval)
	g := admission.decision with input as by_group with lib.config as with_lifecycle({"exempt_groups": ["deployers"]})
	g.allowed
}

test_a_group_named_like_an_exempt_user_is_not_exempt if {
	req := {"user": "mallory", "groups": [namespace_controller]}
	policy_input := lifecycle_input("CREATE", req, null, state(3, 100), no_approval)
	d := admission.decision with input as policy_input with lib.config as lib_test.fixture
	not d.allowed
}

test_workload_lifecycle_scopes if {
	outside := lifecycle_input("CREATE", {"namespace": "shop"}, null, state(3, 100), no_approval)
	everywhere := admission.decision with input as outside with lib.config as with_lifecycle({"workloads": "all"})
	not everywhere.allowed
	contains(everywhere.reasons[0], "in namespace shop (config.admission.lifecycle.workloads: all)")

	inside := lifecycle_input("CREATE", {}, null, state(3, 100), no_approval)
	nowhere := admission.decision with input as inside with lib.config as with_lifecycle({"workloads": "none"})
	nowhere.allowed

	# A scope sizeguard does not know is "all": a typo must not open the door.
	typo := admission.decision with input as outside with lib.config as with_lifecycle({"workloads": "prod"})
	not typo.allowed
}

test_missing_lifecycle_settings_fail_closed if {
	req := {"namespace": "shop", "user": namespace_controller}
	policy_input := lifecycle_input("CREATE", req, null, state(3, 100), no_approval)
	d := admission.decision with input as policy_input
		with lib.config as json.remove(lib_test.fixture, ["admission/lifecycle"])
	not d.allowed
	contains(d.reasons[0], "(config.admission.lifecycle.workloads: all)")
}

test_break_glass_workload_create_admitted_and_named if {
	req := {"user": "oncall", "groups": ["sizeguard:break-glass"]}
	d := admission.decision with input as lifecycle_input("CREATE", req, null, state(3, 100), no_approval)
		with lib.config as lib_test.fixture
	d.allowed
	d.warnings == [concat("", [
		"sizeguard: break-glass: oncall (group sizeguard:break-glass) created Deployment shop-prod/web ",
		"without an approval or policy checks; record why, and bring the workload back to an approved state ",
		"through sizeguard",
	])]
	deleted := admission.decision with input as lifecycle_input("DELETE", req, state(3, 100), null, no_approval)
		with lib.config as lib_test.fixture
	contains(deleted.reasons[0], "(group sizeguard:break-glass) deleted Deployment shop-prod/web without")
}

# --- HPAs ---------------------------------------------------------------------------------

hpa_request := {"kind": "HorizontalPodAutoscaler"}

test_hpa_create_without_approval_denied if {
	d := admission.decision with input as lifecycle_input("CREATE", hpa_request, null, hpa(2, 10), no_approval)
		with lib.config as lib_test.fixture
	not d.allowed
	d.reasons == [concat("", [
		"sizeguard: creation of HorizontalPodAutoscaler shop-prod/web needs an approval; ",
		"request one through the sizeguard MCP server",
	])]
}

test_hpa_create_with_a_create_approval_allowed if {
	d := admission.decision with input as lifecycle_input("CREATE", hpa_request, null, hpa(2, 10), approval_for("create"))
		with lib.config as lib_test.fixture
	d == {
		"allowed": true,
		"reasons": ["sizeguard: creation of HorizontalPodAutoscaler shop-prod/web admitted with a valid approval"],
		"warnings": [concat("", [
			"sizeguard: creating the HPA shop-prod/web lets the HPA controller move apps/v1/Deployment/web ",
			"to between 2 and 10 replicas within seconds",
		])],
	}
}

test_hpa_create_with_an_apply_approval_denied if {
	d := admission.decision with input as lifecycle_input("CREATE", hpa_request, null, hpa(2, 10), approval_for("apply"))
		with lib.config as lib_test.fixture
	not d.allowed
	contains(d.reasons[0], "is not valid (wrong_operation)")
}

# Each rule below reads before, which is null on CREATE: an error on null would make it
# undefined, i.e. silently no violation.
test_hpa_create_bounds_apply_to_the_new_hpa if {
	d := admission.decision with input as lifecycle_input("CREATE", hpa_request, null, hpa(2, 300), approval_for("create"))
		with lib.config as lib_test.fixture
	not d.allowed
	d.reasons == [concat("", [
		"sizeguard: HPA maxReplicas of shop-prod/web would be 300; the allowed range is 0 to 200 ",
		"[replicas_out_of_bounds]; this is denied even with an approval, propose a change within policy",
	])]
}

test_hpa_create_min_above_max_denied if {
	d := admission.decision with input as lifecycle_input("CREATE", hpa_request, null, hpa(8, 4), approval_for("create"))
		with lib.config as lib_test.fixture
	not d.allowed
	contains(d.reasons[0], "[hpa_min_above_max]")
}

test_hpa_create_with_zero_min_replicas_in_production_denied if {
	d := admission.decision with input as lifecycle_input("CREATE", hpa_request, null, hpa(0, 4), approval_for("create"))
		with lib.config as lib_test.fixture
	not d.allowed
	d.reasons == [concat("", [
		"sizeguard: HPA minReplicas of shop-prod/web would go to 0 in production namespace shop-prod; ",
		"keep at least one [replicas_zero_in_production]; this is denied even with an approval, ",
		"propose a change within policy",
	])]
}

test_hpa_create_in_a_frozen_namespace_denied if {
	req := {"kind": "HorizontalPodAutoscaler", "namespace": "kube-system"}
	policy_input := lifecycle_input("CREATE", req, null, hpa(2, 4), approval_for("create"))
	d := admission.decision with input as policy_input with lib.config as lib_test.fixture
	not d.allowed
	contains(d.reasons[0], "[namespace_frozen]")
}

test_hpa_create_dry_run_without_approval_allowed_with_warning if {
	req := {"kind": "HorizontalPodAutoscaler", "dry_run": true}
	policy_input := lifecycle_input("CREATE", req, null, hpa(2, 10), no_approval)
	d := admission.decision with input as policy_input with lib.config as lib_test.fixture
	d.allowed
	d.reasons == [concat("", [
		"sizeguard: dry run of the creation of HorizontalPodAutoscaler shop-prod/web ",
		"admitted without a valid approval",
	])]
	concat("", [
		"sizeguard: dry run admitted; the real creation of HorizontalPodAutoscaler shop-prod/web ",
		"needs an approval from the sizeguard MCP server",
	]) in d.warnings
}

test_hpa_delete_with_a_delete_approval_allowed_with_a_warning if {
	d := admission.decision with input as lifecycle_input("DELETE", hpa_request, hpa(2, 10), null, approval_for("delete"))
		with lib.config as lib_test.fixture
	d == {
		"allowed": true,
		"reasons": ["sizeguard: deletion of HorizontalPodAutoscaler shop-prod/web admitted with a valid approval"],
		"warnings": [concat("", [
			"sizeguard: deleting the HPA shop-prod/web leaves apps/v1/Deployment/web at the replicas it runs ",
			"at that moment (the HPA kept it between 2 and 10); nothing scales it afterwards",
		])],
	}
}

test_hpa_delete_without_approval_denied if {
	req := {"kind": "HorizontalPodAutoscaler", "namespace": "shop"}
	policy_input := lifecycle_input("DELETE", req, hpa(2, 10), null, no_approval)
	d := admission.decision with input as policy_input with lib.config as lib_test.fixture
	d == {
		"allowed": false,
		"reasons": [concat("", [
			"sizeguard: deletion of HorizontalPodAutoscaler shop/web needs an approval; ",
			"request one through the sizeguard MCP server",
		])],
		"warnings": [],
	}
}

test_hpa_delete_of_a_recently_created_hpa_denied_even_with_approval if {
	policy_input := object.union(
		lifecycle_input("DELETE", hpa_request, hpa(2, 10), null, approval_for("delete")),
		{"context": {"recently_created": true}},
	)
	d := admission.decision with input as policy_input with lib.config as lib_test.fixture
	not d.allowed
	d.reasons == [concat("", [
		"sizeguard: deleting HorizontalPodAutoscaler shop-prod/web by alice@example.com is denied: it was created ",
		"less than 2 minutes ago (or its age is unknown); try again once it is 2 minutes old, when no approval ",
		"that could create it again is still valid",
	])]
}

test_hpa_delete_without_a_known_age_denied if {
	policy_input := object.remove(
		lifecycle_input("DELETE", hpa_request, hpa(2, 10), null, approval_for("delete")),
		["context"],
	)
	d := admission.decision with input as policy_input with lib.config as lib_test.fixture
	not d.allowed
	contains(d.reasons[0], "created less than 2 minutes ago")
}

test_hpa_lifecycle_by_exempt_principal_allowed if {
	req := {"kind": "HorizontalPodAutoscaler", "user": namespace_controller}
	policy_input := object.union(
		lifecycle_input("DELETE", req, hpa(2, 10), null, no_approval),
		{"context": {"recently_created": true}},
	)
	d := admission.decision with input as policy_input with lib.config as lib_test.fixture
	d.reasons == [sprintf(
		"sizeguard: deleting HorizontalPodAutoscaler shop-prod/web by exempt principal %s admitted",
		[namespace_controller],
	)]
	d.allowed
}

test_hpa_lifecycle_out_of_scope_allowed if {
	req := {"kind": "HorizontalPodAutoscaler", "namespace": "shop"}
	policy_input := lifecycle_input("CREATE", req, null, hpa(2, 10), no_approval)
	d := admission.decision with input as policy_input with lib.config as with_lifecycle({"hpas": "production"})
	d == {
		"allowed": true,
		"reasons": [concat("", [
			"sizeguard: creating HorizontalPodAutoscaler shop/web admitted: ",
			"namespace shop is outside config.admission.lifecycle.hpas (production)",
		])],
		"warnings": [],
	}
}

test_hpa_update_still_needs_an_approval if {
	policy_input := admission_input(request(hpa_request), hpa(2, 10), hpa(2, 12), no_approval)
	d := admission.decision with input as policy_input with lib.config as lib_test.fixture
	d.reasons == [concat("", [
		"sizeguard: HPA maxReplicas change on shop-prod/web needs an approval; ",
		"request one through the sizeguard MCP server",
	])]
}

# --- LimitRanges --------------------------------------------------------------------------

limits(cpu) := {"limits": [{"type": "Container", "default": {"cpu": cpu}}]}

limit_range := {"kind": "LimitRange", "name": "defaults"}

test_limit_range_create_in_production_denied if {
	d := admission.decision with input as lifecycle_input("CREATE", limit_range, null, limits("2"), no_approval)
		with lib.config as lib_test.fixture
	d == {
		"allowed": false,
		"reasons": [concat("", [
			"sizeguard: creating LimitRange shop-prod/defaults is denied for alice@example.com: in namespace shop-prod ",
			"(config.admission.lifecycle.limit_ranges: production) only exempt principals may create, change or ",
			"delete LimitRanges (a LimitRange sets the default requests and limits of containers that leave them ",
			"unset); a deploying pipeline needs its user in config.admission.lifecycle.exempt_users or one of its ",
			"groups in exempt_groups (policies/data.json)",
		])],
		"warnings": [],
	}
}

test_limit_range_update_and_delete_in_production_denied if {
	update := admission.decision with input as admission_input(request(limit_range), limits("1"), limits("2"), no_approval)
		with lib.config as lib_test.fixture
	startswith(update.reasons[0], "sizeguard: changing LimitRange shop-prod/defaults is denied")
	delete := admission.decision with input as lifecycle_input("DELETE", limit_range, limits("1"), null, no_approval)
		with lib.config as lib_test.fixture
	startswith(delete.reasons[0], "sizeguard: deleting LimitRange shop-prod/defaults is denied")
}

test_unchanged_limit_range_allowed if {
	d := admission.decision with input as admission_input(request(limit_range), limits("1"), limits("1"), no_approval)
		with lib.config as lib_test.fixture
	d == {"allowed": true, "reasons": [], "warnings": []}
}

test_limit_range_outside_production_allowed if {
	req := object.union(limit_range, {"namespace": "shop"})
	policy_input := lifecycle_input("CREATE", req, null, {"limits": []}, no_approval)
	d := admission.decision with input as policy_input with lib.config as lib_test.fixture
	d.allowed
	d.reasons == [concat("", [
		"sizeguard: creating LimitRange shop/defaults admitted: ",
		"namespace shop is outside config.admission.lifecycle.limit_ranges (production)",
	])]
}

test_limit_range_by_exempt_principal_allowed if {
	req := object.union(limit_range, {"user": namespace_controller})
	policy_input := lifecycle_input("DELETE", req, limits("1"), null, no_approval)
	d := admission.decision with input as policy_input with lib.config as lib_test.fixture
	d.allowed
}

test_break_glass_limit_range_change_named if {
	req := object.union(limit_range, {"user": "oncall", "groups": ["sizeguard:break-glass"]})
	d := admission.decision with input as admission_input(request(req), limits("1"), limits("2"), no_approval)
		with lib.config as lib_test.fixture
	d.allowed
	contains(d.reasons[0], "changed LimitRange limits on shop-prod/defaults without an approval")
}

# --- pods/resize --------------------------------------------------------------------------

resize := {"kind": "Pod", "name": "web-7d9f", "subresource": "resize"}

pod(cpu_request) := object.union(state(null, cpu_request), {"replicas": null})

test_resize_denied_by_default if {
	d := admission.decision with input as admission_input(request(resize), pod(100), pod(400), valid_approval)
		with lib.config as lib_test.fixture
	d == {
		"allowed": false,
		"reasons": [concat("", [
			"sizeguard: in-place resize (pods/resize) of pod shop-prod/web-7d9f by alice@example.com is denied; ",
			"change the resources of the workload that owns the pod through the sizeguard MCP server, ",
			"which applies an approved change",
		])],
		"warnings": [],
	}
}

test_resize_by_exempt_principals_allowed if {
	config := patched({"admission": object.union(
		lib_test.fixture.admission,
		{"resize_exempt_users": ["vpa-updater"], "resize_exempt_groups": ["resizers"]},
	)})
	vpa := request(object.union(resize, {"user": "vpa-updater"}))
	by_user := admission.decision with input as admission_input(vpa, pod(100), pod(400), no_approval)
		with lib.config as config
	by_user.reasons == ["sizeguard: resize of pod shop-prod/web-7d9f by exempt principal vpa-updater admitted"]
	by_user.allowed
	resizer := request(object.union(resize, {"groups": ["resizers"]}))
	by_group := admission.decision with input as admission_input(resizer, pod(100), pod(400), no_approval)
		with lib.config as config
	by_group.allowed
}

test_break_glass_resize_named if {
	req := object.union(resize, {"user": "oncall", "groups": ["sizeguard:break-glass"]})
	d := admission.decision with input as admission_input(request(req), pod(100), pod(400), no_approval)
		with lib.config as lib_test.fixture
	d.allowed
	contains(d.reasons[0], "changed CPU request on shop-prod/web-7d9f without an approval")
}
