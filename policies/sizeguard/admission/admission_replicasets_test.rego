package sizeguard.admission_test

# ReplicaSets: a Deployment's (left to its controllers) and standalone ones (a workload's
# lifecycle). Fixtures are in admission_test.rego.

import data.sizeguard.admission
import data.sizeguard.lib
import data.sizeguard.lib_test

deployment_controller := "system:serviceaccount:kube-system:deployment-controller"

garbage_collector := "system:serviceaccount:kube-system:generic-garbage-collector"

# The controller ownerReference the deployment controller sets on its ReplicaSets.
owned_by_web := {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "0d1e"}

# A ReplicaSet's footprint: 2 replicas and its pod template, at 100m or 2 CPUs.
small := state(2, 100)

big := state(2, 2000)

# An admission input for a ReplicaSet shop-prod/web-5d8f9c7b6d, sent by mallory unless the
# request overrides say otherwise: the states and the ownership context the webhook sends.
rs_input(overrides, before, after, ownership) := object.union(
	admission_input(
		request(object.union({"kind": "ReplicaSet", "name": "web-5d8f9c7b6d", "user": "mallory"}, overrides)),
		before, after, no_approval,
	),
	{"context": object.union(
		{"owner_before": null, "owner_after": null, "labels_changed": false, "recently_created": false},
		ownership,
	)},
)

# Owned by Deployment web before and after the request.
owned := {"owner_before": owned_by_web, "owner_after": owned_by_web}

# Owned by Deployment web before the request, by nothing after it.
orphaned := {"owner_before": owned_by_web}

# Handed to Deployment web by the request (or created for it).
handed := {"owner_after": owned_by_web}

# The input of an UPDATE, CREATE or DELETE of the ReplicaSet.
update_of(overrides, before, after, ownership) := rs_input(overrides, before, after, ownership)

create_of(overrides, after, ownership) := rs_input(
	object.union({"operation": "CREATE"}, overrides),
	null, after, ownership,
)

delete_of(overrides, before, ownership) := rs_input(
	object.union({"operation": "DELETE"}, overrides),
	before, null, ownership,
)

# --- a Deployment's ReplicaSet ------------------------------------------------------------

test_changing_the_template_of_a_deployments_replicaset_is_denied_in_every_namespace if {
	in_dev := admission.decision with input as update_of({"namespace": "shop"}, small, big, owned)
		with lib.config as lib_test.fixture
	in_dev == {
		"allowed": false,
		"reasons": [concat("", [
			"sizeguard: changing the pod template (CPU request) of ReplicaSet shop/web-5d8f9c7b6d by mallory ",
			"is denied: it belongs to Deployment shop/web, and only its controllers ",
			"(config.admission.replica_set_controllers), lifecycle exempt principals and break-glass may ",
			"create it, scale it, orphan its pods or change its pod template, labels or owner, since the pods ",
			"it runs would no longer be ",
			"the ones the Deployment says; change the Deployment instead, through the sizeguard MCP server ",
			"(its controller then rolls out a ReplicaSet of its own)",
		])],
		"warnings": [],
	}
	in_production := admission.decision with input as update_of({}, small, big, owned)
		with lib.config as lib_test.fixture
	not in_production.allowed
}

test_orphaning_or_relabelling_a_deployments_replicaset_is_denied if {
	relabelled := object.union(orphaned, {"labels_changed": true})
	orphaned_relabelled := admission.decision with input as update_of({"namespace": "shop"}, small, small, relabelled)
		with lib.config as lib_test.fixture
	startswith(
		orphaned_relabelled.reasons[0],
		concat("", [
			"sizeguard: changing the labels and the controller owner of ReplicaSet shop/web-5d8f9c7b6d ",
			"by mallory is denied",
		]),
	)
	still_owned := object.union(owned, {"labels_changed": true})
	relabelled_only := admission.decision with input as update_of({}, small, small, still_owned)
		with lib.config as lib_test.fixture
	startswith(
		relabelled_only.reasons[0],
		"sizeguard: changing the labels of ReplicaSet shop-prod/web-5d8f9c7b6d by mallory is denied",
	)
	all_three := admission.decision with input as update_of({}, small, big, relabelled)
		with lib.config as lib_test.fixture
	contains(
		all_three.reasons[0],
		"changing the pod template (CPU request), the labels and the controller owner of",
	)
	moved := object.union(owned_by_web, {"name": "api", "uid": "9a9a"})
	retarget := {"owner_before": owned_by_web, "owner_after": moved}
	retargeted := admission.decision with input as update_of({}, small, small, retarget)
		with lib.config as lib_test.fixture
	not retargeted.allowed
}

