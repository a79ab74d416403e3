package sizeguard.admission_test

import data.sizeguard.admission
import data.sizeguard.lib
import data.sizeguard.lib_test

mib := 1024 * 1024

# The configuration of policies/data.json with some settings replaced.
patched(settings) := object.union(lib_test.fixture, settings)

state(replicas, cpu_request) := {
	"replicas": replicas,
	"containers": {"web": {
		"cpu_request": cpu_request,
		"cpu_limit": null,
		"memory_request": 256 * mib,
		"memory_limit": 512 * mib,
	}},
	"init_containers": {},
	"min_replicas": null,
	"max_replicas": null,
}

request(overrides) := object.union(
	{
		"uid": "req-1",
		"operation": "UPDATE",
		"user": "alice@example.com",
		"groups": ["system:authenticated"],
		"kind": "Deployment",
		"namespace": "shop-prod",
		"name": "web",
		"subresource": "",
		"dry_run": false,
		"orphan": false,
	},
	overrides,
)

no_approval := {"present": false, "valid": false, "error": null, "claims": null}

# A valid approval of the given op ("apply", "rollback", "create" or "delete"), as the webhook passes it.
approval_for(op) := {"present": true, "valid": true, "error": null, "claims": {"cs": "cs-0123", "op": op}}

valid_approval := approval_for("apply")

admission_input(req, before, after, approval) := {
	"request": req,
	"before": before,
	"after": after,
	"approval": approval,
	"context": {"labels": {}, "namespace_labels": {}},
}

# A 100m -> 250m CPU request change of shop-prod/web, admitted or not.
cpu_change(req, approval) := admission_input(req, state(3, 100), state(3, 250), approval)

test_unchanged_state_allowed if {
	policy_input := admission_input(request({}), state(3, 100), state(3, 100), no_approval)
	d := admission.decision with input as policy_input with lib.config as lib_test.fixture
	d == {"allowed": true, "reasons": [], "warnings": []}
}

test_unguarded_operation_allowed if {
	policy_input := {"request": request({"operation": "CONNECT"}), "before": null, "after": state(3, 100)}
	d := admission.decision with input as policy_input with lib.config as lib_test.fixture
	d == {"allowed": true, "reasons": [], "warnings": []}
}

update_only := {"op": "replace", "path": "/admission/guarded_operations", "value": ["UPDATE"]}

test_operation_left_out_of_guarded_operations_allowed if {
	policy_input := {"request": request({"operation": "CREATE"}), "before": null, "after": state(3, 100)}
	d := admission.decision with input as policy_input
		with lib.config as json.patch(lib_test.fixture, [update_only])
	d == {"allowed": true, "reasons": [], "warnings": []}
}

test_change_without_approval_denied if {
	d := admission.decision with input as cpu_change(request({}), no_approval) with lib.config as lib_test.fixture
	not d.allowed
	d.reasons == [concat("", [
		"sizeguard: CPU request change on shop-prod/web needs an approval; ",
		"request one through the sizeguard MCP server",
	])]
}

test_change_with_missing_approval_object_denied if {
	d := admission.decision with input as object.remove(cpu_change(request({}), no_approval), ["approval"])
		with lib.config as lib_test.fixture
	not d.allowed
}

test_change_with_valid_approval_allowed if {
	d := admission.decision with input as cpu_change(request({}), valid_approval) with lib.config as lib_test.fixture
	d.allowed
	d.reasons == ["sizeguard: CPU request change on shop-prod/web admitted with a valid approval"]
	d.warnings == [concat("", [
		"sizeguard: CPU request of container web in shop-prod/web rises 150% (100m → 250m); ",
		"changes beyond 100% deserve a careful review",
	])]
}

test_invalid_approval_denied_with_its_error if {
	approval := {"present": true, "valid": false, "error": "expired", "claims": null}
	d := admission.decision with input as cpu_change(request({}), approval) with lib.config as lib_test.fixture
	not d.allowed
	d.reasons == [concat("", [
		"sizeguard: the approval on shop-prod/web is not valid (expired); ",
		"request a new one through the sizeguard MCP server",
	])]
}

