"""The whole ``medpclip build`` process against a real peer and against two codec floors (issue 18, goals 1–2).

Data: ``bench/volumes.py`` cases (512×512×100 int16 HU, BTCV's 13 labels, gzip NIfTI in the MSD layout),
``cases`` of them (default 20: 2,000 input slices), cached under ``bench/data/peer/``. Every round, in
alternating order so that drift in the machine's load hits both alike:

- **medpclip**: ``medpclip build --spec bench_ct.yaml --num-cpus 2`` as a fresh process, timed from its
  start to its exit (imports, planning, Ray's start and stop, units, dedup, finish, report); the units phase
  is read from the build report's step table.
- **peer**: MedSAM's ``pre_CT_MR.py`` (bowang-lab/MedSAM, branch LiteMedSAM, commit
  ``b0fab476e54e631dd412b25e0db9fdf2a2b0f54c``, the command-line version), ``-num_workers 2``, in a venv of
  its own (``make .cache/medsam-venv/bin/python``: SimpleITK, connected-components-3d, tqdm, numpy). Its code
  is not in this repository: put the file at ``.cache/medsam/pre_CT_MR.py`` (or ``$MEDSAM_PRE_CT_MR``)::

      git clone https://github.com/bowang-lab/MedSAM /tmp/MedSAM
      git -C /tmp/MedSAM show b0fab476e54e631dd412b25e0db9fdf2a2b0f54c:pre_CT_MR.py > .cache/medsam/pre_CT_MR.py

  The bench checks the file's SHA-256 and says so when it is missing or different; it never measures
  something else under the peer's name.

Per case the peer reads the label volume (SimpleITK), zeroes label 12, removes 3D components under 100
voxels and 2D components under 10 px (cc3d), keeps the slices with a label left, reads the image, windows the
whole volume in float64 to uint8 and writes one ``np.savez_compressed`` per case (the kept slices' images
and label maps, stacked). It produces no regions, RLE, boxes, points, texts, ids, splits or manifests, and
has no resume or dedup.

Floors, per core, one process, in the same rounds over ``floor_cases`` of the cases (what any slicer must
do: read both volumes, reorient, window each kept slice, PNG-encode it):

- ``floor_tools``: with the standard tools, nibabel's reader and Pillow's PNG at level 6: the floor of
  ``bench_build`` before issue 18 and the yardstick the issue's figures were measured against;
- ``floor_codecs``: with the build's own codecs, zlib-ng's gzip reader and ``encoding.encode_png``.

Reported: medians over rounds, and medians of the per-round ratios: medpclip's rate per input slice over the
peer's (goal ≥ 2), and medpclip's samples per second per core, end to end and in the units phase, over each
floor's (goals ≥ 0.7 end to end, ≥ 0.8 units).

    PYTHONPATH=. .venv/bin/python -m bench.bench_peer [rounds] [cases] [floor_cases]
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from bench.common import pillow_png, save_result
from bench.volumes import FOLDER, write_ct_dataset
from medpclip import imaging
from medpclip.corpus.encoding import codec_versions, encode_png
from medpclip.corpus.sample import SampleParams
from medpclip.sources.volumes.nifti_files import load_nifti

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "peer"
PEER_COMMIT = "b0fab476e54e631dd412b25e0db9fdf2a2b0f54c"
PEER_SHA256 = "ec9dfd4e3bc64e971223e19204ed45d28f8f49bc7a06e2607af26e4ea9e0b8e5"
PEER_SCRIPT = Path(os.environ.get("MEDSAM_PRE_CT_MR", REPO / ".cache" / "medsam" / "pre_CT_MR.py"))
PEER_PYTHON = Path(os.environ.get("MEDSAM_PYTHON", REPO / ".cache" / "medsam-venv" / "bin" / "python"))
CPUS = 2
PNG_LEVEL = SampleParams().png_compress_level


def peer_problem() -> str | None:
    """Why the peer cannot be measured here, or None."""
    if not PEER_PYTHON.is_file():
        return f"no peer venv at {PEER_PYTHON}: run `make .cache/medsam-venv/bin/python`"
    if not PEER_SCRIPT.is_file():
        return f"no peer script at {PEER_SCRIPT}: see this module's docstring for the two git commands"
    digest = hashlib.sha256(PEER_SCRIPT.read_bytes()).hexdigest()
    if digest != PEER_SHA256:
        return f"{PEER_SCRIPT} has SHA-256 {digest[:12]}…, not pre_CT_MR.py at {PEER_COMMIT[:8]} ({PEER_SHA256[:12]}…)"
    return None


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONHASHSEED": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def _tree_bytes(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def run_medpclip(spec: Path | str, raw: Path, out: Path) -> dict:
    """One ``medpclip build`` process (a spec name or YAML path), timed from start to exit."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [str(REPO / ".venv" / "bin" / "medpclip"), "build", "--spec", str(spec), "--raw-root", str(raw)]
    cmd += ["--out", str(out), "--num-cpus", str(CPUS)]
    started = time.perf_counter()
    done = subprocess.run(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"medpclip build failed ({done.returncode}): {done.stderr[-2000:]}")
    build = json.loads((out / "build.json").read_text())
    html = (out / "report" / "index.html").read_text()
    html = html[html.index(">step<") :]  # the report's step table (its only table with a "step" column)
    steps = {
        k: float(v) for k, v in re.findall(r'<td class="">([a-z ]+)</td><td class="n">([0-9.]+)</td>', html)
    }
    files, nbytes = _tree_bytes(out)
    return {
        "wall_s": wall,
        "units_s": steps.get("units"),
        "steps_s": steps,
        "samples": build["totals"]["samples"],
        "regions": build["totals"]["regions"],
        "files": files,
        "bytes": nbytes,
    }


