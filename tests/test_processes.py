"""Process-tree facts from /proc, which the executor samples every 0.1 s for each running
attempt: a tree is found whole, with and without the kernel's children files, and a process
that is gone costs no scan of every process on the machine."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from argosy.runtime import processes

SLEEP = "import time; time.sleep(60)"
PARENT = (
    f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {SLEEP!r}]); {SLEEP}"
)
TOP = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {PARENT!r}]); {SLEEP}"


@pytest.fixture
def tree():
    """A process with a child and a grandchild (a shell would exec its last command)."""
    top = subprocess.Popen([sys.executable, "-c", TOP])
    try:
        deadline = time.monotonic() + 30
        while len(processes.descendants(top.pid)) < 2:
            assert time.monotonic() < deadline, "the tree did not start"
            time.sleep(0.02)
        yield top
    finally:
        processes.kill_tree(top.pid)
        top.wait()


@pytest.mark.parametrize("children_files", [True, False])
def test_descendants_finds_the_whole_tree(tree, monkeypatch, children_files):
    monkeypatch.setattr(processes, "_CHILDREN_FILES", children_files)
    found = processes.descendants(tree.pid)
    assert len(found) == 2
    child, grandchild = found
    assert processes.children(tree.pid) == [child]
    assert processes.children(child) == [grandchild]
    assert processes.children(grandchild) == []


def test_a_process_that_is_gone_has_no_children_and_costs_no_scan(monkeypatch):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()

    def scan() -> list[int]:
        raise AssertionError("scanned every process for one that is gone")

    monkeypatch.setattr(processes, "_all_pids", scan)
    for children_files in (True, False):
        monkeypatch.setattr(processes, "_CHILDREN_FILES", children_files)
        assert processes.children(gone.pid) == []
        assert processes.descendants(gone.pid) == []
