"""The executor interface the engine drives: start attempts, watch them, stop them.

An executor knows processes (or pods); the engine knows runs, tasks and attempts. The
engine hands over an :class:`AttemptLaunch` and gets back an :class:`AttemptExit` from
:meth:`Executor.poll` when the attempt's process is gone, for whatever reason.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from argosy.runtime.invocation import Invocation, ResultRecord


@dataclass(frozen=True)
class Capacity:
    """What an executor can run at once, in total."""

    cpu: float
    memory: int
    gpu: int


@dataclass
class Usage:
    """Attempts and the resources they hold, summed: a tenant's running attempts, or the
    attempts an engine has written and is about to start (``Executor.has_room``'s
    ``besides``)."""

    tasks: int = 0
    cpu: float = 0.0
    memory: int = 0
    gpu: int = 0

    def add(self, cpu: float, memory: int | None, gpu: int, sign: int = 1) -> None:
        self.tasks += sign
        self.cpu += sign * cpu
        self.memory += sign * (memory or 0)
        self.gpu += sign * gpu

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.tasks + other.tasks, self.cpu + other.cpu,
                     self.memory + other.memory, self.gpu + other.gpu)  # fmt: skip


@dataclass(frozen=True)
class AttemptLaunch:
    """Everything needed to start one attempt."""

    attempt_id: str
    run_id: str
    node_path: str
    number: int
    invocation: Invocation  # completed by the executor (scratch, data keys), then handed over
    cpu: float
    memory: int | None
    gpu: int
    pool: str | None
    timeout: float | None
    env: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    log_key: str = ""
    pipeline: str = ""  # the pipeline's name (executors label what they start with it)


@dataclass(frozen=True)
class ProcessIdentity:
    """How to find an attempt's process again: host, pid, process group, start time."""

    host: str
    pid: int
    pgid: int
    started: float | None
    gpu_devices: tuple[int, ...] = ()


@dataclass(frozen=True)
class AttemptExit:
    """What became of an attempt's process."""

    attempt_id: str
    exit_code: int | None
    signal: int | None
    reason: str | None  # set when the executor ended it: timeout, memory_limit, cancelled
    wall_time: float | None
    cpu_time: float | None
    peak_memory: int | None
    log_tail: list[str]
    message: str | None = None  # with ``reason``: what happened, in words (the attempt's error)
    # the launcher's failure record when the store refused it (a full disk), sent on a path
    # that needs no disk (the local executor's status pipe); None: read it from the store
    record: ResultRecord | None = None
    # when the executor saw it end, just before its resources went back to the ledger: the
    # attempt's finished_at (settling it later must not make it overlap the next one)
    ended_at: datetime | None = None


class Executor(abc.ABC):
    """Runs attempts within a fixed capacity."""

    @property
    @abc.abstractmethod
    def capacity(self) -> Capacity:
        """The total resources attempts may use at once."""

    @abc.abstractmethod
    def has_room(
        self, cpu: float, memory: int | None, gpu: int, besides: Usage | None = None
    ) -> bool:
        """Whether an attempt asking for this could start now, ``besides`` the attempts the
        caller is about to start (written, not started yet: a turn starts them together)."""

    @abc.abstractmethod
    def start(self, launch: AttemptLaunch) -> ProcessIdentity:
        """Start the attempt's process; returns how to find it again."""

    @abc.abstractmethod
    def poll(self, timeout: float) -> list[AttemptExit]:
        """Wait up to ``timeout`` seconds; return the attempts that ended meanwhile."""

    @abc.abstractmethod
    def stop(self, attempt_id: str, reason: str) -> None:
        """End a running attempt (its whole process tree); it is reported by ``poll``."""

    @abc.abstractmethod
    def end_orphan(self, attempt_id: str, identity: ProcessIdentity | None) -> bool:
        """Kill what is left of an attempt started by a dead engine; True if anything was."""

    @abc.abstractmethod
    def adopt_log(self, attempt_id: str, log_key: str) -> list[str]:
        """Store what an orphaned attempt logged (its engine died); returns the last lines."""

    def adopt(self, attempt_id: str, log_key: str) -> bool:
        """Watch again an attempt started by an engine that is gone, if it still runs where
        this executor can follow it (a pod); True: it is live again and ``poll`` reports it.
        Executors whose attempts die with their engine (local processes) never adopt."""
        return False

    def running(self) -> int:
        """How many attempts are running now."""
        return 0

    def close(self) -> None:
        """Release what it holds for its attempts (warm parents, watches); running attempts
        are not touched. By default nothing."""
        return None

    def prewarm(self) -> None:
        """Start, ahead of the first attempt, what attempts will need (the local executor's
        warm parent) while the run is still being prepared; by default nothing."""
        return None

    def sweep(self, is_live: Callable[[str], bool]) -> list[str]:
        """Remove what attempts that are not live left behind (processes, pods, folders, temp
        files), for the one periodic sweeper (``ops/sweeper.py``); returns what was removed,
        each as ``kind:name`` (a bare name: a Kubernetes object of that attempt)."""
        return []