test_invalid_approval_without_error_code if {
	d := admission.decision with input as cpu_change(request({}), {"present": true, "valid": false})
		with lib.config as lib_test.fixture
	contains(d.reasons[0], "is not valid (invalid)")
}

test_dry_run_without_approval_allowed_with_warning if {
	d := admission.decision with input as cpu_change(request({"dry_run": true}), no_approval)
		with lib.config as lib_test.fixture
	d.allowed
	d.reasons == ["sizeguard: dry run of the CPU request change on shop-prod/web admitted without a valid approval"]
	concat("", [
		"sizeguard: dry run admitted; the real CPU request change on shop-prod/web ",
		"needs an approval from the sizeguard MCP server",
	]) in d.warnings
}

test_dry_run_policy_violation_denied if {
	policy_input := admission_input(request({"dry_run": true}), state(3, 100), state(3, 700), no_approval)
	d := admission.decision with input as policy_input with lib.config as lib_test.fixture
	not d.allowed
	d.reasons == [concat("", [
		"sizeguard: CPU request of container web in shop-prod/web rises 600% (100m → 700m); the limit is 500% ",
		"[increase_too_large]; this is denied even with an approval, propose a change within policy",
	])]
}

test_valid_approval_does_not_admit_a_policy_violation if {
	policy_input := admission_input(request({}), state(3, 1000), state(3, 50), valid_approval)
	d := admission.decision with input as policy_input with lib.config as lib_test.fixture
	not d.allowed
	count(d.reasons) == 1
	contains(d.reasons[0], "[decrease_too_large]")
}

hpa_state(ref) := {
	"replicas": null, "containers": {}, "init_containers": {},
	"min_replicas": 2, "max_replicas": 10, "scale_target": ref,
}

test_signed_rollback_may_exceed_the_size_limits if {
	policy_input := admission_input(request({}), state(3, 50), state(3, 1000), approval_for("rollback"))
	d := admission.decision with input as policy_input with lib.config as lib_test.fixture
	d.allowed
}

test_unsigned_rollback_claim_does_not_lift_the_size_limits if {
	forged := {"present": true, "valid": false, "error": "bad_signature", "claims": {"op": "rollback"}}
	policy_input := admission_input(request({"dry_run": true}), state(3, 50), state(3, 1000), forged)
	d := admission.decision with input as policy_input with lib.config as lib_test.fixture
	not d.allowed
}

test_hpa_retarget_denied_with_approval_and_named_without if {
	req := request({"kind": "HorizontalPodAutoscaler"})
	before := hpa_state("apps/v1/Deployment/web")
	after := hpa_state("apps/v1/Deployment/db")
	approved := admission.decision with input as admission_input(req, before, after, valid_approval)
		with lib.config as lib_test.fixture
	not approved.allowed
	contains(approved.reasons[0], "[hpa_retarget]")
	unapproved := admission.decision with input as admission_input(req, before, after, no_approval)
		with lib.config as lib_test.fixture
	not unapproved.allowed
	contains(unapproved.reasons[0], "HPA scaleTargetRef change on shop-prod/web")
}

test_replicas_to_zero_in_production_denied_with_approval if {
	policy_input := admission_input(request({}), state(1, 100), state(0, 100), valid_approval)
	d := admission.decision with input as policy_input with lib.config as lib_test.fixture
	not d.allowed
	some reason in d.reasons
	contains(reason, "[replicas_zero_in_production]")
}

test_production_by_namespace_label if {
	labelled := object.union(
		admission_input(request({"namespace": "payments"}), state(1, 100), state(0, 100), valid_approval),
		{"context": {"namespace_labels": {"environment": "production"}}},
	)
	d := admission.decision with input as labelled with lib.config as lib_test.fixture
	some reason in d.reasons
	contains(reason, "[replicas_zero_in_production]")
}

test_frozen_namespace_denied_with_approval if {
	d := admission.decision with input as cpu_change(request({"namespace": "kube-system"}), valid_approval)
		with lib.config as lib_test.fixture
	not d.allowed
	contains(d.reasons[0], "[namespace_frozen]")
}

