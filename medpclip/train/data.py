"""Shards → batches of images, captions and region prompts, for training and evaluation.

The pipeline (webdataset over the corpus's tar shards, nothing else to prepare):

    per dataset: ResampledShards (seeded per rank and loader worker: each reads its own shard stream)
                 → tar samples
    → weighted mix of the datasets (weights = sample counts unless given)  → shuffle buffer
    → sample: decode PNG + record, pick ≤ R regions, pick each region's prompt kind, augment image and
      prompts with ONE geometric map (so prompts stay on their pixels)
    → batch: uint8 images (B, 3, S, S), prompt tensors, tokenised captions and region texts, concept labels

Grey images (CT, MR, radiographs) stay one channel through warp and intensity jitter and are repeated into
the three channels at collation, so an ``Example.image`` is (S, S) or (S, S, 3). The image warp is PIL's
``resize`` over the view's window (bilinear, antialiased when it shrinks the source); masks take the
source pixel under each output pixel's centre, the same sampling points (``View.source_axis``). Token ids
are cached per text in each loader worker (region texts are templated, so nearly all are repeats).

Region prompts follow the corpus rules (DESIGN §4, docs/FORMATS.md): a region given as a mask may be
prompted by its mask, its box or its points; a box region by its box or its centre point; a point region
by its point. Kinds are drawn with configurable ratios among those a region allows. Boxes are the tight
box of the mask, jittered at training time (each edge by up to ``box_jitter`` × the box side); points are
the record's (first positive = most interior pixel, the others from the central half, negatives outside
near the region), a random subset of them; after augmentation every positive is checked to lie inside the
region and every negative outside, and a region whose prompt no longer fits (cropped out) is left out of
that sample. Everything is counted: each batch carries the counts since the previous batch of the same
loader worker (samples read, bad samples by reason, regions used and dropped by reason), and every new
kind of problem is logged. Bad data never stops training and never vanishes.

All randomness comes from generators seeded by (seed, start step, rank, loader worker): no global RNG.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import io
import json
import logging
import math
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from scipy import ndimage
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from medpclip.corpus.encoding import image_member
from medpclip.model.prompt_encoder import KIND_INDEX, KINDS, NO_REGION, RegionPrompts
from medpclip.regions import decode_rle
from medpclip.storage import corpus_path, location_str, register_webdataset_schemes

log = logging.getLogger("medpclip.train.data")


class DataError(ValueError):
    """The corpus has nothing to read for the request (no shards for the split / datasets)."""


@dataclass
class DataConfig:
    image_size: int = 224
    max_regions: int = 4  # R: region slots per image
    max_points: int = 8  # P: point slots per region prompt
    kind_ratios: dict[str, float] = field(default_factory=lambda: {"mask": 0.4, "box": 0.3, "point": 0.3})
    box_jitter: float = 0.1  # each box edge moves by up to this fraction of the box's side (training)
    crop_scale: tuple[float, float] = (0.6, 1.0)  # random resized crop: area fraction of the square canvas
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.0  # off by default: laterality ("left kidney") is part of the text
    vflip: float = 0.0
    intensity: float = 0.1  # brightness and contrast jitter (fraction)
    shuffle_buffer: int = 256
    dataset_weights: dict[str, float] | None = None  # None: proportional to the datasets' sample counts

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataConfig:
        d = dict(d)
        for k in ("crop_scale", "crop_ratio"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


# --- corpus shards -----------------------------------------------------------------------------------------


def shard_lists(
    corpus: Path, splits: str | list[str], datasets: list[str] | None = None
) -> dict[str, tuple[list[str], int]]:
    """{dataset: (shard paths, sample count)} of the corpus for the given split(s), from ``sizes.json``. A
    corpus in object storage gives ``s3://…`` URLs, which webdataset opens through fsspec."""
    corpus = corpus_path(corpus)
    if not isinstance(corpus, Path):
        register_webdataset_schemes()
    sizes_path = corpus / "sizes.json"
    if not sizes_path.is_file():
        raise DataError(
            f"'{location_str(corpus)}' is not a corpus (no sizes.json; run `medpclip build` first)"
        )
    sizes = json.loads(sizes_path.read_text(encoding="utf-8"))
    wanted = {splits} if isinstance(splits, str) else set(splits)
    out: dict[str, tuple[list[str], int]] = {}
    for rel, n in sorted(sizes.items()):
        dataset, split, _name = rel.split("/", 2)
        if split not in wanted or (datasets and dataset not in datasets) or n == 0:
            continue
        urls, total = out.get(dataset, ([], 0))
        out[dataset] = ([*urls, location_str(corpus / "shards" / rel)], total + n)
    if not out:
        raise DataError(
            f"no {'/'.join(sorted(wanted))} shards in '{location_str(corpus)}'"
            + (f" for datasets {','.join(datasets)}" if datasets else "")
        )
    return out


