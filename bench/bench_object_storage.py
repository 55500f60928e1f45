"""Build throughput to and from object storage against local disk, side by side (issue 17).

    python -m bench.bench_object_storage [rounds]

An S3 API server on loopback (moto's ``moto_server``, started and stopped here by PID; bench-only: it ships
with the dev extras) and the demo CT + polyp datasets. Each round builds the same inputs three times: raw
folder → local folder (disk), raw folder → ``s3://…`` (S3 out), and raw in ``s3://…`` → local folder (S3 raw,
with a cold discovery skeleton each time: an empty ``MEDPCLIP_CACHE``); fresh output each time, the order
rotating round by round so machine noise hits all alike; each a whole ``medpclip build`` process with one Ray
worker. Reports the median seconds of each and the medians of the per-round ratios disk/S3 (1.0 = no cost for
the object store). Loopback has no network latency or bandwidth limit: the ratios are the cost of the staging,
upload and download paths themselves, a lower bound for a real bucket.
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


def _build(env: dict, raw: Path | str, out: str) -> float:
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
        mk = (
            "import s3fs, sys; fs = s3fs.S3FileSystem(); fs.mkdir('bench-corpora'); fs.mkdir('bench-raw'); "
            "fs.put(sys.argv[1] + '/', 'bench-raw/demo', recursive=True)"
        )
        subprocess.run([sys.executable, "-c", mk, str(raw)], env=env, check=True)
        kinds = ["disk", "s3", "s3_raw"]
        seconds: dict[str, list[float]] = {k: [] for k in kinds}
        ratios: dict[str, list[float]] = {"s3": [], "s3_raw": []}
        for r in range(rounds):
            runs = {}
            for where in kinds[r % 3 :] + kinds[: r % 3]:
                if where == "disk":
                    runs[where] = _build(env, raw, str(work / f"out-{r}"))
                elif where == "s3":
                    runs[where] = _build(env, raw, f"s3://bench-corpora/round-{r}")
                else:  # a cold skeleton: the driver lists and fetches it all, as on a first build
                    cold = env | {"MEDPCLIP_CACHE": str(work / f"cache-{r}")}
                    runs[where] = _build(cold, "s3://bench-raw/demo", str(work / f"from-s3-{r}"))
            for k in kinds:
                seconds[k].append(runs[k])
            for k in ratios:
                ratios[k].append(runs["disk"] / runs[k])
        result = {
            "rounds": rounds,
            "disk_seconds_median": round(statistics.median(seconds["disk"]), 2),
            "s3_seconds_median": round(statistics.median(seconds["s3"]), 2),
            "disk_over_s3_median": round(statistics.median(ratios["s3"]), 3),
            "s3_raw_seconds_median": round(statistics.median(seconds["s3_raw"]), 2),
            "disk_over_s3_raw_median": round(statistics.median(ratios["s3_raw"]), 3),
            "what": "medpclip build demo_ct,demo_polyp --max-side 512 --num-cpus 1, whole process, moto on "
            "loopback; s3 = raw folder -> s3:// out, s3_raw = s3:// raw (cold skeleton) -> folder out",
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
