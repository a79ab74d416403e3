"""sizeguard's validating admission webhook: the cluster itself enforces approvals."""