def stable_id(text: str) -> int:
    """A label id that is the same in every process (63 bits, never the loss's IGNORE)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little") >> 1


def concept_of(region: dict) -> str:
    """What makes two regions 'the same' for the loss: the knowledge base's concept id (a CUI or a
    ``MEDP:`` id), else the CUI, else the coarse category."""
    concept = region.get("concept_id") or region.get("cui")
    return concept or f"category:{(region.get('category') or region.get('name') or '').lower()}"


# --- counting --------------------------------------------------------------------------------------------


class DataStats:
    """Counters of one loader worker; each batch takes the counts since the previous one (``take``)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._seen_reasons: set[str] = set()

    def add(self, name: str, n: int = 1, detail: str = "") -> None:
        self.counts[name] += n
        if name.startswith(("bad_", "dropped_")) and name not in self._seen_reasons:
            self._seen_reasons.add(name)
            log.warning("data: %s (first occurrence%s)", name, f": {detail}" if detail else "")

    def tar_error(self, exn: Exception) -> bool:
        """webdataset handler: count and log, then continue with the next sample/shard."""
        self.add("bad_tar", detail=f"{type(exn).__name__}: {exn}")
        return True

    def take(self) -> dict[str, int]:
        out = dict(self.counts)
        self.counts.clear()
        return out


# --- geometry: one map for image, masks, boxes and points ----------------------------------------------------


