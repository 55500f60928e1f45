"""Storage per sample by modality (issue 18, goal 3): photographs stored as JPEG against the PNG they used to be.

    python -m bench.bench_storage

Builds the demo corpus (demo_ct, demo_polyp, demo_cxr; `--max-side 512` as `make demo`) and reports, per
modality: samples, how many are JPEG and how many of those are the source's own bytes, the median stored image
bytes per sample, the median ratio of stored bytes to the source image file's bytes, and what the same images
cost as PNG (the previous format) — measured side by side in this run: each stored image is decoded and
encoded as PNG at the build's level. For a JPEG kept as the source's bytes the decoded pixels are exactly what
the previous code encoded, so that PNG size is exact; for a re-encoded JPEG it is the PNG of the decoded
JPEG, close to it.
"""

from __future__ import annotations

import io
import shutil
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import save_result
from medpclip.corpus.build import build_corpus
from medpclip.corpus.encoding import encode_png, image_member
from medpclip.corpus.sample import SampleParams
from medpclip.corpus.shards import iter_samples
from medpclip.demo import write_demo_data
from medpclip.specs import resolve_specs
from medpclip.warehouse import query


def main(max_side: int = 512) -> dict:
    """The demo at ``max_side`` (the polyps keep their size: JPEG as the source's bytes), and demo_polyp again
    at 128 px (every photograph resized: JPEG re-encoded at quality 95)."""
    work = Path(tempfile.mkdtemp(prefix="medpclip-storage-"))
    try:
        raw = work / "raw"
        write_demo_data(raw)
        result = {"max_side": max_side, "by_modality": {}}
        for names, side, suffix in (
            ("demo_ct,demo_polyp,demo_cxr", max_side, ""),
            ("demo_polyp", 128, " (resized to 128)"),
        ):
            out = work / f"corpus-{side}"
            build_corpus(resolve_specs(names), raw, out, max_side=side, num_cpus=1)
            for modality, r in _measure(raw, out).items():
                result["by_modality"][modality + suffix] = r
        save_result("storage", result)
        print(
            "| modality | samples | JPEG (source bytes) | stored B/sample | as PNG B/sample | stored / source | PNG / source |"
        )
        for m, r in result["by_modality"].items():
            print(
                f"| {m} | {r['samples']} | {r['jpeg']} ({r['jpeg_source_bytes']}) | {r['median_stored_bytes']:,} | "
                f"{r['median_png_bytes']:,} | {r['median_stored_over_source']} (max {r['max_stored_over_source']}) | "
                f"{r['median_png_over_source']} |"
            )
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure(raw: Path, out: Path) -> dict[str, dict]:
    _, rows = query(out, "SELECT key, modality, source_path FROM samples")
    source_of = {key: (modality, raw / path) for key, modality, path in rows}
    per: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    level = SampleParams().png_compress_level
    for shard in sorted((out / "shards").rglob("*.tar")):
        for key, members in iter_samples(shard):
            modality, source = source_of[key]
            ext, data = image_member(members)
            pixels = np.asarray(Image.open(io.BytesIO(data)))
            src = source.read_bytes()
            d = per[modality]
            d["ext"].append(ext)
            d["own_bytes"].append(ext == "jpg" and _scan(data) == _scan(src))
            d["stored"].append(len(data))
            d["png"].append(len(encode_png(pixels, level)))
            d["source"].append(len(src))
    found = {}
    for modality, d in sorted(per.items()):
        stored_ratio = [s / src for s, src in zip(d["stored"], d["source"], strict=True)]
        png_ratio = [p / src for p, src in zip(d["png"], d["source"], strict=True)]
        found[modality] = {
            "samples": len(d["ext"]),
            "jpeg": d["ext"].count("jpg"),
            "jpeg_source_bytes": sum(d["own_bytes"]),
            "median_stored_bytes": int(statistics.median(d["stored"])),
            "median_png_bytes": int(statistics.median(d["png"])),
            "median_stored_over_source": round(statistics.median(stored_ratio), 3),
            "median_png_over_source": round(statistics.median(png_ratio), 3),
            "max_stored_over_source": round(max(stored_ratio), 3),
        }
    return found


def _scan(jpeg: bytes) -> bytes:
    """The entropy-coded data from the first SOS on: what stays the same when only metadata is removed."""
    at = jpeg.find(b"\xff\xda")
    return jpeg[at:] if at >= 0 else b""


if __name__ == "__main__":
    main()
