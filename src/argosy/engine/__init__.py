"""The engine: durable run/task/attempt state machine, scheduling, retries, recovery."""
