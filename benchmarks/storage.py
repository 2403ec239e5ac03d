"""Artifact upload/download throughput: Argosy's stores against plain copies, local and S3.

    .venv/bin/python benchmarks/storage.py                      # 256 MiB, 3 repeats, moto
    .venv/bin/python benchmarks/storage.py --size 1024 --repeats 1
    .venv/bin/python benchmarks/storage.py --endpoint https://s3.eu-west-1.amazonaws.com \\
        --bucket my-bench-bucket                                # a real S3 (AWS credential chain)
    .venv/bin/python benchmarks/storage.py --ranged             # also parallel ranged reads
    .venv/bin/python benchmarks/storage.py --encrypted          # also with encryption at rest

Standalone (``benchmarks/run.py`` does not run it). Without ``--endpoint`` it starts a moto
server on loopback (``tests/s3_fixture.py``), so the S3 figures then measure moto and the
loopback, not AWS: compare Argosy with the boto3 baseline *in the same run*, not with other
machines. Every operation runs in a fresh child process, so its peak RSS (``ru_maxrss``) is
its own (``VmHWM``); the source file is read once beforehand so every operation starts from the page cache.

Operations (MiB/s = file size / wall time of the operation alone):

- ``local put``: ``ArtifactStore.put_file`` on a local folder (sha256, copy, fsync, rename)
  vs ``cp`` (``shutil.copyfile``: copy_file_range/sendfile, no hashing, no fsync);
- ``local get``: ``ArtifactStore.copy_blob_to`` (read, verify sha256, write) vs ``cp``;
- ``s3 put``: ``ArtifactStore.put_file`` with the sha256 already known (as a task's output
  is: hashed while it was written) — streaming multipart, per-part sha256 checksums, the
  whole-file hash checked before completion — vs boto3 ``upload_file`` (default transfer
  config: 8 MiB parts, 10 threads, CRC32 checksums);
- ``s3 get``: ``ArtifactStore.blob_path`` (one streamed GET into the cache, verified) vs boto3
  ``download_file`` (parallel ranged GETs, no verification); ``--ranged`` adds Argosy's
  parallel ranged reader (``download_concurrency=8``). moto reads the whole object for every
  ranged GET, so ranged reads are slow against moto and fast against S3.

``--encrypted`` adds the same Argosy operations with encryption at rest (streaming chunked
AES-256-GCM, ``argosy.stores.encryption``; a put encrypts into a temporary file, then stores
it; a get decrypts and verifies the plaintext sha256 on the fly).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MiB = 1024 * 1024


# -- one operation, in a child process ------------------------------------------------------------


def _child(op: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run one operation; return its wall time (seconds) and this process's peak RSS."""
    src, work = Path(spec["src"]), Path(spec["work"])
    t0 = time.perf_counter()
    if op == "cp put":
        shutil.copyfile(src, work / f"cp-{uuid.uuid4().hex}")
    elif op == "cp get":
        shutil.copyfile(spec["blob_path"], work / f"cp-{uuid.uuid4().hex}")
    elif op.startswith("argosy"):
        from argosy.stores.artifacts.blobs import BlobInfo, open_artifact_store

        store = open_artifact_store(spec["url"], "bench", spec.get("options"))
        if op.endswith(" encrypted"):
            from argosy.stores.encryption import ObjectCipher, StaticDataKeys

            store = store.with_cipher(ObjectCipher(StaticDataKeys.from_document(spec["keys"])))
            op = op.removesuffix(" encrypted")
        info = BlobInfo(spec["sha256"], spec["size"])
        t0 = time.perf_counter()
        if op == "argosy local put":
            store.put_file(src)  # hashes the file first, as a put without a known hash does
        elif op == "argosy s3 put":
            store.put_file(src, info)
        elif op == "argosy local get":
            store.copy_blob_to(info.sha256, work / f"get-{uuid.uuid4().hex}")
        elif op in ("argosy s3 get", "argosy s3 get ranged"):
            store.blob_path(info.sha256, cache_dir=work / f"cache-{uuid.uuid4().hex}")
        else:
            raise SystemExit(f"unknown operation {op}")
    elif op.startswith("boto3"):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        client = boto3.session.Session().client(
            "s3",
            endpoint_url=spec["endpoint"],
            config=Config(s3={"addressing_style": "path"} if spec["path_style"] else {}),
        )
        config = TransferConfig()
        t0 = time.perf_counter()
        if op == "boto3 put":
            client.upload_file(
                str(src), spec["bucket"], f"baseline/{uuid.uuid4().hex}", Config=config
            )
        else:
            client.download_file(
                spec["bucket"],
                spec["baseline_key"],
                str(work / f"dl-{uuid.uuid4().hex}"),
                Config=config,
            )
    else:
        raise SystemExit(f"unknown operation {op}")
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "peak_rss": peak_rss()}


