"""The Kubernetes executor: attempts as Jobs in tenant namespaces (see README.md here)."""
