"""Names and archive members that become keys or paths: validated before they are used.

:func:`check_name` (one segment: an output name, a file name, a pipeline or schedule name)
and :func:`check_relative_path` (``/``-separated segments: a node path, a record key) refuse
absolute paths, ``..`` and ``.`` segments, backslashes, NUL and other control characters,
percent-encoded separators or dots (``%2e%2e``, ``%2f``, also double-encoded) and over-long
names, each with a one-line :class:`UnsafeNameError`.

:func:`extract_zip` and :func:`extract_tar` unpack archives member by member and refuse any
member that would land outside the target folder: absolute names, ``..``, symlinks and
hardlinks (in tars), device files, FIFOs. Nothing is written outside the target, ever.
"""

from __future__ import annotations

import re
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

from argosy.errors import UsageError

MAX_NAME = 255
MAX_PATH = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ENCODED = re.compile(r"%[0-9a-fA-F]{2}")
_DRIVE = re.compile(r"^[A-Za-z]:")


class UnsafeNameError(UsageError):
    """A user-provided name or archive member that could escape where it belongs."""


def _problem(value: str, *, separators: bool) -> str | None:
    """Why ``value`` is unsafe, or None."""
    if not value:
        return "it is empty"
    if "\x00" in value:
        return "it contains a NUL byte"
    if _CONTROL.search(value):
        return "it contains a control character"
    if "\\" in value:
        return "it contains a backslash"
    if value.startswith("/") or _DRIVE.match(value):
        return "it is an absolute path"
    decoded = value
    for _ in range(3):  # also double encoding: %252e -> %2e -> .
        if not _ENCODED.search(decoded):
            break
        decoded = unquote(decoded)
        if (
            decoded.count("/") > value.count("/")
            or "\\" in decoded
            or _CONTROL.search(decoded)
            or any(s in (".", "..") for s in decoded.split("/"))
        ):
            return "it contains a percent-encoded separator, dot or control character"
    segments = value.split("/")
    if not separators and len(segments) > 1:
        return "it contains '/'"
    for segment in segments:
        if segment in ("", ".", ".."):
            return f"it has a {segment!r} segment" if segment else "it has an empty segment"
        if len(segment) > MAX_NAME:
            return f"a part is longer than {MAX_NAME} characters"
    if len(value) > MAX_PATH:
        return f"it is longer than {MAX_PATH} characters"
    return None


def check_name(value: str, what: str = "name") -> str:
    """``value`` if it is a safe single path segment, else :class:`UnsafeNameError`."""
    if not isinstance(value, str):
        raise UnsafeNameError(f"invalid {what}: expected a string, got {type(value).__name__}")
    why = _problem(value, separators=False)
    if why is not None:
        raise UnsafeNameError(f"invalid {what} {_show(value)}: {why}; use a plain relative name")
    return value


def check_relative_path(value: str, what: str = "path") -> str:
    """``value`` if it is a safe relative ``/``-separated path, else :class:`UnsafeNameError`."""
    if not isinstance(value, str):
        raise UnsafeNameError(f"invalid {what}: expected a string, got {type(value).__name__}")
    why = _problem(value, separators=True)
    if why is not None:
        raise UnsafeNameError(f"invalid {what} {_show(value)}: {why}; use a plain relative path")
    return value


def _show(value: str) -> str:
    shown = value if len(value) <= 80 else value[:77] + "..."
    return repr(shown)


def _inside(target: Path, member: str, what: str) -> Path:
    """Where ``member`` lands under ``target`` (resolved), refusing any escape."""
    name = member.rstrip("/")
    if not name:
        raise UnsafeNameError(f"{what} holds a member with an empty name")
    if name.startswith("/") or _DRIVE.match(name) or "\\" in name or "\x00" in name:
        raise UnsafeNameError(f"{what} holds an unsafe member {_show(member)}: absolute or odd")
    parts = PurePosixPath(name).parts
    if ".." in parts:
        raise UnsafeNameError(f"{what} holds an unsafe member {_show(member)}: it uses '..'")
    root = target.resolve()
    dest = (root / Path(*parts)).resolve()
    if dest != root and root not in dest.parents:
        raise UnsafeNameError(f"{what} holds a member {_show(member)} that lands outside it")
    return dest


def extract_zip(archive: Path, target: Path, *, what: str | None = None) -> None:
    """Unpack ``archive`` into ``target`` (created), refusing zip-slip and symlink members."""
    what = what or f"archive {archive.name}"
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:  # check everything before writing anything
            _inside(target, info.filename, what)
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)  # 0: no type recorded (a plain file)
            if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
                raise UnsafeNameError(
                    f"{what} holds {_show(info.filename)}, which is not a regular file or folder "
                    "(symlinks and special files are refused)"
                )
        for info in infos:
            dest = _inside(target, info.filename, what)
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, dest.open("wb") as out:
                shutil.copyfileobj(src, out, 1024 * 1024)


def extract_tar(archive: Path, target: Path, *, what: str | None = None) -> None:
    """Unpack ``archive`` into ``target`` (created): regular files and folders only.

    Absolute members, ``..``, symlinks, hardlinks, devices and FIFOs are refused before
    anything is written; Python's ``data`` filter then strips modes and owners as well.
    """
    what = what or f"archive {archive.name}"
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for m in members:
            _inside(target, m.name, what)
            if m.issym() or m.islnk():
                raise UnsafeNameError(
                    f"{what} holds the link {_show(m.name)} -> {_show(m.linkname)}; links are "
                    "refused (replace them with copies)"
                )
            if not (m.isfile() or m.isdir()):
                raise UnsafeNameError(
                    f"{what} holds {_show(m.name)}, a device, FIFO or other special file; refused"
                )
        tar.extractall(target, members=members, filter="data")
