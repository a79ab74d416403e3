package sizeguard.changeset_test

# The peak pod count of a Deployment's rollout (replicas plus maxSurge) is held to the replica
# bounds and the size thresholds. Fixtures are in changeset_test.rego.

import data.sizeguard.changeset
import data.sizeguard.lib
import data.sizeguard.lib_test

# --- the peak pod count of a rollout ----------------------------------------------------------

surged(replicas, surge) := object.union(deployment(replicas, 100), {
	"strategy": "RollingUpdate",
	"max_surge": surge,
	"max_unavailable": 0,
})

test_a_surge_beyond_the_thresholds_is_denied if {
	changes := [change("Deployment", "shop", "web", surged(3, "25%"), surged(3, "100000%"))]
	d := changeset.decision with input as changes_input(changes) with lib.config as lib_test.fixture
	codes(d.violations) == {"rollout_peak_out_of_bounds", "rollout_peak_too_large"}
	some v in d.violations
	v.code == "rollout_peak_too_large"
	v.message == "the most pods a rollout of shop/web may run at once rises 74975% (4 → 3003 pods); the limit is 500%"
}

test_a_surge_within_the_thresholds_is_allowed_with_a_warning if {
	changes := [change("Deployment", "shop", "web", surged(4, "25%"), surged(4, "100%"))]
	d := changeset.decision with input as changes_input(changes) with lib.config as lib_test.fixture
	count(d.violations) == 0
	"rollout_changed" in codes(d.warnings)
}

test_the_peak_is_held_to_the_replica_bounds if {
	changes := [change("Deployment", "shop", "web", surged(150, 10), surged(150, 60))]
	d := changeset.decision with input as changes_input(changes) with lib.config as lib_test.fixture
	some v in d.violations
	v.code == "rollout_peak_out_of_bounds"
	v.message == concat("", [
		"a rollout of shop/web may run up to 210 pods at once (replicas plus maxSurge); ",
		"the allowed range is 0 to 200, so lower maxSurge or the replicas",
	])
}

test_recreate_and_rollbacks_and_lowered_peaks_are_not_peak_violations if {
	recreate := object.union(deployment(3, 100), {"strategy": "Recreate"})
	to_recreate := [change("Deployment", "shop", "web", surged(3, "25%"), recreate)]
	d1 := changeset.decision with input as changes_input(to_recreate) with lib.config as lib_test.fixture
	count(d1.violations) == 0
	from_recreate := [change("Deployment", "shop", "web", recreate, surged(3, 40))]
	d2 := changeset.decision with input as changes_input(from_recreate) with lib.config as lib_test.fixture
	codes(d2.violations) == {"rollout_peak_too_large"}
	rollback := [object.union(change("Deployment", "shop", "web", surged(3, 0), surged(3, 60)), {"op": "rollback"})]
	d3 := changeset.decision with input as changes_input(rollback) with lib.config as lib_test.fixture
	count(d3.violations) == 0
	daemonset := [change("DaemonSet", "shop", "agent", surged(null, 0), surged(null, 60))]
	d4 := changeset.decision with input as changes_input(daemonset) with lib.config as lib_test.fixture
	count(d4.violations) == 0
}