@dataclass(frozen=True)
class View:
    """The window of the source image that becomes the S×S output, and the flips after it.

    Source continuous coordinates (pixel i spans [i, i+1)) map to output ones by
    ``u = (x - x0) · S / w`` (then ``S - u`` if flipped), likewise for y. The warps sample the source at
    the inverse of this map (:meth:`source_axis`), so image, masks, boxes and points share one map."""

    x0: float
    y0: float
    w: float
    h: float
    size: int
    hflip: bool = False
    vflip: bool = False

    def map_xy(self, xy: np.ndarray) -> np.ndarray:
        u = (xy[..., 0] - self.x0) * self.size / self.w
        v = (xy[..., 1] - self.y0) * self.size / self.h
        if self.hflip:
            u = self.size - u
        if self.vflip:
            v = self.size - v
        return np.stack([u, v], axis=-1)

    def map_box(self, box) -> tuple[float, float, float, float]:
        (u0, v0), (u1, v1) = self.map_xy(np.array([[box[0], box[1]], [box[2], box[3]]], dtype=np.float64))
        return min(u0, u1), min(v0, v1), max(u0, u1), max(v0, v1)

    def source_axis(self, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """Before the flips, along x (0) or y (1): the source coordinate of every output pixel's centre
        (S,) and of every output pixel edge (S + 1,), the inverse of :meth:`map_xy`."""
        start, extent = (self.x0, self.w) if axis == 0 else (self.y0, self.h)
        step = extent / self.size
        edges = start + np.arange(self.size + 1) * step
        return start + (np.arange(self.size) + 0.5) * step, edges

    def warp(self, img: Image.Image) -> np.ndarray:
        """The 8-bit image (L or RGB) bilinearly resampled, antialiased where the view shrinks it; output
        pixels whose centre falls off the source are 0 (the letterbox), as with ``transform(EXTENT)``."""
        s = self.size
        (cx, ex), (cy, ey) = self.source_axis(0), self.source_axis(1)
        (ax, bx, fx, gx), (ay, by, fy, gy) = _spans(cx, ex, img.width), _spans(cy, ey, img.height)
        if fx >= gx or fy >= gy:  # no output pixel wholly on the source (a sliver of it in view): rare
            out = img.transform((s, s), Image.EXTENT, (ex[0], ey[0], ex[s], ey[s]), Image.BILINEAR)
        elif (ax, bx, ay, by) == (fx, gx, fy, gy) == (0, s, 0, s):  # the common crop inside the image
            out = img.resize((s, s), Image.BILINEAR, box=(ex[0], ey[0], ex[s], ey[s]))
        else:
            # resize() is ~3× faster than transform() (separable, fixed point) but needs its box on the
            # source: it makes the pixels wholly on the source, transform() the ≤ 1-pixel rims around
            # them whose centre is still on it (edge-clamped bilinear, as before), the rest stays 0
            out = Image.new(img.mode, (s, s))
            box = (ex[fx], ey[fy], ex[gx], ey[gy])
            out.paste(img.resize((gx - fx, gy - fy), Image.BILINEAR, box=box), (fx, fy))
            rims = ((ax, fx, ay, by), (gx, bx, ay, by), (ax, bx, ay, fy), (ax, bx, gy, by))
            for u0, u1, v0, v1 in rims:
                if u0 < u1 and v0 < v1:
                    extent = (ex[u0], ey[v0], ex[u1], ey[v1])
                    rim = img.transform((u1 - u0, v1 - v0), Image.EXTENT, extent, Image.BILINEAR)
                    out.paste(rim, (u0, v0))
        arr = np.asarray(out)
        if self.hflip:
            arr = arr[:, ::-1]
        if self.vflip:
            arr = arr[::-1]
        return np.ascontiguousarray(arr)

    def warp_mask(self, mask: np.ndarray) -> np.ndarray:
        """A boolean source mask (H, W) sampled at the source pixel under each output pixel's centre (the
        image's sampling points), False off the source."""
        rows, row_on = _nearest(self, 1, mask.shape[0])
        cols, col_on = _nearest(self, 0, mask.shape[1])
        # columns first: faster for both layouts, and decoded RLE masks are column-major
        out = mask.take(cols, axis=1).take(rows, axis=0)
        out[~row_on] = False
        out[:, ~col_on] = False
        return out


def _spans(centres: np.ndarray, edges: np.ndarray, n: int) -> tuple[int, int, int, int]:
    """Along one axis of a warp onto ``n`` source pixels: output pixels [a, b) have their centre on the
    source, [f, g) ⊆ [a, b) their whole footprint (so [a, f) and [g, b) are at most one pixel each)."""
    on = np.flatnonzero((centres >= 0) & (centres < n))
    whole = np.flatnonzero((edges[:-1] >= 0) & (edges[1:] <= n))
    if not len(on):
        return 0, 0, 0, 0
    a, b = int(on[0]), int(on[-1]) + 1
    return (a, b, int(whole[0]), int(whole[-1]) + 1) if len(whole) else (a, b, 0, 0)


@functools.lru_cache(maxsize=16)  # a sample's masks share its view (evaluation: all same-sized images)
def _nearest(view: View, axis: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """In output order (flipped), along one axis: the source index under each output pixel's centre
    (clipped, for take) and whether that centre is on the source."""
    centres = view.source_axis(axis)[0]
    on = (centres >= 0) & (centres < n)
    index = np.clip(np.floor(centres), 0, n - 1).astype(np.intp)
    flip = view.hflip if axis == 0 else view.vflip
    return (index[::-1], on[::-1]) if flip else (index, on)


def full_view(width: int, height: int, size: int) -> View:
    """The whole image, letterboxed into a square (evaluation)."""
    side = max(width, height)
    return View((width - side) / 2, (height - side) / 2, side, side, size)


def random_view(width: int, height: int, cfg: DataConfig, rng: np.random.Generator) -> View:
    """A random resized crop of the letterboxed square, then the configured flips."""
    side = max(width, height)
    area = side * side * rng.uniform(*cfg.crop_scale)
    ratio = math.exp(rng.uniform(math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])))
    w = min(side, math.sqrt(area * ratio))
    h = min(side, math.sqrt(area / ratio))
    cx0, cy0 = (width - side) / 2, (height - side) / 2
    x0 = cx0 + rng.uniform(0, side - w)
    y0 = cy0 + rng.uniform(0, side - h)
    return View(x0, y0, w, h, cfg.image_size, bool(rng.random() < cfg.hflip), bool(rng.random() < cfg.vflip))


