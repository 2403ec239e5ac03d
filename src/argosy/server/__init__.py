"""The Argosy server: REST API, run execution on server instances, the scheduler lease, schedules."""