test_break_glass_admitted_and_named if {
	req := request({"user": "oncall", "groups": ["system:authenticated", "sizeguard:break-glass"]})
	d := admission.decision with input as admission_input(req, state(3, 100), state(3, 900), no_approval)
		with lib.config as lib_test.fixture
	d.allowed
	reason := concat("", [
		"sizeguard: break-glass: oncall (group sizeguard:break-glass) changed CPU request on shop-prod/web ",
		"without an approval or policy checks; record why, and bring the workload back to an approved state ",
		"through sizeguard",
	])
	d.reasons == [reason]
	d.warnings == [reason]
}

test_scale_denied_by_default if {
	policy_input := admission_input(request({"subresource": "scale"}), state(3, 100), state(5, 100), no_approval)
	d := admission.decision with input as policy_input with lib.config as lib_test.fixture
	d == {
		"allowed": false,
		"reasons": [concat("", [
			"sizeguard: scale requests on shop-prod/web are denied for alice@example.com; ",
			"change replicas through the sizeguard MCP server, which applies an approved change",
		])],
		"warnings": [],
	}
}

test_scale_by_hpa_controller_allowed if {
	hpa_user := "system:serviceaccount:kube-system:horizontal-pod-autoscaler"
	req := request({"subresource": "scale", "user": hpa_user, "groups": ["system:serviceaccounts"]})
	d := admission.decision with input as admission_input(req, state(3, 100), state(30, 100), no_approval)
		with lib.config as lib_test.fixture
	d.allowed
	d.reasons == [sprintf("sizeguard: scale of shop-prod/web by exempt principal %s admitted", [hpa_user])]
}

test_scale_by_exempt_group_allowed if {
	req := request({"subresource": "scale", "user": "keda", "groups": ["autoscalers"]})
	d := admission.decision with input as admission_input(req, state(3, 100), state(4, 100), no_approval)
		with lib.config as patched({"admission": object.union(
			lib_test.fixture.admission,
			{"scale_exempt_groups": ["autoscalers"]},
		)})
	d.allowed
}

test_a_group_named_like_the_hpa_controller_is_not_exempt if {
	req := request({
		"subresource": "scale", "user": "bob",
		"groups": ["system:serviceaccount:kube-system:horizontal-pod-autoscaler"],
	})
	d := admission.decision with input as admission_input(req, state(3, 100), state(7, 100), no_approval)
		with lib.config as lib_test.fixture
	not d.allowed
}

test_missing_groups_treated_as_none if {
	d := admission.decision with input as cpu_change(object.remove(request({}), ["groups"]), valid_approval)
		with lib.config as lib_test.fixture
	d.allowed
}

test_approval_for_another_operation_denied if {
	d := admission.decision with input as cpu_change(request({}), approval_for("create"))
		with lib.config as lib_test.fixture
	d == {
		"allowed": false,
		"reasons": [concat("", [
			"sizeguard: the approval on shop-prod/web is not valid (wrong_operation); ",
			"request a new one through the sizeguard MCP server",
		])],
		"warnings": [concat("", [
			"sizeguard: CPU request of container web in shop-prod/web rises 150% (100m → 250m); ",
			"changes beyond 100% deserve a careful review",
		])],
	}
}

test_approval_without_op_is_not_valid if {
	d := admission.decision with input as cpu_change(request({}), {"valid": true, "claims": {}})
		with lib.config as lib_test.fixture
	not d.allowed
	contains(d.reasons[0], "(wrong_operation)")
}

test_rollout_change_admitted_with_a_warning if {
	before := object.union(state(3, 100), {"strategy": "RollingUpdate", "max_surge": "25%", "max_unavailable": "25%"})
	after := object.union(before, {"max_surge": "100%", "max_unavailable": 0})
	d := admission.decision with input as admission_input(request({}), before, after, valid_approval)
		with lib.config as lib_test.fixture
	d.allowed
	d.reasons == [concat("", [
		"sizeguard: rollout maxSurge, rollout maxUnavailable change on shop-prod/web ",
		"admitted with a valid approval",
	])]
	d.warnings == [
		concat("", [
			"sizeguard: rollout maxSurge of shop-prod/web: 25% → 100%; ",
			"a rollout may run up to 6 pods at once for 3 replicas, 2 times the replicas",
		]),
		concat("", [
			"sizeguard: rollout maxUnavailable of shop-prod/web: 25% → 0; no old pod stops before its replacement ",
			"is ready, so a rollout keeps the new pods beside all the old ones: ",
			"up to 6 pods at once for 3 replicas, 2 times the replicas",
		]),
	]
}

