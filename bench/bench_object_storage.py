"""Build throughput to object storage against local disk, side by side (issue 17).

    python -m bench.bench_object_storage [rounds]

An S3 API server on loopback (moto's ``moto_server``, started and stopped here by PID; bench-only: it ships
with the dev extras) and the demo CT + polyp datasets. Each round builds the same inputs once to a local folder
and once to ``s3://…`` (fresh output each time, order alternating round by round so machine noise hits both
alike), each as a whole ``medpclip build`` process with one Ray worker. Reports the median seconds of each and
the median of the per-round ratios disk/S3 (1.0 = no cost for the upload). Loopback has no network latency or
bandwidth limit: the ratio is the cost of the staging and upload path itself, a lower bound for a real bucket.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.common import save_result

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _build(env: dict, raw: Path, out: str) -> float:
    t = time.perf_counter()
    subprocess.run(
        [str(BIN / "medpclip"), "build", "--spec", "demo_ct,demo_polyp", "--raw-root", str(raw), "--out", out,
         "--max-side", "512", "--num-cpus", "1"],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - t


def main(rounds: int = 3) -> dict:
    work = Path(tempfile.mkdtemp(prefix="medpclip-s3bench-"))
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
               AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")  # fmt: skip
    log = open(work / "moto.log", "wb")  # noqa: SIM115 — closed in finally
    server = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _ready(f"{endpoint}/moto-api/"):
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("moto_server did not start")
            time.sleep(0.25)
        raw = work / "raw"
        subprocess.run(
            [str(BIN / "medpclip"), "demo-data", str(raw)], env=env, check=True, capture_output=True
        )
        mk = "import s3fs; s3fs.S3FileSystem().mkdir('bench-corpora')"
        subprocess.run([sys.executable, "-c", mk], env=env, check=True)
        disk, s3, ratios = [], [], []
        for r in range(rounds):
            runs = {}
            for where in ("disk", "s3") if r % 2 == 0 else ("s3", "disk"):
                out = str(work / f"out-{r}") if where == "disk" else f"s3://bench-corpora/round-{r}"
                runs[where] = _build(env, raw, out)
            disk.append(runs["disk"])
            s3.append(runs["s3"])
            ratios.append(runs["disk"] / runs["s3"])
        result = {
            "rounds": rounds,
            "disk_seconds_median": round(statistics.median(disk), 2),
            "s3_seconds_median": round(statistics.median(s3), 2),
            "disk_over_s3_median": round(statistics.median(ratios), 3),
            "what": "medpclip build demo_ct,demo_polyp --max-side 512 --num-cpus 1, whole process, moto on loopback",
        }
        save_result("object-storage", result)
        print(result)
        return result
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