def run_peer(raw: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    task = raw / FOLDER
    cmd = [str(PEER_PYTHON), str(PEER_SCRIPT), "-img_path", str(task / "imagesTr"), "-gt_path"]
    cmd += [str(task / "labelsTr"), "-img_name_suffix", ".nii.gz", "-gt_name_suffix", ".nii.gz"]
    cmd += ["-output_path", str(out), "-num_workers", str(CPUS)]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    slices = 0
    for npz in out.rglob("*.npz"):
        with np.load(npz) as z:
            slices += int(z["imgs"].shape[0])
    files, nbytes = _tree_bytes(out)
    return {"wall_s": wall, "slices_kept": slices, "files": files, "bytes": nbytes}


def floor(raw: Path, cases: int, codecs: str) -> dict:
    """Read + reorient + window + PNG of every kept slice of the first ``cases`` cases, one core."""
    load, encode = (
        (nib.load, pillow_png) if codecs == "tools" else (load_nifti, lambda a: encode_png(a, PNG_LEVEL))
    )
    meta = json.loads((raw / FOLDER / "dataset.json").read_text())
    started = time.perf_counter()
    n = 0
    for entry in meta["training"][:cases]:
        volumes = []
        for rel in (entry["image"], entry["label"]):
            img = load(raw / FOLDER / rel)
            volumes.append(imaging.reorient_canonical(np.asanyarray(img.dataobj), img.affine)[0])
        hu, labels = volumes
        for z in range(hu.shape[2]):
            if labels[:, :, z].any():
                encode(imaging.window_ct(imaging.display_slice(hu[:, :, z]), "abdomen"))
                n += 1
    seconds = time.perf_counter() - started
    return {"samples": n, "seconds": seconds, "rate_per_core": n / seconds}


def main(rounds: int = 3, cases: int = 20, floor_cases: int = 4) -> dict:
    problem = peer_problem()
    if problem:
        print(f"bench_peer: the peer is not measured: {problem}", file=sys.stderr)
    spec = write_ct_dataset(DATA / "raw", cases)
    raw = spec.parent
    input_slices = cases * 100
    runs: dict[str, list[dict]] = {"medpclip": [], "peer": [], "floor_tools": [], "floor_codecs": []}
    for r in range(rounds):
        order = ["medpclip", "peer"] if r % 2 == 0 else ["peer", "medpclip"]
        for name in order:
            if name == "peer" and problem:
                continue
            result = (
                run_medpclip(spec, raw, DATA / "out")
                if name == "medpclip"
                else run_peer(raw, DATA / "peer-out")
            )
            runs[name].append(result)
            print(f"round {r + 1} {name}: {result['wall_s']:.2f} s", flush=True)
        for codecs in ("tools", "codecs"):
            runs[f"floor_{codecs}"].append(floor(raw, floor_cases, codecs))
    result = summarize(runs, rounds, cases, input_slices, problem)
    _print(result)
    save_result("peer", result)
    return result


def _med(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def summarize(
    runs: dict[str, list[dict]], rounds: int, cases: int, input_slices: int, problem: str | None
) -> dict:
    ours = runs["medpclip"]
    samples = ours[0]["samples"]
    out: dict = {
        "params": {"rounds": rounds, "cases": cases, "input_slices": input_slices, "cpus": CPUS},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "codecs": codec_versions()},
        "peer": {"script": str(PEER_SCRIPT), "commit": PEER_COMMIT, "not_measured": problem},
        "medpclip": {
            "wall_s": _med([r["wall_s"] for r in ours]),
            "units_s": _med([r["units_s"] for r in ours]),
            "steps_s": {k: _med([r["steps_s"][k] for r in ours]) for k in ours[0]["steps_s"]},
            "samples": samples,
            "regions": ours[0]["regions"],
            "files": ours[0]["files"],
            "bytes": ours[0]["bytes"],
        },
    }
    for name in ("floor_tools", "floor_codecs"):
        rates = [r["rate_per_core"] for r in runs[name]]
        out[name] = {"samples_per_s_per_core": _med(rates)}
        out[name]["end_to_end_ratio"] = _med(
            [samples / o["wall_s"] / CPUS / f for o, f in zip(ours, rates, strict=True)]
        )
        out[name]["units_ratio"] = _med(
            [samples / o["units_s"] / CPUS / f for o, f in zip(ours, rates, strict=True)]
        )
    if runs["peer"]:
        peer = runs["peer"]
        out["peer"].update(
            wall_s=_med([r["wall_s"] for r in peer]),
            slices_kept=peer[0]["slices_kept"],
            files=peer[0]["files"],
            bytes=peer[0]["bytes"],
            # rate per input slice: both read the same input_slices, so the ratio of rates is the wall ratio
            medpclip_over_peer=_med([p["wall_s"] / o["wall_s"] for o, p in zip(ours, peer, strict=True)]),
            per_round=[round(p["wall_s"] / o["wall_s"], 3) for o, p in zip(ours, peer, strict=True)],
        )
    return out


def _print(r: dict) -> None:
    m = r["medpclip"]
    print(
        f"\n{r['params']['input_slices']} input slices, {r['params']['cpus']} CPUs; codecs: {r['machine']['codecs']}"
    )
    print(f"medpclip: {m['wall_s']:.2f} s end to end, units {m['units_s']:.2f} s, steps {m['steps_s']}")
    print(
        f"          {m['samples']} samples, {m['regions']} regions, {m['files']} files, {m['bytes'] / 1e6:.1f} MB"
    )
    p = r["peer"]
    if p.get("not_measured"):
        print(f"peer: not measured ({p['not_measured']})")
    else:
        print(
            f"peer:     {p['wall_s']:.2f} s, {p['slices_kept']} slices kept, {p['files']} files, {p['bytes'] / 1e6:.1f} MB"
        )
        print(
            f"medpclip / peer, rate per input slice: {p['medpclip_over_peer']:.2f}x (rounds {p['per_round']})"
        )
    for name in ("floor_tools", "floor_codecs"):
        f = r[name]
        print(
            f"{name}: {f['samples_per_s_per_core']:.1f} samples/s/core; medpclip end to end {f['end_to_end_ratio']:.2f}"
            f" of it, units {f['units_ratio']:.2f}"
        )


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))
