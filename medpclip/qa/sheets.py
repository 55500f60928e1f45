"""Contact sheets: a seeded grid of samples of one dataset and split, each tile drawn with its regions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from medpclip.corpus.inspect import read_samples
from medpclip.qa.overlay import draw_regions

TILE = 192
CAPTION = 14


def choose_keys(keys: list[str], n: int, seed: int) -> list[str]:
    """``n`` keys chosen with a seeded generator from the sorted keys (same corpus, same seed, same sheet)."""
    ordered = sorted(keys)
    if len(ordered) <= n:
        return ordered
    picks = np.random.default_rng(seed).choice(len(ordered), size=n, replace=False)
    return [ordered[i] for i in sorted(picks)]


def contact_sheet(corpus: Path, shard_keys: list[tuple[str, str]], columns: int = 4) -> Image.Image:
    """Tiles of ``TILE`` px (regions drawn, aspect kept, letterboxed) with each sample's key under it."""
    samples = read_samples(corpus, shard_keys)
    keys = [k for _, k in shard_keys if k in samples]
    rows = max(1, -(-len(keys) // columns))
    sheet = Image.new("RGB", (columns * TILE, rows * (TILE + CAPTION)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for i, key in enumerate(keys):
        image, record = samples[key]
        tile = draw_regions(image, record["regions"])
        tile.thumbnail((TILE, TILE), Image.Resampling.LANCZOS)
        x, y = (i % columns) * TILE, (i // columns) * (TILE + CAPTION)
        sheet.paste(tile, (x + (TILE - tile.width) // 2, y + (TILE - tile.height) // 2))
        label = key if len(key) <= 34 else key[:15] + "…" + key[-18:]
        draw.text((x + 3, y + TILE + 1), label, fill=(220, 220, 220))
    return sheet
