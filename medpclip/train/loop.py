"""Distributed pre-training of MedP-CLIP with Ray Train (``medpclip train`` and the ``pretrain`` flow).

One ``TorchTrainer`` run per training ``--out`` directory:

    OUT/run.json                                   run id, configuration, status, latest checkpoint, metrics
    OUT/medpclip-train/checkpoint-{step:07d}/      model.pt, train_state.pt (optimizer, schedule), meta.json
    OUT/medpclip-train/checkpoint_manager_snapshot.json   Ray Train's record of the checkpoints

- Workers: ``workers`` Ray Train workers (gloo on CPU, NCCL on GPU), DDP; each reads its own resampled
  stream of shards (``medpclip.train.data``); embeddings are gathered across workers for the losses.
- Step: AdamW (no weight decay on gains, biases, embeddings and logit scales), linear warm-up then cosine
  decay, gradient clipping at 1.0, ``accum_steps`` micro-batches per optimizer step (each micro-batch is
  its own contrastive batch), bf16 autocast on GPU.
- Checkpoints every ``checkpoint_every`` steps and at the end (rank 0 writes, Ray Train persists them to
  the storage path and keeps the last ``keep_checkpoints``); ``meta.json`` records the size and sha256 of
  the other files, so a checkpoint is used only if complete. Resume = run again on the same ``--out``
  with ``--resume``: the workers take the newest complete checkpoint (the one Ray Train hands over, or a
  newer one in the storage folder that a crash kept from reaching Ray's record), restore model,
  optimizer, schedule and step counter, and continue with a data stream seeded by the resumed step. A run
  killed at any moment (even the driver, with SIGKILL) resumes from its last complete checkpoint.
- Metrics (every ``log_every`` steps, to Ray Train and to the log): losses, learning rate, samples/s,
  the share of step time spent waiting for data, GPU memory peak, data counts (bad samples, dropped regions).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medpclip.fileio import sha256_file
from medpclip.model.losses import medpclip_loss
from medpclip.model.medpclip import MODEL_CONFIGS, MedPCLIP, ModelConfig, ModelError, build_model
from medpclip.storage import resolved
from medpclip.train.data import DataConfig, prompts_of, shard_lists, train_loader

log = logging.getLogger("medpclip.train")
RUN_NAME = "medpclip-train"
DEFAULT_IMAGE_SIZE = {"tiny": 64}


class TrainError(RuntimeError):
    """Training cannot start (bad arguments, an existing run without --resume) or failed."""


class TrainConfig(BaseModel):
    """Every training parameter, declared once: ``medpclip train``, the ``pretrain`` and ``pipeline`` flows
    pass these (tests/test_params.py checks they expose each with this default), and a bad value is refused
    here in one line naming the field, before Ray starts."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    corpus: str
    out: str
    model: str = "ViT-B-16"
    pretrained: str | None = None  # local open_clip checkpoint file for the backbone
    image_size: int | None = Field(
        default=None, ge=16
    )  # None: the model's own (224 for ViT-B-16, 64 for tiny)
    prompt_layer: int | None = Field(default=None, ge=0)
    # how a region prompt reaches the image tower: MedP-CLIP's feature-level integration or a baseline
    region_mode: Literal["medpclip", "crop", "mask-input", "alpha"] = "medpclip"
    steps: int = Field(default=1000, ge=1)
    batch_size: int = Field(default=64, ge=1)  # per worker and micro-batch
    accum_steps: int = Field(default=1, ge=1)
    workers: int = Field(default=1, ge=1)
    gpu: bool = False
    cpus_per_worker: int = Field(default=1, ge=1)
    loader_workers: int = Field(default=2, ge=0)  # DataLoader processes per Ray Train worker
    lr: float = Field(default=5e-4, gt=0)
    weight_decay: float = Field(default=0.1, ge=0)
    warmup: int | None = Field(default=None, ge=0)  # None: 10 % of the steps, at most 500
    region_weight: float = Field(default=1.0, ge=0)
    grad_checkpointing: bool = False
    seed: int = 0
    checkpoint_every: int = Field(default=500, ge=1)
    keep_checkpoints: int = Field(default=2, ge=1)
    log_every: int = Field(default=10, ge=1)
    max_failures: int = Field(default=0, ge=0)  # worker-group restarts from the latest checkpoint
    datasets: list[str] | None = None
    data: dict[str, Any] = Field(default_factory=dict)  # DataConfig fields (image_size is set from above)

    #: Fields no entry point exposes as an option of its own, with the reason (tests/test_params.py checks
    #: that every other field is an option of ``medpclip train``, the ``pretrain`` and ``pipeline`` flows,
    #: with this class's default).
    EXEMPT: ClassVar[dict[str, str]] = {
        "data": "a dict of DataConfig fields (augmentation, prompt sampling): library-level, no flat option",
    }

    @classmethod
    def of(cls, **values: Any) -> TrainConfig:
        """``TrainConfig(**values)`` with a bad value refused as a one-line ``TrainError`` naming its option
        (``--steps: Input should be greater than or equal to 1 (got 0)``), for the CLI and the flows."""
        try:
            return cls(**values)
        except ValidationError as e:
            first = e.errors()[0]
            option = "--" + "-".join(str(p) for p in first["loc"]).replace("_", "-")
            raise TrainError(f"{option}: {first['msg']} (got {first.get('input')!r})") from None

    def backbone_config(self) -> ModelConfig:
        return ModelConfig(
            name=self.model,
            pretrained=self.pretrained,
            image_size=self.image_size,
            prompt_layer=self.prompt_layer,
            region_mode=self.region_mode,
        )

    def data_config(self) -> DataConfig:
        size = self.image_size or DEFAULT_IMAGE_SIZE.get(self.model, 224)
        return DataConfig.from_dict({**self.data, "image_size": size})


