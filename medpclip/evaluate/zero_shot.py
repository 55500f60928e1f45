"""Zero-shot evaluation of a MedP-CLIP checkpoint on a corpus split (``medpclip eval``, the ``evaluate`` flow).

Per dataset of the split, from the un-augmented images (letterboxed to the model's input size):

- ``region_cls``: each region, given by its prompt, against text embeddings of the dataset's region
  categories (templates averaged). ``top1`` and ``balanced_acc`` with the region's own prompt kind (mask for
  mask regions, box for box regions), ``top1_box`` / ``top1_point`` with the same regions prompted by their
  box / their points, and ``top1_shuffled_prompts``: the same regions with the prompts shuffled between them
  (a derangement within each batch). The last one is the control: if prompts matter, it falls to chance.
  Per category, ``top1:{category}`` (and ``top1_box:…``, ``top1_point:…``): the share of that category's
  regions classified right (its ``n``), so that classes of different difficulty can be told apart (the
  region-mode benchmark groups them).
- ``image_cls``: the image embedding against the dataset's image labels (``image_labels``, e.g. ChestX-ray14
  findings) or, for datasets without them, the region categories present in the image (multi-label):
  macro ``auc`` (chance 0.5) and ``top1`` over single-label images (chance 1/K).
- ``retrieval_i2t`` / ``retrieval_t2i``: images against their captions; ``retrieval_r2t`` / ``retrieval_t2r``:
  regions against their texts. Identical texts are one gallery item and every item with the query's text
  is a positive, so R@k is well defined with duplicates; ``chance`` is computed exactly for each query.

Rows ``run_id, checkpoint, region_mode, task, dataset, split, metric, value, n, chance`` are written to
``CORPUS/metrics/{run_id}-{step}-{split}[-{datasets}].parquet``, next to the manifests of the corpus they
were measured on (the corpus's ``metrics`` view; re-evaluating the same checkpoint replaces its file).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from medpclip.evaluate.metrics import balanced_accuracy, macro_auc, recall_at_k, top1
from medpclip.storage import corpus_path, filesystem, location_str, resolved
from medpclip.train.data import DataConfig, DataStats, Example, collate, iter_examples, prompts_of

log = logging.getLogger("medpclip.evaluate")
REGION_TEMPLATES = ("{}", "a segmentation area of the {}")
IMAGE_TEMPLATES = ("{}", "a medical image showing {}")
PROMPT_KINDS = ("native", "box", "point")
TASKS = ("image_cls", "region_cls", "retrieval_i2t", "retrieval_t2i", "retrieval_r2t", "retrieval_t2r")
COLUMNS = (
    "run_id",
    "checkpoint",
    "region_mode",
    "task",
    "dataset",
    "split",
    "metric",
    "value",
    "n",
    "chance",
)
SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("checkpoint", pa.string()),
        ("region_mode", pa.string()),
        ("task", pa.string()),
        ("dataset", pa.string()),
        ("split", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("n", pa.int64()),
        ("chance", pa.float64()),
    ]
)


@dataclass
class MetricRow:
    run_id: str
    checkpoint: str
    region_mode: str
    task: str
    dataset: str
    split: str
    metric: str
    value: float
    n: int
    chance: float


@dataclass
class EvalResult:
    rows: list[MetricRow]
    path: Path | None
    checkpoint: str
    run_id: str
    step: int
    data_counts: dict[str, int] = field(default_factory=dict)

    def value(self, task: str, metric: str, dataset: str) -> MetricRow:
        for r in self.rows:
            if (r.task, r.metric, r.dataset) == (task, metric, dataset):
                return r
        raise KeyError(f"no {task}/{metric} for {dataset}")


@dataclass
class Embedded:
    """One dataset of the split, embedded with one prompt kind."""

    image_features: list[np.ndarray] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    image_labels: list[list[str]] = field(default_factory=list)
    image_categories: list[list[str]] = field(default_factory=list)
    region_features: list[np.ndarray] = field(default_factory=list)
    shuffled_features: list[np.ndarray] = field(default_factory=list)
    region_categories: list[str] = field(default_factory=list)
    region_texts: list[list[str]] = field(default_factory=list)

    def images(self) -> np.ndarray:
        return np.concatenate(self.image_features) if self.image_features else np.zeros((0, 1))

    def regions(self, shuffled: bool = False) -> np.ndarray:
        feats = self.shuffled_features if shuffled else self.region_features
        return np.concatenate(feats) if feats else np.zeros((0, 1))


# --- embedding -------------------------------------------------------------------------------------------


def _batches(examples: Iterable[Example], size: int) -> Iterable[list[Example]]:
    batch: list[Example] = []
    for e in examples:
        batch.append(e)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _derangement(n: int, gen: torch.Generator) -> torch.Tensor:
    """A permutation without fixed points (n ≥ 2): follow a random cycle through all n items."""
    order = torch.randperm(n, generator=gen)
    perm = torch.empty(n, dtype=torch.long)
    perm[order] = order.roll(-1)
    return perm


@torch.no_grad()
def embed_examples(
    model,
    tokenizer,
    examples: Iterable[Example],
    cfg: DataConfig,
    device,
    batch_size: int = 32,
    shuffle_seed: int | None = None,
) -> dict[str, Embedded]:
    """Image and region embeddings of every example, grouped by dataset (order kept)."""
    out: dict[str, Embedded] = {}
    gen = torch.Generator().manual_seed(shuffle_seed or 0)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if torch.device(device).type == "cuda" else None
    for chunk in _batches(examples, batch_size):
        batch = collate(chunk, tokenizer, 0, cfg.max_points, cfg.image_size)
        images = model.preprocess(batch["images"].to(device))
        prompts = prompts_of(batch, device)
        valid = prompts.valid
        index = valid.nonzero()
        flat = prompts.select(valid)
        with autocast or torch.autocast("cpu", enabled=False):
            trunk = model.trunk(images)
            img = model.image_head(trunk)
            reg = model.encode_regions(images, flat, index[:, 0], normalize=False, trunk=trunk)
            shuf = None
            if shuffle_seed is not None and len(index) > 1:
                perm = _derangement(len(index), gen).to(device)
                shuf = model.encode_regions(
                    images, flat.permuted(perm), index[:, 0], normalize=False, trunk=trunk
                )
        img = torch.nn.functional.normalize(img.float(), dim=-1).cpu().numpy()
        reg = torch.nn.functional.normalize(reg.float(), dim=-1).cpu().numpy()
        row = 0
        for i, e in enumerate(chunk):
            d = out.setdefault(e.dataset, Embedded())
            d.image_features.append(img[i : i + 1])
            d.captions.append(e.caption)
            d.image_labels.append(list(e.record.get("image_labels") or []))
            regions = e.record.get("regions") or []
            d.image_categories.append(sorted({_category(r) for r in regions if not r.get("negated")}))
            n = len(e.prompts)
            d.region_features.append(reg[row : row + n])
            if shuf is not None:
                d.shuffled_features.append(
                    torch.nn.functional.normalize(shuf[row : row + n].float(), dim=-1).cpu().numpy()
                )
            for p in e.prompts:
                r = regions[p.rid] if 0 <= p.rid < len(regions) else {}
                d.region_categories.append(_category(r))
                d.region_texts.append(list(r.get("texts") or [p.text]))
            row += n
    return out


def _category(region: dict) -> str:
    return (region.get("category") or region.get("name") or region.get("label") or "").lower()


@torch.no_grad()
def class_embeddings(model, tokenizer, names: list[str], templates: tuple[str, ...], device) -> np.ndarray:
    """(K, D): each class's template texts embedded, averaged and re-normalised."""
    texts = [t.format(n) for n in names for t in templates]
    feats = model.encode_text(tokenizer(texts).to(device)).float()
    feats = feats.view(len(names), len(templates), -1).mean(dim=1)
    return torch.nn.functional.normalize(feats, dim=-1).cpu().numpy()