def peak_rss() -> int:
    """This process's resident-memory high-water mark in bytes (``VmHWM``).

    Not ``ru_maxrss``: Linux carries the parent's high-water mark into a child across
    fork/vfork + exec, so a small child of a big parent would report the parent's figure.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _run_child(op: str, spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", op, json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{op} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# -- the benchmark --------------------------------------------------------------------------------


def _make_file(path: Path, size: int) -> None:
    block = os.urandom(MiB)
    with path.open("wb") as f:
        for i in range(size // MiB):
            f.write(i.to_bytes(8, "little") + block[8:])
        f.write(block[: size % MiB])


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--size", type=int, default=256, help="artifact size in MiB (default 256)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--endpoint", help="an S3 endpoint URL (default: start a moto server)")
    parser.add_argument("--bucket", help="an existing bucket at --endpoint (default: a new one)")
    parser.add_argument("--region", default=None)
    parser.add_argument("--ranged", action="store_true", help="also Argosy's parallel ranged reads")
    parser.add_argument("--encrypted", action="store_true", help="also with encryption at rest")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--child", nargs=2, metavar=("OP", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child[0], json.loads(args.child[1]))))
        return

    sys.path.insert(0, str(ROOT))
    size = args.size * MiB
    with tempfile.TemporaryDirectory(prefix="argosy-bench-storage-") as tmp:
        work = Path(tmp)
        env = dict(os.environ)
        endpoint_proc = None
        if args.endpoint:
            endpoint_url, insecure = args.endpoint, args.endpoint.startswith("http://")
            path_style = insecure
        else:
            from tests.s3_fixture import S3Endpoint

            endpoint_proc = S3Endpoint(work)
            endpoint_proc.start()
            env.update(endpoint_proc.env())
            endpoint_url, insecure, path_style = endpoint_proc.url, True, True
        try:
            print(f"writing a {args.size} MiB file ...", file=sys.stderr)
            src = work / "artifact.bin"
            _make_file(src, size)
            sha = _sha256(src)  # also puts it in the page cache

            import boto3
            from botocore.config import Config

            os.environ.update(env)
            client = boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=args.region,
                config=Config(s3={"addressing_style": "path"} if path_style else {}),
            )
            bucket = args.bucket or f"argosy-bench-{uuid.uuid4().hex[:10]}"
            if not args.bucket:
                client.create_bucket(Bucket=bucket)
            baseline_key = f"baseline/{uuid.uuid4().hex}"
            client.upload_file(str(src), bucket, baseline_key)
            options = {
                "endpoint_url": endpoint_url if args.endpoint or endpoint_proc else None,
                "region": args.region,
                "path_style": path_style,
                "insecure": insecure,
            }
            local_root = work / "local-store"
            blob_path = local_root / "tenants/bench/blobs/sha256" / sha[:2] / sha
            spec = {
                "src": str(src),
                "work": str(work),
                "sha256": sha,
                "size": size,
                "blob_path": str(blob_path),
                "endpoint": endpoint_url,
                "path_style": path_style,
                "bucket": bucket,
                "baseline_key": baseline_key,
            }
            local = {**spec, "url": str(local_root)}
            import base64

            keys = {
                "tenant": "bench",
                "current": "bench-key",
                "keys": {"bench-key": base64.b64encode(os.urandom(32)).decode()},
            }
            local_enc = {**spec, "url": str(work / "local-store-enc"), "keys": keys}
            enc_blob_path = work / "local-store-enc/tenants/bench/blobs/sha256" / sha[:2] / sha
            plan: list[tuple[str, str, str]] = [
                ("local put", "argosy local put", "local"),
                ("local put", "cp put", "local"),
                ("local get", "argosy local get", "local"),
                ("local get", "cp get", "local"),
                ("s3 put", "argosy s3 put", "s3"),
                ("s3 put", "boto3 put", "s3"),
                ("s3 get", "argosy s3 get", "s3"),
                ("s3 get", "boto3 get", "s3"),
            ]
            if args.ranged:
                plan.append(("s3 get", "argosy s3 get ranged", "ranged"))
            if args.encrypted:
                plan += [
                    ("local put", "argosy local put encrypted", "local_enc"),
                    ("local get", "argosy local get encrypted", "local_enc"),
                    ("s3 put", "argosy s3 put encrypted", "s3_enc"),
                    ("s3 get", "argosy s3 get encrypted", "s3_enc"),
                ]
            results: dict[str, list[dict[str, Any]]] = {op: [] for _, op, _ in plan}
            for repeat in range(args.repeats):
                # A fresh S3 prefix per repeat, so that every put really uploads (no dedup).
                s3 = {
                    **spec,
                    "url": f"s3://{bucket}/bench-{uuid.uuid4().hex[:8]}",
                    "options": options,
                }
                specs = {
                    "local": local,
                    "s3": s3,
                    "ranged": {**s3, "options": {**options, "download_concurrency": 8}},
                    "local_enc": local_enc,
                    "s3_enc": {**s3, "url": s3["url"] + "-enc", "keys": keys},
                }
                if blob_path.exists():  # ... and every local put really copies
                    blob_path.unlink()
                if enc_blob_path.exists():
                    enc_blob_path.unlink()
                for _, op, which in plan:
                    print(f"[{repeat + 1}/{args.repeats}] {op}", file=sys.stderr)
                    results[op].append(_run_child(op, specs[which], env))
                    for leftover in [*work.glob("cp-*"), *work.glob("get-*"), *work.glob("dl-*")]:
                        leftover.unlink()
                    for leftover in work.glob("cache-*"):
                        shutil.rmtree(leftover)
        finally:
            if endpoint_proc is not None:
                endpoint_proc.stop()

    rows = []
    for what, op, _ in plan:
        seconds = statistics.median(r["seconds"] for r in results[op])
        rss = max(r["peak_rss"] for r in results[op])
        rows.append(
            {
                "what": what,
                "how": op,
                "seconds": round(seconds, 3),
                "mib_per_s": round(args.size / seconds, 1),
                "peak_rss_mib": round(rss / MiB, 1),
            }
        )
    doc = {
        "size_mib": args.size,
        "repeats": args.repeats,
        "endpoint": args.endpoint or "moto (loopback)",
        "cpus": os.cpu_count(),
        "results": rows,
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    print(f"{args.size} MiB artifact, median of {args.repeats}, endpoint {doc['endpoint']}")
    print(
        f"| {'operation':<10} | {'how':<32} | {'MiB/s':>8} | {'seconds':>8} | {'peak RSS MiB':>12} |"
    )
    print(f"|{'-' * 12}|{'-' * 34}|{'-' * 10}|{'-' * 10}|{'-' * 14}|")
    for r in rows:
        print(
            f"| {r['what']:<10} | {r['how']:<32} | {r['mib_per_s']:>8} | {r['seconds']:>8} "
            f"| {r['peak_rss_mib']:>12} |"
        )


if __name__ == "__main__":
    main()