@dataclass
class TrainResult:
    out: Path
    run_id: str
    step: int
    checkpoint: Path | None
    metrics: dict[str, Any]
    seconds: float


# --- checkpoints -----------------------------------------------------------------------------------------


def state_checksum(model: torch.nn.Module) -> str:
    """sha256 over the model's parameters and buffers (names, shapes, bytes): equal iff the weights are."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


CHECKPOINT_FILES = ("model.pt", "train_state.pt")


def write_checkpoint(
    directory: Path, model: MedPCLIP, optimizer, scheduler, step: int, meta: dict[str, Any]
) -> None:
    """model.pt, train_state.pt, then meta.json with the size and sha256 of both: a checkpoint is complete
    exactly when its files match its meta (see :func:`verified_step`)."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), directory / "model.pt")
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step},
        directory / "train_state.pt",
    )
    files = {
        name: {"bytes": (directory / name).stat().st_size, "sha256": sha256_file(directory / name)}
        for name in CHECKPOINT_FILES
    }
    meta = {**meta, "step": step, "model_checksum": state_checksum(model), "files": files}
    (directory / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=str) + "\n")


def verified_step(directory: Path, hashes: bool = True) -> int | None:
    """The step of a complete checkpoint (meta readable, files of the recorded sizes and hashes), else None.
    A checkpoint being copied when its run was killed fails this check and is never used."""
    try:
        meta = json.loads((Path(directory) / "meta.json").read_text(encoding="utf-8"))
        for name, want in meta["files"].items():
            f = Path(directory) / name
            if f.stat().st_size != want["bytes"] or (hashes and sha256_file(f) != want["sha256"]):
                return None
        return int(meta["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def latest_checkpoint(path: Path) -> Path | None:
    """The checkpoint to use for ``path``: itself if it is a complete checkpoint, else the complete
    checkpoint with the highest step of the training run there (``OUT`` or ``OUT/medpclip-train``)."""
    path = Path(path)
    if (path / "meta.json").is_file():
        return path if verified_step(path) is not None else None
    run_dir = path / RUN_NAME if (path / RUN_NAME).is_dir() else path
    candidates = [(verified_step(d, hashes=False), d) for d in run_dir.glob("checkpoint-*") if d.is_dir()]
    for step, d in sorted(((s, d) for s, d in candidates if s is not None), reverse=True):
        if verified_step(d) == step:  # sizes first (cheap), hashes for the one we take
            return d
    return None


def stored_model(meta: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's ``meta["model"]``; checkpoints from before region modes are ``medpclip``."""
    return {"region_mode": "medpclip", **meta["model"]}


def load_checkpoint(
    path: Path, device: str | torch.device = "cpu", region_mode: str | None = None
) -> tuple[MedPCLIP, Any, dict]:
    """(model in eval mode, tokenizer, meta) from a checkpoint or a training ``--out`` directory. The model's
    region mode is the checkpoint's; ``region_mode``, when given, is what the caller expects, and a checkpoint
    of another mode is refused (its weights would not mean what the caller thinks)."""
    ckpt = latest_checkpoint(path)
    if ckpt is None:
        raise TrainError(f"no checkpoint in '{path}'")
    meta = json.loads((ckpt / "meta.json").read_text(encoding="utf-8"))
    stored = stored_model(meta)["region_mode"]
    if region_mode is not None and region_mode != stored:
        raise TrainError(
            f"checkpoint '{ckpt}' was trained with --region-mode {stored}; it cannot be loaded as "
            f"{region_mode} (train a {region_mode} run, or load it as {stored})"
        )
    cfg = ModelConfig(**{**meta["model"], "pretrained": None})  # the weights come from the checkpoint
    model, tokenizer = build_model(cfg)
    state = torch.load(ckpt / "model.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    meta["checkpoint"] = str(ckpt.resolve())
    return model.to(device).eval(), tokenizer, meta


# --- optimisation --------------------------------------------------------------------------------------


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        flat = p.ndim < 2 or "embedding" in name or "logit_scale" in name or name.endswith(".query")
        (no_decay if flat else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _schedule(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


# --- the per-worker loop -------------------------------------------------------------------------------------


class RayContext:
    """What the loop needs from Ray Train, inside a ``TorchTrainer`` worker."""

    def __init__(self) -> None:
        import ray.train
        import ray.train.torch

        self._train = ray.train
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()

    def get_checkpoint(self):
        return self._train.get_checkpoint()

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        # DDP when world > 1 (a batch may hold no region on one worker: unused parameters are fine)
        return self._train.torch.prepare_model(
            model, parallel_strategy_kwargs={"find_unused_parameters": True}
        )

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None, name: str | None) -> None:
        if name is None:
            self._train.report(metrics)
            return
        ckpt = self._train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        self._train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=name)
        if self.world > 1:  # rank 0 returns from report once the checkpoint is persisted; the others wait
            torch.distributed.barrier()


class LocalContext:
    """One process, no Ray (benchmarks, debugging): checkpoints are copied to the same place and kept
    the same way as Ray Train does, so ``--resume`` and ``medpclip eval`` work on the result."""

    def __init__(self, out: Path, device: torch.device, keep: int) -> None:
        self.rank, self.world, self.device = 0, 1, device
        self.run_dir = Path(out) / RUN_NAME
        self.keep = keep
        self.history: list[dict[str, Any]] = []

    def get_checkpoint(self):
        return None  # _resume_source scans the run folder

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None, name: str | None) -> None:
        import shutil

        self.history.append(metrics)
        if checkpoint_dir is None:
            return
        target = self.run_dir / name
        tmp = self.run_dir / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(checkpoint_dir, tmp)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
        for old in sorted(self.run_dir.glob("checkpoint-*"))[: -self.keep or None]:
            shutil.rmtree(old, ignore_errors=True)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Runs in every Ray Train worker."""
    run_loop(TrainConfig(**loop_config["config"]), loop_config["run_id"], RayContext())


def run_loop(cfg: TrainConfig, run_id: str, ctx) -> dict[str, Any]:
    """The training loop of one worker; ``ctx`` is a :class:`RayContext` or a :class:`LocalContext`.
    Returns the last metrics."""
    from medpclip.faults import fault_point

    rank, world, device = ctx.rank, ctx.world, ctx.device
    on_gpu = device.type == "cuda"
    if not on_gpu:  # as many threads as CPUs reserved: more would spin against the other workers
        torch.set_num_threads(max(1, cfg.cpus_per_worker))
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # the same initial weights on every worker, whatever ran before
        model, tokenizer = build_model(cfg.backbone_config())
    if cfg.grad_checkpointing:
        model.clip.set_grad_checkpointing(True)
    model.to(device)
    optimizer = torch.optim.AdamW(
        _param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6
    )
    warmup = cfg.warmup if cfg.warmup is not None else min(500, cfg.steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _schedule(s, warmup, cfg.steps))
    start_step, resumed = _resume(cfg, ctx, model, optimizer, scheduler)

    ddp = ctx.prepare(model)
    data_cfg = cfg.data_config()
    loader = train_loader(
        cfg.corpus,
        data_cfg,
        tokenizer,
        cfg.batch_size,
        seed=cfg.seed,
        rank=rank,
        start_step=start_step,
        num_workers=cfg.loader_workers,
        pin_memory=on_gpu,
        datasets=cfg.datasets,
    )
    batches = iter(loader)
    data_counts: Counter[str] = Counter()
    window: Counter[str] = Counter()  # sums over the steps since the last log line
    meta_base = {
        "run_id": run_id,
        "model": cfg.backbone_config().to_dict() | {"image_size": data_cfg.image_size},
        "data": data_cfg.to_dict(),
        "config": cfg.model_dump(),
    }
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(device)
    last_metrics: dict[str, Any] = {}

    for step in range(start_step + 1, cfg.steps + 1):
        t_step = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        wait = _accumulate_gradients(cfg, model, ddp, batches, device, data_counts, window)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if on_gpu:
            torch.cuda.synchronize(device)  # so that step time includes the GPU work (honest wait share)
        window["steps"] += 1
        window["time"] += time.perf_counter() - t_step
        window["wait"] += wait

        checkpoint_now = step % cfg.checkpoint_every == 0 or step == cfg.steps
        if step % cfg.log_every and not checkpoint_now:
            continue
        totals = _all_reduce_counts(data_counts, device, world)
        metrics = _window_metrics(cfg, step, window, totals, model, scheduler, device, world)
        metrics.update(run_id=run_id, **resumed)
        window = Counter()
        last_metrics = metrics
        if rank == 0:
            print(
                f"[medpclip train] step {step}/{cfg.steps} loss {metrics['loss']:.3f} "
                f"(image {metrics['image_loss']:.3f}, region {metrics['region_loss']:.3f}) "
                f"lr {metrics['lr']:.2e} {metrics['samples_per_s']:.1f} samples/s "
                f"data wait {100 * metrics['data_wait_frac']:.1f}%",
                flush=True,
            )
        if checkpoint_now:
            with tempfile.TemporaryDirectory() as tmp:
                written = None
                if rank == 0:
                    meta = {**meta_base, "metrics": metrics, "data_counts": dict(totals)}
                    write_checkpoint(Path(tmp), model, optimizer, scheduler, step, meta)
                    written = Path(tmp)
                ctx.report(metrics, written, f"checkpoint-{step:07d}")
            fault_point("train.checkpoint")  # crash tests: a SIGKILL right after a checkpoint persisted
        else:
            ctx.report(metrics, None, None)
    if rank == 0 and last_metrics:
        print(f"[medpclip train] done at step {cfg.steps}", flush=True)
    return last_metrics


def _resume(cfg: TrainConfig, ctx, model, optimizer, scheduler) -> tuple[int, dict[str, Any]]:
    """Load the newest complete checkpoint into model, optimizer and scheduler; (its step, the metrics that
    say so). (0, {}) when there is none."""
    source = _resume_source(ctx.get_checkpoint(), Path(cfg.out))
    if source is None:
        return 0, {}
    device = ctx.device
    with source as d:
        model.load_state_dict(torch.load(Path(d) / "model.pt", map_location=device, weights_only=True))
        state = torch.load(Path(d) / "train_state.pt", map_location=device, weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_step = int(state["step"])
    if ctx.rank == 0:
        print(f"[medpclip train] resumed from step {start_step}", flush=True)
    return start_step, {"resumed_from_step": start_step, "resumed_checksum": state_checksum(model)}


def _accumulate_gradients(cfg: TrainConfig, model, ddp, batches, device, data_counts, window) -> float:
    """Forward and backward ``cfg.accum_steps`` micro-batches (gradients all-reduced on the last only);
    adds the losses and region counts to ``window``. Returns the seconds spent waiting for data."""
    from torch.nn.parallel import DistributedDataParallel

    on_gpu = device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if on_gpu else contextlib.nullcontext
    wait = 0.0
    for micro in range(cfg.accum_steps):
        t_wait = time.perf_counter()
        batch = next(batches)
        wait += time.perf_counter() - t_wait
        data_counts.update(batch["stats"])
        images = model.preprocess(batch["images"].to(device, non_blocking=True))
        prompts = prompts_of(batch, device)
        texts = torch.cat([batch["caption_tokens"], batch["region_tokens"]]).to(device, non_blocking=True)
        last = micro == cfg.accum_steps - 1
        sync = ddp.no_sync() if (isinstance(ddp, DistributedDataParallel) and not last) else None
        with sync or contextlib.nullcontext(), autocast():
            out = ddp(images, prompts, texts)
            losses = medpclip_loss(
                out,
                batch["caption_labels"].to(device),
                batch["region_labels"].to(device),
                n_captions=images.shape[0],
                region_weight=cfg.region_weight,
            )
        (losses["loss"] / cfg.accum_steps).backward()
        window["regions"] += int(prompts.valid.sum())
    for k in ("loss", "image_loss", "region_loss"):  # the last micro-batch's, as logged before
        window[k] += float(losses[k].detach())
    return wait


def _window_metrics(
    cfg: TrainConfig, step, window, totals, model, scheduler, device, world
) -> dict[str, Any]:
    """The metrics row of the steps since the last log line (``window``) and the data counts so far."""
    on_gpu = device.type == "cuda"
    n = window["steps"]
    images_per_step = cfg.batch_size * cfg.accum_steps * world
    return {
        "step": step,
        "loss": window["loss"] / n,
        "image_loss": window["image_loss"] / n,
        "region_loss": window["region_loss"] / n,
        "lr": scheduler.get_last_lr()[0],
        "samples_per_s": images_per_step * n / max(window["time"], 1e-9),
        "step_s": window["time"] / n,
        "data_wait_frac": window["wait"] / max(window["time"], 1e-9),
        "regions_per_image": window["regions"] / (cfg.batch_size * cfg.accum_steps * n),
        "logit_scale": float(model.clip.logit_scale.detach().exp()),
        "region_logit_scale": float(model.region_logit_scale.detach().exp()),
        "gpu_mem_peak_gb": torch.cuda.max_memory_allocated(device) / 2**30 if on_gpu else 0.0,
        "samples_seen": totals.get("samples", 0),
        "data_bad_samples": sum(v for k, v in totals.items() if k.startswith("bad_")),
        "data_dropped_regions": sum(v for k, v in totals.items() if k.startswith("dropped_")),
        "world_size": world,
    }


def _resume_source(checkpoint, out: Path):
    """A context manager giving the directory to resume from, or None: the newest complete checkpoint among
    the one Ray Train hands over and those in the run's storage folder (a checkpoint persisted just before
    a crash may not have reached Ray's own record yet)."""
    best: tuple[int, Any] | None = None
    if checkpoint is not None:
        local = Path(checkpoint.path)
        step = verified_step(local) if local.is_dir() else None
        best = (step if step is not None else -1, checkpoint.as_directory)
    latest = latest_checkpoint(out)
    if latest is not None:
        step = verified_step(latest, hashes=False)
        if step is not None and (best is None or step > best[0]):
            best = (step, lambda p=latest: contextlib.nullcontext(str(p)))
    return best[1]() if best is not None else None


def _all_reduce_counts(counts: Counter[str], device, world: int) -> dict[str, int]:
    """Data counts summed over the workers (every worker has the same keys after the first exchange)."""
    if world == 1:
        return dict(counts)
    import torch.distributed as dist

    keys = sorted(counts)
    names: list[list[str]] = [[] for _ in range(world)]
    dist.all_gather_object(names, keys)
    keys = sorted({k for ks in names for k in ks})
    t = torch.tensor([counts.get(k, 0) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: int(v) for k, v in zip(keys, t.tolist(), strict=True)}


# --- the driver ------------------------------------------------------------------------------------------------


def _check(cfg: TrainConfig) -> None:
    import open_clip

    if cfg.model not in MODEL_CONFIGS and open_clip.get_model_config(cfg.model) is None:
        raise TrainError(f"unknown model '{cfg.model}': use 'tiny' or an open_clip name such as ViT-B-16")
    if cfg.pretrained and not Path(cfg.pretrained).is_file():
        raise TrainError(f"--pretrained must be a local checkpoint file, '{cfg.pretrained}' is not one")
    shard_lists(cfg.corpus, "train", cfg.datasets)  # DataError when there is nothing to train on


def _check_resume(cfg: TrainConfig, existing: Path | None, resume: bool) -> None:
    """Never overwrite a run; resume only a run of the same model."""
    if existing is None:
        return
    if not resume:
        raise TrainError(
            f"'{cfg.out}' already holds a training run (latest checkpoint {existing.name}); "
            "pass --resume to continue it, or choose another --out"
        )
    meta = json.loads((existing / "meta.json").read_text(encoding="utf-8"))
    want = cfg.backbone_config().to_dict() | {"image_size": cfg.data_config().image_size}
    stored = stored_model(meta)
    for key in ("name", "image_size", "prompt_layer", "region_mode"):
        if stored.get(key) != want.get(key):
            raise TrainError(
                f"cannot resume: the run in '{cfg.out}' has {key} {stored.get(key)!r}, "
                f"this command asks for {want.get(key)!r}"
            )


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    ray_address: str | None = None,
    num_cpus: int | None = None,
) -> TrainResult:
    """Train (or resume) a run in ``cfg.out``; returns where it ended. Raises TrainError, DataError,
    ModelError for what the user must fix; Ray's TrainingFailedError when the workers failed."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from medpclip.fileio import atomic_write_json
    from medpclip.raysession import ray_session

    t0 = time.monotonic()
    out = Path(cfg.out).resolve()
    cfg = cfg.model_copy(update={"out": str(out), "corpus": resolved(cfg.corpus)})
    _check(cfg)
    _check_resume(cfg, latest_checkpoint(out), resume)
    run_file = out / "run.json"
    previous = json.loads(run_file.read_text(encoding="utf-8")) if run_file.is_file() else {}
    run_id = previous.get("run_id") or f"{cfg.model.lower()}-{uuid.uuid4().hex[:10]}"
    status = {"run_id": run_id, "status": "running", "config": cfg.model_dump()}
    atomic_write_json(run_file, {**previous, **status})

    resources = {"CPU": cfg.cpus_per_worker, **({"GPU": 1} if cfg.gpu else {})}
    with ray_session(ray_address, num_cpus):
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"config": cfg.model_dump(), "run_id": run_id},
            torch_config=TorchConfig(backend="nccl" if cfg.gpu else "gloo"),
            scaling_config=ScalingConfig(
                num_workers=cfg.workers, use_gpu=cfg.gpu, resources_per_worker=resources
            ),
            run_config=RunConfig(
                name=RUN_NAME,
                storage_path=str(out),
                checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
                failure_config=FailureConfig(max_failures=cfg.max_failures),
                worker_runtime_env={"env_vars": _worker_env()},  # after ray_session set the driver pid
            ),
        )
        try:
            result = trainer.fit()
        except Exception as e:
            atomic_write_json(
                run_file, {**status, "status": "failed", "error": " ".join(str(e).split())[:2000]}
            )
            raise
    ckpt = latest_checkpoint(out)
    metrics = dict(result.metrics or {})
    step = int(metrics.get("step") or (verified_step(ckpt, hashes=False) if ckpt else 0) or 0)
    atomic_write_json(
        run_file,
        {
            **status,
            "status": "finished",
            "step": step,
            "checkpoint": str(ckpt) if ckpt else None,
            "metrics": metrics,
        },
    )
    return TrainResult(out, run_id, step, ckpt, metrics, time.monotonic() - t0)


def train_local(cfg: TrainConfig, *, resume: bool = False, device: str | None = None) -> TrainResult:
    """The same loop in this process, without Ray (one device): for benchmarks (``bench/gpu_smoke.sh`` on
    a machine without Ray) and debugging. Same checkpoints, same ``run.json``; ``metrics["history"]``
    holds every report."""
    from medpclip.fileio import atomic_write_json

    t0 = time.monotonic()
    out = Path(cfg.out).resolve()
    cfg = cfg.model_copy(update={"out": str(out), "corpus": resolved(cfg.corpus), "workers": 1})
    _check(cfg)
    _check_resume(cfg, latest_checkpoint(out), resume)
    run_file = out / "run.json"
    previous = json.loads(run_file.read_text(encoding="utf-8")) if run_file.is_file() else {}
    run_id = previous.get("run_id") or f"{cfg.model.lower()}-{uuid.uuid4().hex[:10]}"
    dev = torch.device(device or ("cuda" if cfg.gpu and torch.cuda.is_available() else "cpu"))
    ctx = LocalContext(out, dev, cfg.keep_checkpoints)
    status = {"run_id": run_id, "status": "running", "config": cfg.model_dump()}
    atomic_write_json(run_file, {**previous, **status})
    metrics = run_loop(cfg, run_id, ctx)
    ckpt = latest_checkpoint(out)
    final = {**status, "status": "finished", "step": int(metrics.get("step", 0)), "checkpoint": str(ckpt)}
    atomic_write_json(run_file, {**final, "metrics": metrics})
    return TrainResult(
        out, run_id, final["step"], ckpt, {**metrics, "history": ctx.history}, time.monotonic() - t0
    )


def _worker_env() -> dict[str, str]:
    """Variables the workers need from the driver's environment (fault points of the crash tests)."""
    keys = ("MEDPCLIP_FAULT", "MEDPCLIP_FAULT_TARGET", "MEDPCLIP_FAULT_ONCE", "MEDPCLIP_DRIVER_PID")
    return {k: os.environ[k] for k in keys if k in os.environ}


__all__ = [
    "RUN_NAME",
    "DataConfig",
    "ModelError",
    "TrainConfig",
    "TrainError",
    "TrainResult",
    "latest_checkpoint",
    "load_checkpoint",
    "state_checksum",
    "run_loop",
    "train",
    "train_local",
    "write_checkpoint",
]