test_the_replicaset_controllers_may_change_a_deployments_replicaset if {
	released := object.union(orphaned, {"labels_changed": true})
	d := admission.decision with input as update_of({"user": deployment_controller}, small, small, released)
		with lib.config as lib_test.fixture
	d == {
		"allowed": true,
		"reasons": [concat("", [
			"sizeguard: changing the labels and the controller owner of ReplicaSet shop-prod/web-5d8f9c7b6d by ",
			deployment_controller, " admitted (config.admission.replica_set_controllers)",
		])],
		"warnings": [],
	}
	orphaned_by_gc := admission.decision with input as update_of({"user": garbage_collector}, small, small, orphaned)
		with lib.config as lib_test.fixture
	orphaned_by_gc.allowed
	by_controller := {"namespace": "shop", "user": deployment_controller}
	created := admission.decision with input as create_of(by_controller, small, handed)
		with lib.config as lib_test.fixture
	created.reasons == [concat("", [
		"sizeguard: creating ReplicaSet shop/web-5d8f9c7b6d by ", deployment_controller,
		" admitted (config.admission.replica_set_controllers)",
	])]
}

test_exempt_principals_and_break_glass_may_change_a_deployments_replicaset if {
	by_exempt := admission.decision with input as update_of({"user": namespace_controller}, small, big, owned)
		with lib.config as lib_test.fixture
	by_exempt.reasons == [sprintf(
		"sizeguard: changing ReplicaSet shop-prod/web-5d8f9c7b6d by exempt principal %s admitted",
		[namespace_controller],
	)]
	by_group := admission.decision with input as rs_input({"groups": ["deployers"]}, small, big, owned)
		with lib.config as with_lifecycle({"exempt_groups": ["deployers"]})
	by_group.allowed
	break_glass_group := {"groups": ["sizeguard:break-glass"]}
	break_glass := admission.decision with input as update_of(break_glass_group, small, big, owned)
		with lib.config as lib_test.fixture
	break_glass.allowed
	startswith(
		break_glass.reasons[0],
		"sizeguard: break-glass: mallory (group sizeguard:break-glass) changed CPU request on",
	)
}

test_deleting_a_deployments_replicaset_is_allowed if {
	d := admission.decision with input as delete_of({}, small, orphaned)
		with lib.config as lib_test.fixture
	d == {
		"allowed": true,
		"reasons": [concat("", [
			"sizeguard: deleting ReplicaSet shop-prod/web-5d8f9c7b6d by mallory admitted: ",
			"Deployment shop-prod/web makes its ReplicaSets again from its own template",
		])],
		"warnings": [],
	}
}

test_creating_or_handing_a_replicaset_to_a_deployment_is_left_to_its_controllers if {
	created := admission.decision with input as create_of({"namespace": "shop"}, big, handed)
		with lib.config as lib_test.fixture
	startswith(
		created.reasons[0],
		"sizeguard: creating ReplicaSet shop/web-5d8f9c7b6d by mallory is denied: it belongs to Deployment shop/web",
	)
	handed_over := admission.decision with input as update_of({"namespace": "shop"}, big, big, handed)
		with lib.config as lib_test.fixture
	startswith(
		handed_over.reasons[0],
		"sizeguard: changing the controller owner of ReplicaSet shop/web-5d8f9c7b6d by mallory is denied",
	)
	by_controller := {"namespace": "shop", "user": deployment_controller}
	adopted := admission.decision with input as update_of(by_controller, small, small, handed)
		with lib.config as lib_test.fixture
	adopted.allowed
}

test_a_replicaset_left_unchanged_needs_nobody if {
	d := admission.decision with input as update_of({}, small, small, owned)
		with lib.config as lib_test.fixture
	d == {"allowed": true, "reasons": [], "warnings": []}
}

# --- standalone ReplicaSets -----------------------------------------------------------------

