"""A real local control plane for tests and the demo: etcd, kube-apiserver,
kube-controller-manager (plus kube-scheduler and kwok when built), OPA and Prometheus with a
backfilled TSDB, all on 127.0.0.1."""
