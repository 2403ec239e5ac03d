"""Executors run attempts: local processes now, Kubernetes pods later (same interface)."""
