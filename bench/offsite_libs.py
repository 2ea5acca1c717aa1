"""Measure the S3 client candidates for offsite copies (docs/design.md, "Offsite copies").

Uploads one file of ``--mb`` MiB to a moto_server on 127.0.0.1 with obstore and with boto3
(each in a child process, so peak RSS is the client's own) and prints MB/s and peak RSS.
Run it from a venv that has both installed: ``python bench/offsite_libs.py --mb 256``.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHILD = r"""
import resource, sys, time
lib, path, url = sys.argv[1:4]
start = time.monotonic()
if lib == "obstore":
    import obstore
    from obstore.store import S3Store
    store = S3Store("bench", endpoint=url, access_key_id="x", secret_access_key="y",
                    region="us-east-1", client_options={"allow_http": True})
    imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open(path, "rb") as f:
        obstore.put(store, "obj", iter(lambda: f.read(1 << 20), b""),
                    chunk_size=8 << 20, max_concurrency=2)
else:
    import boto3
    from boto3.s3.transfer import TransferConfig
    s3 = boto3.client("s3", endpoint_url=url, aws_access_key_id="x",
                      aws_secret_access_key="y", region_name="us-east-1")
    imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open(path, "rb") as f:
        s3.upload_fileobj(f, "bench", "obj", Config=TransferConfig(
            multipart_chunksize=8 << 20, max_concurrency=2))
print(time.monotonic() - start, imported, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=256)
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url, timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        put = urllib.request.Request(f"{url}/bench", method="PUT")  # noqa: S310
        urllib.request.urlopen(put).close()  # noqa: S310
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "data"
            with path.open("wb") as f:
                for _ in range(args.mb):
                    f.write(os.urandom(1 << 20))
            for lib in ("obstore", "boto3"):
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, lib, str(path), url],
                    check=True, capture_output=True, text=True,
                ).stdout.split()  # fmt: skip
                seconds, imported, peak = float(out[0]), int(out[1]), int(out[2])
                print(f"{lib}: {args.mb / seconds:.0f} MiB/s, RSS after import "
                      f"{imported / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB")  # fmt: skip
    finally:
        server.terminate()
        server.wait()
    server_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"moto_server peak RSS (children) {server_rss:.0f} MiB")


if __name__ == "__main__":
    main()