# --- tasks -----------------------------------------------------------------------------------------------


def _row(task: str, metric: str, value: float, n: int, chance: float, dataset: str) -> dict:
    return {"task": task, "metric": metric, "value": float(value), "n": int(n), "chance": float(chance),
            "dataset": dataset}  # fmt: skip


def region_cls_rows(dataset: str, by_kind: dict[str, Embedded], classes: np.ndarray, names: list[str]):
    rows = []
    index = {n: i for i, n in enumerate(names)}
    k = len(names)
    for kind, emb in by_kind.items():
        cats = emb.region_categories
        keep = np.array([c in index for c in cats], dtype=bool)
        if not keep.any():
            continue
        truth = np.array([index[c] for c in cats if c in index])
        scores = emb.regions()[keep] @ classes.T
        n = int(keep.sum())
        name = "top1" if kind == "native" else f"top1_{kind}"
        hit = scores.argmax(axis=1) == truth
        for c in sorted(set(truth.tolist())):
            of_c = truth == c
            rows.append(
                _row("region_cls", f"{name}:{names[c]}", hit[of_c].mean(), int(of_c.sum()), 1 / k, dataset)
            )
        if kind == "native":
            rows.append(_row("region_cls", "top1", top1(scores, truth), n, 1 / k, dataset))
            rows.append(
                _row("region_cls", "balanced_acc", balanced_accuracy(scores, truth), n, 1 / k, dataset)
            )
            if emb.shuffled_features:
                shuf = emb.regions(shuffled=True)[keep] @ classes.T
                rows.append(_row("region_cls", "top1_shuffled_prompts", top1(shuf, truth), n, 1 / k, dataset))
        else:
            rows.append(_row("region_cls", f"top1_{kind}", top1(scores, truth), n, 1 / k, dataset))
    return rows