# --- one sample --------------------------------------------------------------------------------------------


@dataclass
class Prompt:
    """One region's prompt in output pixels (S×S), plus what the losses and the evaluation need."""

    kind: str
    mask: np.ndarray | None = None  # (S, S) bool, kind mask
    box: tuple[float, float, float, float] | None = None  # output pixels, exclusive max
    points: np.ndarray | None = None  # (k, 2) output pixels (continuous)
    point_labels: np.ndarray | None = None  # (k,) 1 / 0
    text: str = ""
    concept: str = ""
    rid: int = -1
    region_mask: np.ndarray | None = None  # the region's own mask after augmentation (when asked for)


@dataclass
class Example:
    key: str
    dataset: str
    image: np.ndarray  # uint8 (S, S) grey or (S, S, 3) RGB; collate makes both 3-channel
    caption: str
    prompts: list[Prompt]
    record: dict


def decode_image(data: bytes) -> Image.Image:
    """The sample's PNG or JPEG as 8-bit grey (L) or RGB. Grey (CT, MR, radiographs) stays one channel through
    warp and jitter, a third of the work; ``collate`` repeats it into the three channels the model takes."""
    img = Image.open(io.BytesIO(data))
    img.load()
    return img if img.mode in ("L", "RGB") else img.convert("RGB")


def _allowed_kinds(region: dict) -> list[str]:
    if region.get("mask_rle"):
        return ["mask", "box", "point"]
    if region.get("kind") == "box" or region.get("bbox"):
        return ["box", "point"]
    return ["point"]