test_creating_a_standalone_replicaset_in_production_is_denied if {
	d := admission.decision with input as create_of({}, big, {})
		with lib.config as lib_test.fixture
	d == {
		"allowed": false,
		"reasons": [concat("", [
			"sizeguard: creating ReplicaSet shop-prod/web-5d8f9c7b6d by mallory is denied: in namespace shop-prod ",
			"(config.admission.lifecycle.workloads: production) only exempt principals may create, delete, ",
			"scale or change the pod template of a standalone ReplicaSet (sizeguard approves none of these, since its pods ",
			"can have any size); a deploying pipeline needs its user in config.admission.lifecycle.exempt_users ",
			"or one of its groups in exempt_groups (policies/data.json); to run pods of a size sizeguard ",
			"approves, use a Deployment and change it through the sizeguard MCP server",
		])],
		"warnings": [],
	}
	labelled := object.union(
		create_of({"namespace": "payments"}, big, {}),
		{"context": {"namespace_labels": {"environment": "production"}}},
	)
	by_label := admission.decision with input as labelled with lib.config as lib_test.fixture
	not by_label.allowed

	# Owned by something other than a Deployment (another controller): standalone for sizeguard.
	other := {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "web", "uid": "7e7e"}
	rollout := admission.decision with input as create_of({}, big, {"owner_after": other})
		with lib.config as lib_test.fixture
	startswith(
		rollout.reasons[0],
		"sizeguard: creating ReplicaSet shop-prod/web-5d8f9c7b6d by mallory is denied: in namespace",
	)
}

test_creating_a_standalone_replicaset_in_production_by_its_controllers_and_exempt_principals if {
	by_controller := admission.decision with input as create_of({"user": deployment_controller}, small, {})
		with lib.config as lib_test.fixture
	by_controller.allowed
	by_exempt := admission.decision with input as create_of({"user": namespace_controller}, small, {})
		with lib.config as lib_test.fixture
	by_exempt.reasons == [sprintf(
		"sizeguard: creating ReplicaSet shop-prod/web-5d8f9c7b6d by exempt principal %s admitted",
		[namespace_controller],
	)]
	policy_input := rs_input({"operation": "CREATE", "user": deployment_controller}, null, small, {})
	without_list := admission.decision with input as policy_input
		with lib.config as json.remove(lib_test.fixture, ["admission/replica_set_controllers"])
	not without_list.allowed
}

test_deleting_or_resizing_a_standalone_replicaset_in_production_is_denied if {
	deleted := admission.decision with input as delete_of({}, small, {})
		with lib.config as lib_test.fixture
	startswith(
		deleted.reasons[0],
		"sizeguard: deleting ReplicaSet shop-prod/web-5d8f9c7b6d by mallory is denied: in namespace shop-prod",
	)
	deleted_by_controller := admission.decision with input as delete_of({"user": deployment_controller}, small, {})
		with lib.config as lib_test.fixture
	not deleted_by_controller.allowed
	resized := admission.decision with input as update_of({}, small, big, {"labels_changed": true})
		with lib.config as lib_test.fixture
	startswith(
		resized.reasons[0],
		concat("", [
			"sizeguard: changing the pod template (CPU request) and the labels of ReplicaSet ",
			"shop-prod/web-5d8f9c7b6d by mallory is denied",
		]),
	)
	resized_by_exempt := admission.decision with input as update_of({"user": namespace_controller}, small, big, {})
		with lib.config as lib_test.fixture
	resized_by_exempt.allowed
}

test_a_standalone_replicaset_outside_production_is_not_guarded if {
	created := admission.decision with input as create_of({"namespace": "shop"}, big, {})
		with lib.config as lib_test.fixture
	created.reasons == [concat("", [
		"sizeguard: creating ReplicaSet shop/web-5d8f9c7b6d admitted: ",
		"namespace shop is outside config.admission.lifecycle.workloads (production)",
	])]
	resized := admission.decision with input as update_of({"namespace": "shop"}, small, big, {})
		with lib.config as lib_test.fixture
	resized.allowed
}