def image_cls_rows(dataset: str, emb: Embedded, classes: np.ndarray, names: list[str], use_labels: bool):
    index = {n: i for i, n in enumerate(names)}
    truth_sets = emb.image_labels if use_labels else emb.image_categories
    labels = np.zeros((len(truth_sets), len(names)), dtype=bool)
    for i, ts in enumerate(truth_sets):
        for t in ts:
            if _norm(t) in index:
                labels[i, index[_norm(t)]] = True
    if len(names) < 2 or not labels.any():
        return []
    scores = emb.images() @ classes.T
    rows = []
    auc, n_classes = macro_auc(scores, labels)
    if n_classes:
        rows.append(_row("image_cls", "auc", auc, len(labels), 0.5, dataset))
    single = labels.sum(axis=1) == 1
    if single.any():
        truth = labels[single].argmax(axis=1)
        rows.append(_row("image_cls", "top1", top1(scores[single], truth), int(single.sum()), 1 / len(names),
                         dataset))  # fmt: skip
    return rows


def _norm(label: str) -> str:
    return label.replace("_", " ").lower()


def retrieval_rows(dataset: str, model, tokenizer, emb: Embedded, device) -> list[dict]:
    rows = []
    captions = sorted(set(emb.captions))
    if captions and len(emb.captions):
        cap = class_embeddings(model, tokenizer, captions, ("{}",), device)
        pos = np.array([[c == g for g in captions] for c in emb.captions], dtype=bool)
        scores = emb.images() @ cap.T
        rows += _recall_rows("retrieval_i2t", dataset, scores, pos)
        rows += _recall_rows("retrieval_t2i", dataset, scores.T, pos.T)
    texts = sorted({t for ts in emb.region_texts for t in ts})
    if texts and emb.region_categories:
        tx = class_embeddings(model, tokenizer, texts, ("{}",), device)
        where = {t: j for j, t in enumerate(texts)}
        pos = np.zeros((len(emb.region_texts), len(texts)), dtype=bool)
        for i, ts in enumerate(emb.region_texts):
            pos[i, [where[t] for t in ts]] = True
        scores = emb.regions() @ tx.T
        rows += _recall_rows("retrieval_r2t", dataset, scores, pos)
        rows += _recall_rows("retrieval_t2r", dataset, scores.T, pos.T)
    return rows


def _recall_rows(task: str, dataset: str, scores: np.ndarray, positive: np.ndarray) -> list[dict]:
    n = int(positive.any(axis=1).sum())
    return [
        _row(task, f"r@{k}", value, n, chance, dataset)
        for k, (value, chance) in recall_at_k(scores, positive).items()
    ]


# --- the whole evaluation ----------------------------------------------------------------------------------


def _dataset_classes(corpus: Path, dataset: str) -> tuple[list[str], list[str]]:
    """(region categories, image labels) the dataset uses anywhere in the corpus, sorted; read from its
    manifests (docs/FORMATS.md) so that classes seen only in other splits still count as distractors."""
    import duckdb

    def parquet(kind: str) -> str:
        return location_str(corpus / "manifests" / kind / dataset / "*.parquet").replace("'", "''")

    con = duckdb.connect()
    fs = filesystem(corpus)
    if fs is not None:  # a corpus in object storage: DuckDB reads through its fsspec filesystem
        con.register_filesystem(fs)
    try:
        cats = con.execute(
            "SELECT DISTINCT lower(coalesce(category, name, label)) FROM "
            f"read_parquet('{parquet('regions')}', union_by_name = true) ORDER BY 1"
        ).fetchall()
        labels = con.execute(
            "SELECT DISTINCT l FROM (SELECT unnest(image_labels) AS l FROM "
            f"read_parquet('{parquet('samples')}', union_by_name = true)) ORDER BY 1"
        ).fetchall()
    finally:
        con.close()
    return [c for (c,) in cats if c], sorted({_norm(label) for (label,) in labels if label})