def _cdf(weights) -> list[float] | None:
    """Cumulative distribution for :func:`_draw`, built as ``Generator.choice`` builds it (None: all 0)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.sum() <= 0:
        return None
    cdf = np.cumsum(w / w.sum())
    return (cdf / cdf[-1]).tolist()


def _draw(cdf: list[float], rng: np.random.Generator) -> int:
    """``rng.choice(len(p), p=p)``'s draw (one uniform, searched in the same cdf), so streams are the ones
    ``choice`` gives, without its ~20 µs of per-call checks, paid several times per sample."""
    return bisect.bisect_right(cdf, rng.random())


@functools.lru_cache(maxsize=64)
def _kind_cdf(allowed: tuple[str, ...], ratios: tuple[tuple[str, float], ...]) -> list[float] | None:
    r = dict(ratios)
    return _cdf([max(0.0, float(r.get(k, 0.0))) for k in allowed])


def _pick_kind(allowed: list[str], ratios: dict[str, float], rng: np.random.Generator) -> str | None:
    cdf = _kind_cdf(tuple(allowed), tuple(sorted(ratios.items())))
    return None if cdf is None else allowed[_draw(cdf, rng)]


def _central_point(mask: np.ndarray, rng: np.random.Generator | None) -> np.ndarray | None:
    """A pixel from the central half of the mask (distance transform ≥ median), DESIGN §4's rule; the most
    interior one without an rng. Returned as a continuous (x, y) pixel centre."""
    if not mask.any():
        return None
    dist = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    if rng is None:
        y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    else:
        inside = dist[mask]
        ys, xs = np.nonzero(mask & (dist >= np.median(inside)))
        i = int(rng.integers(len(ys)))
        y, x = ys[i], xs[i]
    return np.array([x + 0.5, y + 0.5])


class SampleMaker:
    """Record + PNG → :class:`Example`: region choice, prompt kinds, augmentation, all seeded by ``rng``."""

    def __init__(self, cfg: DataConfig, train: bool = True, eval_kind: str = "native", keep_masks=False):
        if eval_kind not in ("native", *KINDS):
            raise ValueError(f"eval_kind must be native, mask, box or point, got {eval_kind!r}")
        self.cfg = cfg
        self.train = train
        self.eval_kind = eval_kind
        self.keep_masks = keep_masks

    def __call__(
        self, key: str, png: bytes, record: dict, rng: np.random.Generator, stats: DataStats
    ) -> Example:
        cfg = self.cfg
        img = decode_image(png)
        width, height = img.size
        view = (
            random_view(width, height, cfg, rng) if self.train else full_view(width, height, cfg.image_size)
        )
        image = view.warp(img)
        if self.train and cfg.intensity > 0:
            image = _jitter_intensity(image, cfg.intensity, rng)
        regions = list(record.get("regions") or [])
        negated = [r for r in regions if r.get("negated")]
        if negated:
            stats.add("regions_negated_skipped", len(negated))
        regions = [r for r in regions if not r.get("negated")]
        if self.train and len(regions) > cfg.max_regions:
            stats.add("regions_not_sampled", len(regions) - cfg.max_regions)
            order = rng.permutation(len(regions))[: cfg.max_regions]
            regions = [regions[i] for i in order]
        prompts = []
        for region in regions:
            p = self._prompt(region, view, (height, width), rng, stats)
            if p is not None:
                prompts.append(p)
        stats.add("samples")
        stats.add("regions_used", len(prompts))
        return Example(key, record.get("dataset", ""), image, record.get("caption") or "", prompts, record)

    def _prompt(self, region, view: View, hw, rng, stats: DataStats) -> Prompt | None:
        cfg = self.cfg
        allowed = _allowed_kinds(region)
        if self.train:
            kind = _pick_kind(allowed, cfg.kind_ratios, rng)
        elif self.eval_kind == "native":
            kind = allowed[0]
        else:
            kind = self.eval_kind if self.eval_kind in allowed else None
        if kind is None:
            stats.add("regions_kind_unavailable")
            return None
        texts = region.get("texts") or [region.get("name") or region.get("label") or ""]
        text = texts[int(rng.integers(len(texts)))] if self.train else texts[0]
        p = Prompt(kind=kind, text=text, concept=concept_of(region), rid=int(region.get("rid", -1)))
        mask = None
        if region.get("mask_rle") and (kind in ("mask", "point") or self.keep_masks):
            try:
                src = decode_rle(region["mask_rle"])
                if src.shape != hw:
                    raise ValueError(f"mask {src.shape} on image {hw}")
            except Exception as e:  # noqa: BLE001 — any broken RLE is the same data error
                stats.add("dropped_bad_rle", detail=f"{region.get('label')}: {e}")
                return None
            mask = view.warp_mask(src)
            if not mask.any():
                stats.add("dropped_cropped_out")
                return None
        if self.keep_masks:
            p.region_mask = mask
        if kind == "mask":
            p.mask = mask
        elif kind == "box":
            x0, y0, x1, y1 = (float(v) for v in region["bbox"])
            if self.train and cfg.box_jitter > 0:
                w, h = x1 - x0, y1 - y0
                j = rng.uniform(-cfg.box_jitter, cfg.box_jitter, size=4)
                x0, x1 = x0 + j[0] * w, x1 + j[2] * w
                y0, y1 = y0 + j[1] * h, y1 + j[3] * h
            u0, v0, u1, v1 = view.map_box((x0, y0, x1, y1))
            s = view.size
            u0, v0, u1, v1 = max(0.0, u0), max(0.0, v0), min(float(s), u1), min(float(s), v1)
            if u1 - u0 < 1 or v1 - v0 < 1:
                stats.add("dropped_cropped_out")
                return None
            p.box = (u0, v0, u1, v1)
        else:
            pts = self._points(region, mask, view, rng, stats)
            if pts is None:
                return None
            p.points, p.point_labels = pts
        return p

    def _points(self, region, mask, view: View, rng, stats: DataStats):
        cfg = self.cfg
        pts = np.asarray(region.get("points") or [], dtype=np.float64).reshape(-1, 2) + 0.5
        labels = np.asarray(region.get("point_labels") or [1] * len(pts), dtype=np.int64)
        pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
        if self.train:  # a random subset: 1..all positives, 0..all negatives
            pos = rng.permutation(pos)[: int(rng.integers(1, len(pos) + 1))] if len(pos) else pos
            neg = rng.permutation(neg)[: int(rng.integers(0, len(neg) + 1))] if len(neg) else neg
        chosen = np.concatenate([pos, neg])[: cfg.max_points]
        uv = view.map_xy(pts[chosen]) if len(chosen) else np.zeros((0, 2))
        lab = labels[chosen]
        s = view.size
        keep = (uv[:, 0] >= 0) & (uv[:, 0] < s) & (uv[:, 1] >= 0) & (uv[:, 1] < s)
        if mask is not None:  # positives inside the (augmented) region, negatives outside it
            col = np.clip(uv[:, 0].astype(int), 0, s - 1)
            row = np.clip(uv[:, 1].astype(int), 0, s - 1)
            inside = mask[row, col]
            keep &= np.where(lab == 1, inside, ~inside)
        if (~keep).any():
            stats.add("points_dropped_after_augmentation", int((~keep).sum()))
        uv, lab = uv[keep], lab[keep]
        if not (lab == 1).any():
            centre = _central_point(mask, rng if self.train else None) if mask is not None else None
            if centre is None:
                stats.add("dropped_cropped_out")
                return None
            stats.add("points_resampled")
            uv = np.concatenate([centre[None], uv])[: cfg.max_points]
            lab = np.concatenate([[1], lab])[: cfg.max_points]
        return uv, lab


def _jitter_intensity(image: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Contrast about the mean and brightness, on uint8. The map depends on a pixel's value only, so it is
    a 256-entry table: one lookup per pixel instead of float32 arithmetic on the whole image."""
    contrast = 1.0 + rng.uniform(-amount, amount)
    brightness = rng.uniform(-amount, amount) * 255
    mean = image.mean()
    lut = (np.arange(256, dtype=np.float32) - mean) * contrast + mean + brightness
    return np.clip(lut, 0, 255).round().astype(np.uint8).take(image)


