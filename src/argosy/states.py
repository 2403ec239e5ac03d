"""Run, task and attempt states, written to the metadata DB at every transition."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    PENDING = "pending"  # created, no engine has started it yet
    RUNNING = "running"  # an engine is driving its tasks
    SUCCEEDED = "succeeded"  # every task succeeded or was cached
    FAILED = "failed"  # a task failed (its downstream was skipped)
    CANCELLED = "cancelled"  # cancelled by a user, or a fail-fast stop


class TaskState(StrEnum):
    PENDING = "pending"  # waiting for upstream tasks
    QUEUED = "queued"  # inputs ready; waiting for capacity (or a retry's backoff)
    RUNNING = "running"  # an attempt is live
    SUCCEEDED = "succeeded"  # an attempt succeeded; outputs are registered
    FAILED = "failed"  # the last attempt failed and no retry is left
    SKIPPED = "skipped"  # not run: an upstream task did not succeed
    CANCELLED = "cancelled"  # the run was cancelled before the task finished
    CACHED = "cached"  # outputs reused from an earlier identical task; no process ran


class AttemptState(StrEnum):
    RUNNING = "running"  # its process was started (or is about to be)
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


RUN_DONE = {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}
TASK_DONE = {
    TaskState.SUCCEEDED, TaskState.FAILED, TaskState.SKIPPED, TaskState.CANCELLED, TaskState.CACHED
}  # fmt: skip
TASK_OK = {TaskState.SUCCEEDED, TaskState.CACHED}


class Reason(StrEnum):
    """Why an attempt failed (or a task was skipped/cancelled)."""

    EXCEPTION = "exception"  # the step raised
    EXIT_CODE = "exit_code"  # the process exited non-zero without a result record
    SIGNAL = "signal"  # killed by a signal it did not get from us (e.g. SIGSEGV, OOM)
    TIMEOUT = "timeout"  # ran past the step's timeout
    MEMORY_LIMIT = "memory_limit"  # used more memory than requested x margin
    CANCELLED = "cancelled"  # the run was cancelled
    ENGINE_LOST = "engine_lost"  # the engine died; the attempt was adopted or ended
    OUTPUT_ERROR = "output_error"  # an output did not match its type or could not be stored
    INPUT_ERROR = "input_error"  # an input could not be loaded
    CONTAINER_ERROR = "container_error"  # no container engine could run a container step
    IMAGE_PULL = "image_pull"  # (pod) its image could not be pulled
    UNSCHEDULABLE = "unschedulable"  # (pod) no node could take it within the configured time
    EVICTED = "evicted"  # (pod) evicted or preempted from its node
    NODE_LOST = "node_lost"  # (pod) its node went away while it ran
    UPSTREAM_FAILED = "upstream_failed"  # (task) skipped because an upstream task failed
    UPSTREAM_SKIPPED = "upstream_skipped"  # (task) skipped: an output it needs was not produced
    CONDITION_FALSE = "condition_false"  # (task) skipped: its If/Elif/Else condition was false
