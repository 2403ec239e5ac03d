"""The docs' shell examples, run (issue 12): every ```console block in docs/ whose output is
shown is executed, in order, in one workspace per page, and its output compared with what
the page shows — run ids, times, durations, sizes and hashes masked, spacing ignored.

Markers (HTML comments, invisible in the rendered page), on the lines before a block:

- ``<!-- docs-test: file NAME -->`` before a code block: the page's reader creates ``NAME``
  with that content; it is written into the workspace.
- ``<!-- docs-test: skip REASON -->`` before a console block: the only way to leave an
  example out, and the reason is required.
- ``<!-- docs-test: server -->`` before a console block: its commands run against the page's
  live test server (one per page, started when first needed: ``argosy server
  --insecure-dev`` on its own state folder, as ``tests/server_fixture.py`` starts it), with
  ``ARGOSY_SERVER`` set.

and, anywhere, what a reference page's examples need that the page does not show, done in
order before the next example:

- ``<!-- docs-test: file NAME from PAGE -->``: the file another page defines (``file NAME``
  there) is written into the workspace;
- ``<!-- docs-test: setup [ID=]COMMAND -->``: a shell command run in the workspace
  (``$DOCS_REPO`` is the repository), its output not compared; with ``ID=``, the first run id
  it prints is the one the page calls ``ID`` (an id or prefix the page's commands use).

Run ids are matched by order of appearance: the first id the page shows stands for the
first id the command really printed, and later commands that name it (or a prefix of it)
get the real one. ``ARGOSY_DOCS_REGENERATE=1`` writes the real output back into the pages
(then read the diff before committing it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.server_fixture import ServerProcess, start_server

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
MARKER = re.compile(r"^<!--\s*docs-test:\s*(\w+)\s*(.*?)\s*-->\s*$")
BINDING = re.compile(r"^(01[0-9A-HJKMNP-TV-Z]{6,24})=(.+)$")
FROM_PAGE = re.compile(r"^(\S+) from (\S+\.md)$")
ULID = re.compile(r"\b[0-9A-HJKMNP-TV-Z]{26}\b")
PREFIX = re.compile(r"\b01[0-9A-HJKMNP-TV-Z]{6,24}\b")
MASKS = [
    (ULID, "<ID>"),
    (PREFIX, "<ID>"),  # a prefix a table or header shows (runs diff: 12 characters)
    (re.compile(r"\b0[0-9A-HJKMNP-TV-Z]{0,25}…"), "<ID>…"),  # an id cut to fit a column
    (re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(\+00:00|Z)?"), "<TIME>"),
    (re.compile(r"\b\d\d:\d\d:\d\d(\.\d+)?"), "<TIME>"),
    (re.compile(r"sha256:[0-9a-f]{1,64}…?"), "sha256:<HASH>"),
    (re.compile(r"\b(?=[0-9a-f]*[a-f])[0-9a-f]{12,64}\b…?"), "<HASH>"),
    (re.compile(r"\b\d+(\.\d+)?s\b"), "<SECONDS>"),
    (re.compile(r"\b\d+(\.\d+)?(B|Ki|Mi|Gi)\b"), "<SIZE>"),
    (re.compile(r"/tmp/docs-[\w-]+"), "<WORKSPACE>"),
    (re.compile(r"\s+"), " "),
]


@dataclass
class Block:
    """A fenced block of a page — ``console`` (commands and output) or ``file`` (to write) —
    or a ``setup`` marker (a hidden command, or a file copied from ``source``)."""

    doc: str
    line: int  # 1-based line of the opening fence (of the marker, for setup)
    kind: str  # "console", "file" or "setup"
    lines: list[str]
    name: str = ""  # the file name (kind "file", or "setup" copying a file)
    skip: str | None = None  # the reason a console block is left out
    server: bool = False  # run against the page's test server
    source: str = ""  # the page whose file a setup copies

    def commands(self) -> list[tuple[str, list[str]]]:
        """``(command, shown output lines)`` in order."""
        found: list[tuple[str, list[str]]] = []
        for line in self.lines:
            if line.startswith("$ "):
                found.append((line[2:], []))
            elif found and found[-1][0].endswith("\\"):
                found[-1] = (found[-1][0][:-1] + " " + line.strip(), [])
            elif found:
                found[-1][1].append(line)
        return found

    @property
    def shows_output(self) -> bool:
        return any(shown for _, shown in self.commands())


def parse(doc: Path) -> list[Block]:
    """The page's console blocks, marked files and setup markers, in order."""
    lines = doc.read_text().splitlines()
    found: list[Block] = []
    pending: dict[str, str] = {}  # markers for the next fence: skip, file, server
    i = 0
    while i < len(lines):
        marker = MARKER.match(lines[i])
        if marker:
            kind, arg = marker.groups()
            copied = FROM_PAGE.match(arg) if kind == "file" else None
            if kind == "setup":
                assert arg, f"{doc.name}:{i + 1}: a setup marker needs a command"
                found.append(Block(doc.name, i + 1, "setup", [arg]))
            elif copied:
                name, source = copied.groups()
                found.append(Block(doc.name, i + 1, "setup", [], name=name, source=source))
            else:
                assert kind in ("skip", "file", "server"), f"{doc.name}:{i + 1}: {kind}?"
                pending[kind] = arg
            i += 1
            continue
        fence = lines[i]
        if not fence.startswith("```") or fence.strip() == "```":
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        body = lines[i + 1 : end]
        if fence.strip() == "```console":
            if "skip" in pending:
                assert pending["skip"], f"{doc.name}:{i + 1}: a skip marker must give the reason"
            found.append(Block(doc.name, i + 1, "console", body, skip=pending.get("skip"),
                               server="server" in pending))  # fmt: skip
        elif "file" in pending:
            found.append(Block(doc.name, i + 1, "file", body, name=pending["file"]))
        pending = {}
        i = end + 1
    return found