# --- collation -----------------------------------------------------------------------------------------------


class TokenCache:
    """``tokenizer(texts)`` with each distinct text tokenised once while it stays among the ``max_size``
    most recent: region texts are templated (a few hundred strings over all regions), so nearly every one
    is a hit. Needs a tokenizer whose rows do not depend on the rest of the batch (open_clip's pad every
    text to the context length)."""

    def __init__(self, tokenizer: Callable, max_size: int = 4096):
        self.tokenizer = tokenizer
        self.max_size = max_size
        self._rows: OrderedDict[str, torch.Tensor] = OrderedDict()

    def __call__(self, texts: list[str]) -> torch.Tensor:
        if not texts:
            return self.tokenizer(texts)
        rows = self._rows
        missing = [t for t in dict.fromkeys(texts) if t not in rows]
        if missing:
            for text, row in zip(missing, self.tokenizer(missing), strict=True):
                rows[text] = row.clone()  # not a view: would keep the whole batch tensor alive
        out = []
        for text in texts:
            rows.move_to_end(text)
            out.append(rows[text])
        while len(rows) > self.max_size:
            rows.popitem(last=False)
        return torch.stack(out)


def collate(
    examples: list[Example], tokenizer: Callable, max_regions: int, max_points: int, size: int
) -> dict[str, Any]:
    """Examples → tensors. Region slots beyond an image's regions are padding (kind -1)."""
    b = len(examples)
    r = max(1, max((len(e.prompts) for e in examples), default=1)) if max_regions <= 0 else max_regions
    kinds = torch.full((b, r), NO_REGION, dtype=torch.long)
    masks = torch.zeros(b, r, size, size, dtype=torch.uint8)
    masks_np = masks.numpy()  # numpy writes cast bool → uint8 in place, no temporary per mask
    boxes = torch.zeros(b, r, 4)
    points = torch.zeros(b, r, max_points, 2)
    point_labels = torch.full((b, r, max_points), -1, dtype=torch.long)
    region_texts, region_labels, region_meta = [], [], []
    for i, e in enumerate(examples):
        for j, p in enumerate(e.prompts[:r]):
            kinds[i, j] = KIND_INDEX[p.kind]
            if p.mask is not None:
                masks_np[i, j] = p.mask
            if p.box is not None:
                boxes[i, j] = torch.tensor(p.box) / size
            if p.points is not None:
                k = min(len(p.points), max_points)
                points[i, j, :k] = torch.from_numpy(p.points[:k] / size).float()
                point_labels[i, j, :k] = torch.from_numpy(p.point_labels[:k])
            region_texts.append(p.text)
            region_labels.append(stable_id(p.concept))
            region_meta.append({"key": e.key, "rid": p.rid, "concept": p.concept})
    images = torch.empty(b, 3, size, size, dtype=torch.uint8)
    images_np = images.numpy()
    for i, e in enumerate(examples):  # channels-first in one copy; a grey image fills all three
        images_np[i] = e.image if e.image.ndim == 2 else e.image.transpose(2, 0, 1)
    captions = [e.caption for e in examples]
    caption_tokens = tokenizer(captions)
    return {
        "images": images,  # uint8 (B, 3, S, S); normalised on the device (see MedPCLIP.preprocess)
        "prompts": {
            "kinds": kinds,
            "masks": masks,
            "boxes": boxes,
            "points": points,
            "point_labels": point_labels,
        },
        "caption_tokens": caption_tokens,
        "caption_labels": torch.tensor([stable_id(c) for c in captions], dtype=torch.long),
        "region_tokens": tokenizer(region_texts) if region_texts else caption_tokens[:0],
        "region_labels": torch.tensor(region_labels, dtype=torch.long),
        "region_meta": region_meta,
        "keys": [e.key for e in examples],
        "datasets": [e.dataset for e in examples],
    }


