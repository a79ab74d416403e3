package sizeguard.changeset_test

# The footprint fields that say how long a replaced pod may run (terminationGracePeriodSeconds)
# and which devices a pod gets (DRA resource claims): allowed, with a warning. Fixtures are in
# changeset_test.rego and changeset_footprint_test.rego.

import data.sizeguard.changeset
import data.sizeguard.lib
import data.sizeguard.lib_test

# --- termination grace period and DRA resource claims ---------------------------------------

test_a_longer_grace_period_warns_that_replaced_pods_keep_running if {
	before := deployment_with({"termination_grace_period_seconds": 30})
	after := object.union(before, {"termination_grace_period_seconds": 31536000})
	d := changeset.decision with input as one("Deployment", "shop", before, after)
		with lib.config as lib_test.fixture
	d.allowed
	d.risk == "medium"
	d.warnings == [{
		"code": "rollout_changed",
		"target": "Deployment/shop/web",
		"message": concat("", [
			"terminationGracePeriodSeconds of shop/web: 30s → 31536000s; a replaced (or deleted) pod may ",
			"keep running, and holding its requests, for up to 31536000s beside its replacement",
		]),
	}]
	unset := changeset.decision with input as one("Deployment", "shop", after, deployment(3, 100))
		with lib.config as lib_test.fixture
	footprint_messages(unset) == {concat("", [
		"terminationGracePeriodSeconds of shop/web: 31536000s → unset; ",
		"Kubernetes applies its default grace period, 30s",
	])}
}

test_a_resource_claim_warns_that_the_pods_get_devices if {
	after := deployment_with({
		"resource_claims": {"gpu": "template:four-gpus"},
		"containers": {"web": {"claims": ["gpu"]}},
	})
	d := changeset.decision with input as one("Deployment", "shop", deployment(3, 100), after)
		with lib.config as lib_test.fixture
	d.allowed
	d.risk == "medium"
	{w.code | some w in d.warnings} == {"resource_claims_changed"}
	messages(d.warnings) == {
		concat("", [
			"resource claim gpu of shop/web: unset → ResourceClaimTemplate four-gpus; every new pod gets devices ",
			"(such as GPUs) from ResourceClaimTemplate four-gpus, on top of its requests; sizeguard does not count them",
		]),
		concat("", [
			"resource claims of container web in shop/web: none → gpu; the container gets devices (such as GPUs) ",
			"from the pod's claim(s) gpu; sizeguard does not count them",
		]),
	}
	removed := changeset.decision with input as one("Deployment", "shop", after, deployment(3, 100))
		with lib.config as lib_test.fixture
	footprint_messages(removed) == {
		concat("", [
			"resource claim gpu of shop/web: ResourceClaimTemplate four-gpus → unset; ",
			"new pods no longer get devices from this claim",
		]),
		concat("", [
			"resource claims of container web in shop/web: gpu → none; ",
			"the container no longer gets devices from the pod's resource claims",
		]),
	}
}
