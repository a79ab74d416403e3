package sizeguard.lib_test

# The configuration the rule tests run with (`with lib.config as fixture`): a copy of
# policies/data.json taken when the tests were written, so that changing a threshold or a
# pattern in data.json does not break the tests of the rules' logic. The tests at the end
# of this file check the shipped data.json itself.

import data.sizeguard.lib

fixture := {
	"thresholds": {
		"deny_increase_percent": 500,
		"deny_decrease_percent": 90,
		"warn_increase_percent": 100,
		"warn_decrease_percent": 50,
	},
	"replicas": {
		"min": 0,
		"max": 200,
	},
	"availability": {
		"min_replicas": {"default": 1, "production": 2, "fixed": 1},
		"fixed_kinds": ["StatefulSet"],
		"max_pod_cpu": null,
	},
	"max_targets": 50,
	"capacity": {"headroom_percent": 10},
	"risk": {"weights": {
		"warn_size": 1,
		"deny_size": 2,
		"production": 1,
		"critical_workload": 2,
	}},
	"production": {
		"namespace_patterns": [
			"^prod$",
			"^prod-",
			"-prod$",
			"^production",
			"-production$",
		],
		"namespace_labels": {
			"environment": [
				"production",
				"prod",
			],
			"env": [
				"production",
				"prod",
			],
			"sizeguard.io/production": ["true"],
		},
		"keep_limits": ["memory_limit"],
	},
	"critical": {
		"name_patterns": [
			"(^|-)postgres(ql)?(-|$)",
			"(^|-)pg(-|$)",
			"(^|-)mysql(-|$)",
			"(^|-)mariadb(-|$)",
			"(^|-)mongo(db)?(-|$)",
			"(^|-)redis(-|$)",
			"(^|-)valkey(-|$)",
			"(^|-)memcached(-|$)",
			"(^|-)kafka(-|$)",
			"(^|-)rabbitmq(-|$)",
			"(^|-)nats(-|$)",
			"(^|-)zookeeper(-|$)",
			"(^|-)etcd(-|$)",
			"(^|-)elasticsearch(-|$)",
			"(^|-)opensearch(-|$)",
			"(^|-)cassandra(-|$)",
			"(^|-)db(-|$)",
			"-controller$",
			"-operator$",
		],
		"name_label_keys": [
			"app.kubernetes.io/name",
			"app.kubernetes.io/component",
			"app",
		],
		"labels": {"sizeguard.io/critical": ["true"]},
	},
	"approval": {
		"other": [],
		"production": ["typed_confirmation", "authenticated_approver"],
		"critical": ["typed_confirmation", "authenticated_approver"],
		"critical_production": ["typed_confirmation", "authenticated_approver", "two_approvers"],
	},
	"namespaces": {"kube-system": {"frozen": true}},
	"admission": {
		"guarded_operations": ["CREATE", "UPDATE", "DELETE"],
		"scale_exempt_users": ["system:serviceaccount:kube-system:horizontal-pod-autoscaler"],
		"scale_exempt_groups": [],
		"resize_exempt_users": [],
		"resize_exempt_groups": [],
		"lifecycle": {
			"workloads": "production",
			"hpas": "all",
			"limit_ranges": "production",
			"exempt_users": ["system:serviceaccount:kube-system:namespace-controller"],
			"exempt_groups": [],
		},
		"replica_set_controllers": [
			"system:serviceaccount:kube-system:deployment-controller",
			"system:serviceaccount:kube-system:generic-garbage-collector",
		],
		"break_glass_groups": ["sizeguard:break-glass"],
	},
}

test_shipped_thresholds_are_consistent if {
	thresholds := lib.config.thresholds
	thresholds.warn_increase_percent < thresholds.deny_increase_percent
	thresholds.warn_decrease_percent < thresholds.deny_decrease_percent
	thresholds.deny_decrease_percent <= 100
	every key in ["deny_increase_percent", "deny_decrease_percent", "warn_increase_percent", "warn_decrease_percent"] {
		is_number(thresholds[key])
		thresholds[key] > 0
	}
}

test_shipped_bounds_are_consistent if {
	lib.config.replicas.min >= 0
	lib.config.replicas.min <= lib.config.replicas.max
	lib.config.max_targets >= 1
	lib.config.capacity.headroom_percent >= 0
	lib.config.capacity.headroom_percent < 100
	every name in ["warn_size", "deny_size", "production", "critical_workload"] {
		is_number(lib.config.risk.weights[name])
	}
}

test_shipped_patterns_are_valid_regular_expressions if {
	every pattern in array.concat(lib.config.production.namespace_patterns, lib.config.critical.name_patterns) {
		regex.is_valid(pattern)
	}
}

test_shipped_namespace_overrides_use_known_settings if {
	every namespace, override in lib.config.namespaces {
		is_string(namespace)
		every key, _ in override {
			key in {"frozen", "thresholds", "replicas"}
		}
	}
}

test_shipped_admission_settings if {
	every key in [
		"guarded_operations", "scale_exempt_users", "scale_exempt_groups",
		"resize_exempt_users", "resize_exempt_groups", "break_glass_groups",
		"replica_set_controllers",
	] {
		is_array(lib.config.admission[key])
	}
	every operation in lib.config.admission.guarded_operations {
		operation in {"CREATE", "UPDATE", "DELETE"}
	}
	every limit in lib.config.production.keep_limits {
		endswith(limit, "_limit")
	}
}

test_shipped_lifecycle_settings if {
	lifecycle := lib.config.admission.lifecycle
	is_array(lifecycle.exempt_users)
	is_array(lifecycle.exempt_groups)
	every key in ["workloads", "hpas", "limit_ranges"] {
		lifecycle[key] in {"production", "all", "none"}
	}
}

# What sizeguard promises by default (docs/policies.md): workload and LimitRange lifecycle
# guarded in production, HPA lifecycle everywhere, nobody may resize pods in place.
test_shipped_lifecycle_defaults if {
	lib.config.admission.lifecycle.workloads == "production"
	lib.config.admission.lifecycle.hpas == "all"
	lib.config.admission.lifecycle.limit_ranges == "production"
	lib.config.admission.resize_exempt_users == []
	lib.config.admission.resize_exempt_groups == []
	"DELETE" in lib.config.admission.guarded_operations
	"CREATE" in lib.config.admission.guarded_operations
	"system:serviceaccount:kube-system:deployment-controller" in lib.config.admission.replica_set_controllers
}

# The mission's limits (docs/policies.md). Change these together with data.json, on purpose.
test_shipped_mission_limits if {
	lib.config.thresholds.deny_increase_percent == 500
	lib.config.thresholds.deny_decrease_percent == 90
}

# When you add a setting to data.json, add it to the fixture above too (and the reverse).
test_fixture_has_every_shipped_setting if {
	setting_paths(fixture) == setting_paths(lib.config)
}

# The paths of the settings in a configuration, not counting the entries of maps whose keys
# are data (namespace overrides, label maps) and not going into lists.
setting_paths(config) := {path |
	walk(config, [path, _])
	every segment in path {
		is_string(segment)
	}
	not user_map_entry(path)
}

user_map_entry(path) if {
	path[0] == "namespaces"
	count(path) > 1
}

user_map_entry(path) if {
	path[1] in {"namespace_labels", "labels"}
	count(path) > 2
}

test_setting_paths if {
	setting_paths({"a": {"b": [1]}, "namespaces": {"x": {"frozen": true}}}) == {[], ["a"], ["a", "b"], ["namespaces"]}
	setting_paths({"critical": {"labels": {"k": ["v"]}}}) == {[], ["critical"], ["critical", "labels"]}
}