def page_file(page: str, name: str) -> str:
    """The content of the file ``name`` that ``page`` defines."""
    files = [b for b in parse(DOCS / page) if b.kind == "file" and b.name == name]
    assert files, f"{page} defines no file {name!r} (<!-- docs-test: file {name} -->)"
    return "\n".join(files[0].lines) + "\n"


def normalize(lines: list[str]) -> list[str]:
    """Lines with ids, times, durations, sizes and hashes masked, spacing collapsed."""
    result = []
    for line in lines:
        for pattern, mask in MASKS:
            line = pattern.sub(mask, line)
        if line.strip():
            result.append(line.strip())
    return result


@dataclass
class Ids:
    """Run and task ids a page shows, matched to the real ones in order of appearance."""

    real: dict[str, str] = field(default_factory=dict)

    def learn(self, shown: list[str], printed: str) -> None:
        shown_ids = list(dict.fromkeys(ULID.findall("\n".join(shown))))
        printed_ids = list(dict.fromkeys(ULID.findall(printed)))
        for doc_id, real in zip(shown_ids, printed_ids, strict=False):
            self.real.setdefault(doc_id, real)

    def bind(self, doc_id: str, printed: str) -> None:
        """``doc_id`` (as the page writes it) is the first run id ``printed``."""
        found = ULID.search(printed)
        assert found, f"no run id in the output of the setup of {doc_id}:\n{printed[-2000:]}"
        self.real[doc_id] = found.group(0)

    def substitute(self, command: str) -> str:
        def real(match: re.Match[str]) -> str:
            text = match.group(0)
            doc_id = next((d for d in self.real if d.startswith(text) or text.startswith(d)), None)
            # the whole id: a prefix as short as the page's may name several runs made
            # within the same millisecond here
            return self.real[doc_id] if doc_id else text

        return PREFIX.sub(real, command)


PAGES = sorted(p.name for p in DOCS.glob("*.md") if any(b.kind == "console" for b in parse(p)))


def test_every_skipped_example_gives_a_reason() -> None:
    left_out = [
        (b.doc, b.line, b.skip) for p in PAGES for b in parse(DOCS / p) if b.skip is not None
    ]
    assert all(reason for _, _, reason in left_out)


