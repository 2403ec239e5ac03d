"""Every error Argosy raises on purpose, in one hierarchy.

Each message says what happened, where (step, node path, file:line) and what to do next,
so the CLI can print it as one line and exit with a meaningful code::

    ArgosyError                      base; ``exit_code`` says how the CLI exits
    ├── UsageError                   bad command-line input (exit 2)
    │   ├── NotFoundError            a run/task/artifact reference that matches nothing
    │   ├── QuotaExceededError       storing this would pass one of the tenant's quotas
    │   └── ConflictError            the request contradicts what exists (a version name taken)
    │       └── VersionConflictError a version name already names different content
    ├── PipelineDefinitionError      a pipeline that cannot run as written (exit 2)
    │   └── ValidationError          one failed named check, with its location
    ├── SerializationError           a value that cannot be stored or loaded by its type
    ├── StoreError                   metadata or artifact storage failed
    │   └── IntegrityError           stored bytes do not match their recorded sha256
    ├── ExecutionError               the engine or an executor could not do its job
    │   ├── RunBusyError             another live engine process owns the run
    │   └── NoRoomError              the executor has no room for an attempt right now
    └── ServerError                  cannot reach or authenticate to a server (exit 3)
"""

from __future__ import annotations


class ArgosyError(Exception):
    """Base class: a one-line, user-facing message and the CLI exit code it maps to."""

    exit_code = 1

    def __init__(
        self, message: str, *, code: str | None = None, extra: dict[str, object] | None = None
    ) -> None:
        """``code``: a stable machine-readable name for API clients (e.g. ``run_finished``);
        ``extra``: structured details an API answer carries beside the message."""
        super().__init__(message)
        self.message = message
        self.code = code
        self.extra = extra or {}

    def __str__(self) -> str:
        return self.message


class UsageError(ArgosyError):
    """The command line asks for something that cannot be done as written."""

    exit_code = 2


class NotFoundError(UsageError):
    """A reference (id, id prefix or RUN/NODE/OUTPUT path) matches nothing, or several things."""


class QuotaExceededError(UsageError):
    """Storing what was asked would pass one of the tenant's quotas (named in the message)."""


class ConflictError(UsageError):
    """The request contradicts stored state; retrying it unchanged fails again."""


class VersionConflictError(ConflictError):
    """A version name (tag) already names a different spec; versions are immutable."""


class PipelineDefinitionError(ArgosyError):
    """The pipeline or step definition is wrong; nothing was run."""

    exit_code = 2


class ValidationError(PipelineDefinitionError):
    """One named validation check failed.

    ``check`` is the rule's name (``check_no_cycles`` ...); ``where`` is the node path or step
    name, ``location`` the ``file:line`` of the offending code, and the message ends with the fix.
    """

    def __init__(
        self, check: str, message: str, *, where: str | None = None, location: str | None = None
    ) -> None:
        prefix = ""
        if where:
            prefix += f"{where}: "
        text = f"{prefix}{message}"
        if location:
            text += f" [{location}]"
        super().__init__(text)
        self.check = check
        self.where = where
        self.location = location


class SerializationError(ArgosyError):
    """A value cannot be written or read in the format its type annotation asks for."""


class StoreError(ArgosyError):
    """The metadata database or the artifact store failed."""


class IntegrityError(StoreError):
    """Stored bytes do not hash to the sha256 they were recorded with: the store is corrupted."""


class ExecutionError(ArgosyError):
    """The engine or an executor could not start, watch or finish a task."""


class RunBusyError(ExecutionError):
    """Another live engine process is executing this run."""


class NoRoomError(ExecutionError):
    """The executor's capacity is taken (by another run of the same process): try later."""


class ServerError(ArgosyError):
    """A server cannot be reached or refused our credentials."""

    exit_code = 3
