"""sizeguard: right-size Kubernetes workloads from an AI assistant, with human-approved,
cluster-enforced changes."""

__version__ = "0.1.0"