@pytest.mark.parametrize("page", PAGES)
def test_the_shell_examples_of_a_page_print_what_it_shows(page: str) -> None:
    # a short folder, as a reader's would be: paths in the output fit the width shown
    work = Path(tempfile.mkdtemp(prefix=f"docs-{Path(page).stem}-", dir="/tmp"))
    try:
        _run_page(page, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _shell(script: str, work: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", script], cwd=work, env=env,
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def _run_page(page: str, work: Path) -> None:
    (work / "pyproject.toml").write_text("[project]\nname = 'docs-example'\n")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "ARGOSY_HOME": str(work / ".argosy"),
        "COLUMNS": "100",
        "TZ": "UTC",
        "PYTHONUNBUFFERED": "1",
        "DOCS_REPO": str(REPO),
    }
    for name in ("ARGOSY_SERVER", "ARGOSY_TOKEN", "ARGOSY_TENANT"):
        env.pop(name, None)
    servers: list[ServerProcess] = []
    try:
        _run_blocks(page, work, env, servers)
    finally:
        for server in servers:
            server.stop(timeout=30)


def _run_blocks(page: str, work: Path, env: dict[str, str], servers: list[ServerProcess]) -> None:
    ids = Ids()
    regenerate = os.environ.get("ARGOSY_DOCS_REGENERATE") == "1"
    problems: list[str] = []
    rewrites: list[tuple[Block, list[str]]] = []
    status = 0
    for block in parse(DOCS / page):
        if block.kind == "file":
            (work / block.name).write_text("\n".join(block.lines) + "\n")
            continue
        if block.kind == "setup":
            if block.source:
                (work / block.name).write_text(page_file(block.source, block.name))
                continue
            bound = BINDING.match(block.lines[0])
            command = ids.substitute(bound.group(2) if bound else block.lines[0])
            done = _shell(f"{{ {command}\n}} 2>&1", work, env)
            if done.returncode != 0:  # '|| true' where a setup is meant to fail
                problems.append(f"{page}:{block.line}: setup {command} exited "
                                f"{done.returncode}:\n{done.stdout[-3000:]}")  # fmt: skip
            if bound:
                ids.bind(bound.group(1), done.stdout)
                command = f"{ids.real[bound.group(1)][: len(bound.group(1))]}={command}"
            # regenerated: the marker names the ids the regenerated commands use
            rewrites.append((block, [f"<!-- docs-test: setup {command} -->"]))
            continue
        if block.skip is not None or not block.shows_output:
            continue
        block_env = env
        if block.server:
            if not servers:  # the page's server, started when first needed
                servers.append(start_server(work / "server", {"COLUMNS": "100", "TZ": "UTC"}))
            block_env = {**env, "ARGOSY_SERVER": servers[0].url}
        new_lines: list[str] = []
        for command, shown in block.commands():
            # each command in its own shell, as typed after the previous one: $? carries over
            real_command = ids.substitute(command)
            done = _shell(f"(exit {status}); {real_command} 2>&1", work, block_env)
            printed, status = done.stdout, done.returncode
            ids.learn(shown, printed)
            # regenerated: the ids the command names are those the new output shows
            new_lines += [f"$ {real_command}", *printed.rstrip("\n").splitlines()]
            want, got = _streams(normalize(shown)), _streams(normalize(printed.splitlines()))
            if not _matches(want, got):
                problems.append(
                    f"{page}:{block.line}: $ {command}\n  shows:\n    "
                    + "\n    ".join(want[0] + want[1])
                    + "\n  printed:\n    "
                    + "\n    ".join(got[0] + got[1])
                )
        rewrites.append((block, new_lines))
    if regenerate and problems:
        _rewrite(DOCS / page, rewrites)
    assert not problems, "\n".join(problems)


STEP_LINE = re.compile(r"^[\w.\-\[\]/]+ \| ")


def _streams(lines: list[str]) -> tuple[list[str], list[str]]:
    """The steps' own output (``NODE | line``, shown live as it is read, so its place among
    the progress lines depends on timing) apart from everything else, each in order."""
    steps = [line for line in lines if STEP_LINE.match(line)]
    return [line for line in lines if not STEP_LINE.match(line)], steps


def _matches(want: tuple[list[str], list[str]], got: tuple[list[str], list[str]]) -> bool:
    """Equal, where a shown line ``...`` stands for any lines (an abridged example, which
    then need not show the steps' output either)."""
    if "..." not in want[0]:
        return want == got
    pattern = "\n".join(
        ".*" if line == "..." else re.escape(line) for line in want[0]
    )  # fmt: skip
    return re.fullmatch(pattern.replace("\n.*\n", "(\n.*)*\n"), "\n".join(got[0]), re.S) is not None


def _rewrite(doc: Path, rewrites: list[tuple[Block, list[str]]]) -> None:
    """Replace each checked block's body with what its commands printed."""
    lines = doc.read_text().splitlines()
    for block, new in sorted(rewrites, key=lambda r: -r[0].line):
        if block.kind == "setup":  # the marker line itself
            lines[block.line - 1] = new[0]
            continue
        start = block.line  # the body starts after the fence (1-based line = index of body)
        lines[start : start + len(block.lines)] = new
    doc.write_text("\n".join(lines) + "\n")