def prompts_of(batch: dict[str, Any], device=None) -> RegionPrompts:
    p = RegionPrompts(**batch["prompts"])
    return p.to(device, non_blocking=True) if device is not None else p


# --- the streaming pipeline ------------------------------------------------------------------------------------


def _seed(*parts) -> int:
    return stable_id("/".join(str(p) for p in parts)) & 0x7FFFFFFF


def _worker_id() -> tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def _shard_worker_seed(rank: int) -> int:
    """ResampledShards' per-worker seed: distinct for every (rank, loader worker) = split by node and worker."""
    return rank * 1000 + _worker_id()[0]


class TrainStream(IterableDataset):
    """Endless, resampled, weighted mix of the datasets' shards → collated batches (``batch_size`` each)."""

    def __init__(
        self,
        shards: dict[str, tuple[list[str], int]],
        cfg: DataConfig,
        tokenizer: Callable,
        batch_size: int,
        seed: int,
        rank: int = 0,
        start_step: int = 0,
    ):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = TokenCache(tokenizer)  # one per loader worker (the dataset is copied into each)
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.start_step = start_step
        weights = cfg.dataset_weights
        self.datasets = sorted(d for d in shards if weights is None or weights.get(d, 0) > 0)
        if not self.datasets:
            raise DataError("every dataset has weight 0")
        self.urls = {d: shards[d][0] for d in self.datasets}
        w = np.array([shards[d][1] if weights is None else weights[d] for d in self.datasets], dtype=float)
        self.cdf = _cdf(w)
        self.maker = SampleMaker(cfg, train=True)
        self.stats = DataStats()

    def _samples(self, dataset_index: int) -> Iterator[dict]:
        d = self.datasets[dataset_index]
        shards = wds.ResampledShards(
            self.urls[d],
            seed=_seed(self.seed, self.start_step, d),
            worker_seed=functools.partial(_shard_worker_seed, self.rank),
            deterministic=True,
        )
        return iter(wds.DataPipeline(shards, wds.tarfile_to_samples(handler=self.stats.tar_error)))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, _ = _worker_id()
        rng = np.random.default_rng([self.seed, self.start_step, self.rank, worker])
        sources = [self._samples(i) for i in range(len(self.datasets))]
        buffer: list[dict] = []
        batch: list[Example] = []
        while True:
            i = _draw(self.cdf, rng)
            raw = next(sources[i])  # resampled: never ends
            buffer.append(raw)
            if len(buffer) < self.cfg.shuffle_buffer:
                continue
            raw = buffer.pop(int(rng.integers(len(buffer))))
            example = self._make(raw, rng)
            if example is None:
                continue
            batch.append(example)
            if len(batch) == self.batch_size:
                out = collate(
                    batch, self.tokenizer, self.cfg.max_regions, self.cfg.max_points, self.cfg.image_size
                )
                out["stats"] = self.stats.take()
                yield out
                batch = []

    def _make(self, raw: dict, rng: np.random.Generator) -> Example | None:
        key = raw.get("__key__", "?")
        try:
            record = json.loads(raw["json"])
            return self.maker(key, image_member(raw)[1], record, rng, self.stats)
        except Exception as e:  # noqa: BLE001 — a broken sample is counted and logged, never fatal
            self.stats.add(f"bad_sample_{type(e).__name__}", detail=f"{key}: {e}")
            return None