test_the_labels_and_owner_of_a_standalone_replicaset_are_its_own if {
	other := {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": "5c5c"}
	handed_elsewhere := {"labels_changed": true, "owner_after": other}
	d := admission.decision with input as update_of({}, small, small, handed_elsewhere)
		with lib.config as lib_test.fixture
	d == {
		"allowed": true,
		"reasons": [concat("", [
			"sizeguard: changing the labels and the controller owner of ReplicaSet shop-prod/web-5d8f9c7b6d by mallory ",
			"admitted: its replicas and pod template are unchanged and no Deployment owns it",
		])],
		"warnings": [],
	}
}

# --- input shape ----------------------------------------------------------------------------

test_a_replicaset_input_without_its_ownership_context_is_malformed if {
	every bad in [
		object.remove(rs_input({}, small, big, owned), ["context"]),
		rs_input({}, small, big, {"labels_changed": "yes"}),
		rs_input({}, small, big, {"owner_before": {"kind": "Deployment", "name": "web"}}),
		json.remove(rs_input({}, small, big, owned), ["context/owner_after"]),
	] {
		d := admission.decision with input as bad with lib.config as lib_test.fixture
		not d.allowed
		startswith(d.reasons[0], "sizeguard: the admission input is malformed")
		contains(d.reasons[0], "for a ReplicaSet also context.owner_before, owner_after and labels_changed")
	}
}

test_a_replicaset_subresource_is_unknown if {
	policy_input := update_of({"subresource": "status"}, {"replicas": 1}, {"replicas": 5}, owned)
	d := admission.decision with input as policy_input with lib.config as lib_test.fixture
	not d.allowed
	contains(d.reasons[0], "sizeguard decides only workloads, their scale subresource, ReplicaSets")
}

test_scaling_a_standalone_replicaset_in_production_is_denied if {
	scaled := admission.decision with input as update_of({}, small, state(8, 100), {})
		with lib.config as lib_test.fixture
	startswith(
		scaled.reasons[0],
		concat("", [
			"sizeguard: changing the replicas of ReplicaSet shop-prod/web-5d8f9c7b6d by mallory is denied: ",
			"in namespace shop-prod",
		]),
	)
	not scaled.allowed
	both := admission.decision with input as update_of({}, small, state(8, 2000), {})
		with lib.config as lib_test.fixture
	contains(both.reasons[0], "changing the replicas and the pod template (CPU request) of ReplicaSet")
	outside := admission.decision with input as update_of({"namespace": "shop"}, small, state(8, 100), {})
		with lib.config as lib_test.fixture
	outside.allowed
}

test_a_deployments_replicaset_is_scaled_by_its_controller_only if {
	controller_request := {"user": deployment_controller, "namespace": "shop"}
	by_controller := admission.decision with input as update_of(controller_request, small, state(3, 100), owned)
		with lib.config as lib_test.fixture
	by_controller.allowed
	by_mallory := admission.decision with input as update_of({"namespace": "shop"}, small, state(3, 100), owned)
		with lib.config as lib_test.fixture
	not by_mallory.allowed
	contains(by_mallory.reasons[0], "changing the replicas of ReplicaSet shop/web-5d8f9c7b6d by mallory is denied")
}

test_an_orphaning_delete_of_a_deployments_replicaset_is_for_its_controllers if {
	orphaning := admission.decision with input as delete_of({"namespace": "shop", "orphan": true}, small, owned)
		with lib.config as lib_test.fixture
	not orphaning.allowed
	startswith(
		orphaning.reasons[0],
		"sizeguard: deleting ReplicaSet shop/web-5d8f9c7b6d and orphaning its pods by mallory is denied",
	)
	unsaid := json.remove(delete_of({"namespace": "shop"}, small, owned), ["request/orphan"])
	unknown := admission.decision with input as unsaid
		with lib.config as lib_test.fixture
	not unknown.allowed # an input that does not say is read as orphaning
	plain := admission.decision with input as delete_of({"namespace": "shop", "orphan": false}, small, owned)
		with lib.config as lib_test.fixture
	plain.allowed
	by_controller := admission.decision with input as delete_of(
		{"namespace": "shop", "orphan": true, "user": deployment_controller},
		small, owned,
	)
		with lib.config as lib_test.fixture
	by_controller.allowed
}

test_the_scale_subresource_of_a_replicaset_is_the_scale_rule if {
	hpa_controller := "system:serviceaccount:kube-system:horizontal-pod-autoscaler"
	scale_input := rs_input({"subresource": "scale", "user": hpa_controller}, state(2, null), state(5, null), {})
	by_hpa := admission.decision with input as scale_input
		with lib.config as lib_test.fixture
	by_hpa.allowed
	by_mallory := admission.decision with input as rs_input({"subresource": "scale"}, state(2, null), state(5, null), {})
		with lib.config as lib_test.fixture
	not by_mallory.allowed
	startswith(by_mallory.reasons[0], "sizeguard: scale requests on shop-prod/web-5d8f9c7b6d are denied for mallory")
}
