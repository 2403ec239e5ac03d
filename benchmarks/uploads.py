"""Uploads of local files for server runs: throughput, and a large upload interrupted halfway.

    .venv/bin/python benchmarks/uploads.py               # 1 GiB, interrupted at 512 MiB
    .venv/bin/python benchmarks/uploads.py --mib 256

Standalone: starts a real ``argosy server`` process on loopback (SQLite metadata and a local
artifact folder in a temporary state folder, encryption at rest on as servers have it), then

1. starts an upload of a file of random bytes and sends half of it in 8 MiB chunks (as the
   client does), then drops that client — an interrupted upload;
2. a new client asks the server where the upload stopped, sends the rest from there and
   completes it (the server joins the chunks and checks the sha256);
3. uploads the same file again (nothing is sent: the bytes are stored already);
4. sends the file with one byte changed under the original's sha256: refused as corrupted.

Prints the figures as a Markdown table (paste into ``benchmarks/RESULTS.md``): client-side
MiB/s for the chunks, the completion (join + verify + store), and peak RSS of the server.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

CHUNK = 8 * 1024 * 1024


def _file(path: Path, mib: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as fh:
        for _ in range(mib):
            block = os.urandom(1024 * 1024)
            digest.update(block)
            fh.write(block)
    return digest.hexdigest()


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=1024, help="file size in MiB (default 1 GiB)")
    args = parser.parse_args(argv)

    from tests.server_fixture import new_kek, start_server

    from argosy import api
    from argosy.client.client import Client
    from argosy.errors import UsageError

    with tempfile.TemporaryDirectory(prefix="argosy-bench-uploads-") as tmp:
        folder = Path(tmp)
        data = folder / "big.bin"
        sha = _file(data, args.mib)
        size = data.stat().st_size
        server = start_server(folder / "server", {"ARGOSY_KEK": new_kek()})
        try:
            body = api.UploadCreate(sha256=sha, size=size, format="file", filename="big.bin")
            half = (size // 2) // CHUNK * CHUNK
            started = time.perf_counter()
            with Client(server.url, timeout=300) as first, data.open("rb") as fh:
                upload = first.start_upload(body)
                while upload.received < half:
                    upload = first.put_upload_chunk(upload.id, upload.received, fh.read(CHUNK))
            first_half = time.perf_counter() - started
            with Client(server.url, timeout=600) as later, data.open("rb") as fh:
                found = later.get_upload(upload.id)
                assert found.received == half, found
                fh.seek(found.received)
                resumed = time.perf_counter()
                while found.received < size:
                    found = later.put_upload_chunk(found.id, found.received, fh.read(CHUNK))
                second_half = time.perf_counter() - resumed
                joining = time.perf_counter()
                done = later.complete_upload(found.id)
                complete = time.perf_counter() - joining
                assert done.completed and later.has_blob(sha)
                again = time.perf_counter()
                assert later.start_upload(body).completed
                repeat = time.perf_counter() - again
                bad = later.start_upload(api.UploadCreate(sha256="f" * 64, size=4, format="file"))
                later.put_upload_chunk(bad.id, 0, b"oops")
                try:
                    later.complete_upload(bad.id)
                    refused = "NOT refused"
                except UsageError:
                    refused = "refused (upload_corrupted)"
            rss = _peak_rss(server.process.pid)
        finally:
            server.stop(timeout=30)
    mib = size / 2**20
    print(f"| upload of {mib:.0f} MiB (8 MiB chunks, loopback, encrypted at rest) | value |")
    print("|---|---|")
    print(
        f"| first half, then the client dropped | {first_half:.1f} s ({mib / 2 / first_half:.0f} MiB/s) |"
    )
    print(
        f"| resumed at {half / 2**20:.0f} MiB by a new client, second half | {second_half:.1f} s ({mib / 2 / second_half:.0f} MiB/s) |"
    )
    print(
        f"| complete: join, verify sha256, store the blob | {complete:.1f} s ({mib / complete:.0f} MiB/s) |"
    )
    print(f"| the same file again (stored already: nothing sent) | {repeat * 1000:.0f} ms |")
    print(f"| bytes that do not match the declared sha256 | {refused} |")
    print(f"| server peak RSS | {rss / 2**20:.0f} MiB |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
