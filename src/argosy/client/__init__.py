"""A typed Python client of the Argosy server's REST API (used by the CLI, usable from notebooks)."""