def train_loader(
    corpus: Path,
    cfg: DataConfig,
    tokenizer: Callable,
    batch_size: int,
    seed: int,
    rank: int = 0,
    start_step: int = 0,
    num_workers: int = 1,
    pin_memory: bool = False,
    datasets: list[str] | None = None,
) -> DataLoader:
    """Batches for pre-training from the corpus's train split (endless)."""
    stream = TrainStream(
        shard_lists(corpus, "train", datasets), cfg, tokenizer, batch_size, seed, rank, start_step
    )
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
    )


def iter_examples(
    corpus: Path,
    splits: str | list[str],
    cfg: DataConfig,
    datasets: list[str] | None = None,
    eval_kind: str = "native",
    stats: DataStats | None = None,
    keep_masks: bool = False,
) -> Iterator[Example]:
    """Every sample of the split(s) once, in shard order, un-augmented (evaluation). Split by node and
    loader worker (webdataset's splitters), so a distributed evaluation reads each sample exactly once."""
    stats = stats if stats is not None else DataStats()
    maker = SampleMaker(cfg, train=False, eval_kind=eval_kind, keep_masks=keep_masks)
    rng = np.random.default_rng(0)  # unused by the deterministic path; passed for the signature
    for dataset, (urls, _n) in shard_lists(corpus, splits, datasets).items():
        pipeline = wds.DataPipeline(
            wds.SimpleShardList(urls),
            wds.split_by_node,
            wds.split_by_worker,
            wds.tarfile_to_samples(handler=stats.tar_error),
        )
        for raw in pipeline:
            key = raw.get("__key__", "?")
            try:
                record = json.loads(raw["json"])
                yield maker(key, image_member(raw)[1], record, rng, stats)
            except Exception as e:  # noqa: BLE001
                stats.add(f"bad_sample_{type(e).__name__}", detail=f"{dataset} {key}: {e}")
