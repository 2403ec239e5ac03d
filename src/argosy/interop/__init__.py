"""Interoperability: Kubeflow Pipelines IR and Argo Workflows exports."""