#: The keyword parameters of :func:`evaluate` that ``medpclip eval``, the ``evaluate`` flow and the
#: ``pipeline`` flow expose (defaults: :func:`evaluate`'s own; tests/test_params.py checks all three).
EVAL_OPTIONS = ("split", "datasets", "batch_size", "device", "seed")
#: Keyword parameters of :func:`evaluate` deliberately not exposed, with the reason.
EVAL_EXEMPT = {
    "prompt_kinds": "the prompt kinds make up the published metric set; a subset is a library/bench knob",
    "write": "entry points always write CORPUS/metrics/ (that is their output); False is for tests/bench",
}


def evaluate(
    corpus: Path,
    checkpoint: Path,
    split: str = "test",
    *,
    datasets: list[str] | None = None,
    batch_size: int = 32,
    device: str | None = None,
    prompt_kinds: tuple[str, ...] = PROMPT_KINDS,
    seed: int = 0,
    write: bool = True,
) -> EvalResult:
    """Evaluate a checkpoint (or a training ``--out``: its latest checkpoint) on ``split`` of the corpus.

    ``split`` is one split or several joined by commas (``val,test``: held-out patients of both); rows
    then carry ``val+test``. Writes ``CORPUS/metrics/*.parquet`` unless ``write`` is False."""
    from medpclip.fileio import atomic_write_bytes
    from medpclip.train.loop import load_checkpoint

    corpus = corpus_path(resolved(corpus))  # a folder or an object-storage prefix
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer, meta = load_checkpoint(Path(checkpoint), device)
    cfg = DataConfig.from_dict({**meta.get("data", {}), "image_size": model.image_size[0]})
    splits = [s.strip() for s in split.split(",") if s.strip()]
    split_tag = "+".join(splits)
    stats = DataStats()
    by_kind: dict[str, dict[str, Embedded]] = {}
    for kind in prompt_kinds:
        examples = iter_examples(corpus, splits, cfg, datasets, eval_kind=kind, stats=stats)
        by_kind[kind] = embed_examples(
            model,
            tokenizer,
            examples,
            cfg,
            device,
            batch_size,
            shuffle_seed=seed if kind == "native" else None,
        )
    native = by_kind[prompt_kinds[0]]
    raw_rows: list[dict] = []
    for dataset in sorted(native):
        categories, image_labels = _dataset_classes(corpus, dataset)
        if len(categories) >= 2:
            classes = class_embeddings(model, tokenizer, categories, REGION_TEMPLATES, device)
            kinds = {k: by_kind[k][dataset] for k in prompt_kinds if dataset in by_kind[k]}
            raw_rows += region_cls_rows(dataset, kinds, classes, categories)
        names = image_labels or categories
        if len(names) >= 2:
            classes = class_embeddings(model, tokenizer, names, IMAGE_TEMPLATES, device)
            raw_rows += image_cls_rows(dataset, native[dataset], classes, names, bool(image_labels))
        raw_rows += retrieval_rows(dataset, model, tokenizer, native[dataset], device)
    run_id = meta.get("run_id", "unknown")
    ckpt = meta["checkpoint"]
    step = int(meta.get("step", 0))
    mode = model.region_mode
    rows = [
        MetricRow(run_id=run_id, checkpoint=ckpt, region_mode=mode, split=split_tag, **r) for r in raw_rows
    ]
    path = None
    counts = dict(stats.counts)
    if write:
        subset = "" if not datasets else "-" + "_".join(sorted(datasets))[:80]
        path = corpus / "metrics" / f"{run_id}-{step:07d}-{split_tag}{subset}.parquet"
        table = pa.Table.from_pylist([asdict(r) for r in rows], schema=SCHEMA)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        atomic_write_bytes(path, sink.getvalue().to_pybytes())
    bad = {k: v for k, v in counts.items() if k.startswith(("bad_", "dropped_"))}
    if bad:
        log.warning("evaluation data problems: %s", bad)
    return EvalResult(rows, path, ckpt, run_id, step, counts)