test_rollout_change_without_approval_names_the_fields if {
	after := object.union(state(3, 100), {"min_ready_seconds": 86400})
	d := admission.decision with input as admission_input(request({}), state(3, 100), after, no_approval)
		with lib.config as lib_test.fixture
	d.reasons == [concat("", [
		"sizeguard: minReadySeconds change on shop-prod/web needs an approval; ",
		"request one through the sizeguard MCP server",
	])]
}

test_footprint_change_without_a_named_value if {
	# A container that requests nothing, added: the guarded state differs, no value does.
	after := object.union(state(3, 100), {"containers": {"log": {}}})
	d := admission.decision with input as admission_input(request({}), state(3, 100), after, no_approval)
		with lib.config as lib_test.fixture
	d.reasons == [concat("", [
		"sizeguard: footprint change on shop-prod/web needs an approval; ",
		"request one through the sizeguard MCP server",
	])]
}

test_malformed_input_denied if {
	d := admission.decision with input as {"request": request({}), "before": state(3, 100)}
		with lib.config as lib_test.fixture
	d.allowed == false
	startswith(d.reasons[0], "sizeguard: the admission input is malformed")
	empty := admission.decision with input as {} with lib.config as lib_test.fixture
	empty.allowed == false
	nameless := admission.decision with input as {"request": request({"name": 7}), "before": {}, "after": {}}
		with lib.config as lib_test.fixture
	nameless.allowed == false
}

test_states_must_fit_the_operation if {
	every case in [
		{"operation": "UPDATE", "before": state(3, 100), "after": null},
		{"operation": "UPDATE", "before": null, "after": state(3, 100)},
		{"operation": "CREATE", "before": state(3, 100), "after": state(3, 100)},
		{"operation": "CREATE", "before": null, "after": null},
		{"operation": "DELETE", "before": state(3, 100), "after": state(3, 100)},
		{"operation": "DELETE", "before": "gone", "after": null},
	] {
		policy_input := admission_input(request({"operation": case.operation}), case.before, case.after, no_approval)
		d := admission.decision with input as policy_input with lib.config as lib_test.fixture
		not d.allowed
		startswith(d.reasons[0], "sizeguard: the admission input is malformed")
	}
}

test_subresource_must_be_a_string_or_absent if {
	bad := admission.decision with input as cpu_change(request({"subresource": 1}), valid_approval)
		with lib.config as lib_test.fixture
	startswith(bad.reasons[0], "sizeguard: the admission input is malformed")
	absent := admission.decision with input as cpu_change(object.remove(request({}), ["subresource"]), valid_approval)
		with lib.config as lib_test.fixture
	absent.allowed
	null_subresource := admission.decision with input as cpu_change(request({"subresource": null}), valid_approval)
		with lib.config as lib_test.fixture
	null_subresource.allowed
}

test_unknown_resource_denied if {
	d := admission.decision with input as cpu_change(request({"kind": "ReplicationController"}), valid_approval)
		with lib.config as lib_test.fixture
	d == {
		"allowed": false,
		"reasons": [concat("", [
			"sizeguard: UPDATE of ReplicationController shop-prod/web (subresource \"\") by alice@example.com is denied: ",
			"sizeguard decides only workloads, their scale subresource, ReplicaSets, HPAs, LimitRanges and pods/resize; ",
			"check the webhook registration (rules) against docs/webhook.md",
		])],
		"warnings": [],
	}
	every overrides in [
		{"kind": "Pod"},
		{"kind": "HorizontalPodAutoscaler", "subresource": "status"},
		{"kind": "Deployment", "subresource": "status"},
		{"kind": "LimitRange", "subresource": "scale"},
	] {
		other := admission.decision with input as cpu_change(request(overrides), valid_approval)
			with lib.config as lib_test.fixture
		not other.allowed
		contains(other.reasons[0], "sizeguard decides only workloads")
	}
}
