"""The ``medpclip`` command line: each command calls one library function (the same ones the flows call)."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Build, query and check MedP-CLIP corpora."
)
specs_app = typer.Typer(no_args_is_help=True, help="List, show and validate dataset specs.")
app.add_typer(specs_app, name="specs")
console = Console()
err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _corpus_error_code(e: Exception) -> int:
    """1 when the corpus's object store cannot be read (what to fix is outside the command line), else 2."""
    from medpclip.warehouse import CorpusUnreachable

    return 1 if isinstance(e, CorpusUnreachable) else 2


def _check_out_dir(out: Path, option: str = "--out") -> None:
    """A directory the command creates: refuse, in one line, a path that is (or lies under) a file."""
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                where = "is a file" if p == out else f"is under {p}, a file"
                _fail(f"{option} {out} {where}; give a directory (it is created)")
            return


# --- build --------------------------------------------------------------------------------------------------


@app.command()
def build(
    spec: Annotated[
        str, typer.Option("--spec", help="spec names from dataset_specs/ or YAML paths, comma-separated")
    ],
    raw_root: Annotated[
        str,
        typer.Option(
            "--raw-root",
            help="folder (or object-storage URL, s3://bucket/prefix) holding the datasets as their archives unpack",
        ),
    ],
    out: Annotated[
        str,
        typer.Option(
            "--out",
            help="corpus directory (created; finished units are kept) or object-storage URL (s3://bucket/prefix)",
        ),
    ],
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address", envvar="RAY_ADDRESS", help="existing Ray cluster (default: a local Ray)"
        ),
    ] = None,
    max_side: Annotated[
        int, typer.Option("--max-side", help="long side of the stored images, in pixels")
    ] = 1024,
    num_cpus: Annotated[
        int | None, typer.Option("--num-cpus", help="CPUs of the local Ray (default: all)")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="rebuild finished units too")] = False,
    id_salt: Annotated[
        str | None,
        typer.Option(
            "--id-salt", help="salt of the hashed patient/sample ids (default: $MEDPCLIP_ID_SALT or built-in)"
        ),
    ] = None,
    shard_max_bytes: Annotated[
        int, typer.Option("--shard-max-bytes", help="target size of a shard, in bytes")
    ] = 256 * 2**20,  # medpclip.corpus.shards.DEFAULT_SHARD_BYTES (tests/test_params.py checks)
) -> None:
    """Build (or resume) a corpus. Exit 0 when the build finished, even with rejected inputs."""
    from medpclip.storage import is_url

    if not is_url(out):
        _check_out_dir(Path(out))
    from medpclip.corpus.build import BuildError, build_corpus
    from medpclip.qa.progress import BuildProgress
    from medpclip.specs import SpecError, resolve_specs

    try:
        specs = resolve_specs(spec)
    except SpecError as e:
        _fail(str(e))
    try:
        with BuildProgress(err) as progress:
            result = build_corpus(
                specs,
                raw_root,
                out,
                ray_address=ray_address,
                max_side=max_side,
                num_cpus=num_cpus,
                force=force,
                id_salt=id_salt,
                shard_max_bytes=shard_max_bytes,
                on_plan=progress.on_plan,
                on_unit=progress.on_unit,
            )
    except BuildError as e:
        _fail(str(e), code=1)
    _print_summary(result.build)
    # re-runs: units built again because a duplicate image moved a patient to its twin's split
    rerun = f", {result.units_rerun} re-run to settle duplicates" if result.units_rerun else ""
    console.print(
        f"corpus: {result.out}  ({result.units_run} units built on {len(result.nodes)} Ray node(s), "
        f"{result.units_skipped} kept{rerun}, {result.seconds:.1f}s)\n"
        f"report: {result.out / 'report' / 'index.html'}",  # a folder or an object-storage prefix
        highlight=False,
        soft_wrap=True,  # never a line break inside a path someone will copy (or a script will grep)
    )


def _print_summary(build: dict) -> None:
    table = Table(title="medpclip corpus")
    for col in ("dataset", "licence", "samples", "train/val/test", "regions", "rejects"):
        table.add_column(col, justify="right" if col in ("samples", "regions", "rejects") else "left")
    for d in build["datasets"]:
        s = d["samples_by_split"]
        table.add_row(
            d["name"],
            d["licence"],
            str(d["samples"]),
            f"{s.get('train', 0)}/{s.get('val', 0)}/{s.get('test', 0)}",
            str(d["regions"]),
            str(d["rejects"]),
        )
    t = build["totals"]
    table.add_row("total", "", str(t["samples"]), "", str(t["regions"]), str(t["rejects"]), style="bold")
    console.print(table)
    for d in build["datasets"]:  # planning's notes: a table only part of whose images are on disk
        for note in d.get("notes", ()):
            console.print(f"{d['name']}: {note}", highlight=False, soft_wrap=True)


# --- query, show, validate --------------------------------------------------------------------------------


@app.command()
def query(
    sql: Annotated[
        str,
        typer.Argument(
            help="one SQL statement over the views samples, regions, sources, rejects, units, shards, concepts"
        ),
    ],
    corpus: Annotated[
        str, typer.Option("--corpus", help="corpus directory or object-storage URL (s3://bucket/prefix)")
    ],
    fmt: Annotated[str, typer.Option("--format", help="table | csv | json")] = "table",
) -> None:
    """Ask DuckDB a question about a corpus."""
    import duckdb

    from medpclip.warehouse import CorpusError
    from medpclip.warehouse import query as run_query

    if fmt not in ("table", "csv", "json"):
        _fail(f"--format must be table, csv or json, got '{fmt}'")
    try:
        columns, rows = run_query(corpus, sql)
    except CorpusError as e:
        _fail(str(e), _corpus_error_code(e))
    except duckdb.Error as e:
        _fail(" ".join(str(e).split()))
    if fmt == "json":
        sys.stdout.write(
            json.dumps([dict(zip(columns, r, strict=True)) for r in rows], default=str, ensure_ascii=False)
            + "\n"
        )
    elif fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(columns)
        w.writerows(rows)
        sys.stdout.write(buf.getvalue())
    else:
        table = Table()
        for c in columns:
            table.add_column(c)
        for r in rows:
            table.add_row(*("NULL" if v is None else str(v) for v in r))
        console.print(table)


@app.command()
def show(
    key: Annotated[str, typer.Argument(help="sample key")],
    corpus: Annotated[str, typer.Option("--corpus", help="corpus directory or object-storage URL")],
    out: Annotated[Path, typer.Option("--out", help="PNG file to write")],
) -> None:
    """Draw a sample's regions (masks, boxes, points, labels) on its image."""
    from medpclip.corpus.inspect import load_sample
    from medpclip.qa.overlay import draw_regions
    from medpclip.warehouse import CorpusError

    try:
        image, record = load_sample(corpus, key)
    except CorpusError as e:
        _fail(str(e), _corpus_error_code(e))
    except KeyError as e:
        _fail(e.args[0])
    out.parent.mkdir(parents=True, exist_ok=True)
    draw_regions(image, record["regions"]).save(out)
    console.print(f"{key}: {len(record['regions'])} regions → {out}", highlight=False, soft_wrap=True)


@app.command("validate")
def validate_corpus(
    corpus: Annotated[str, typer.Option("--corpus", help="corpus directory or object-storage URL")],
) -> None:
    """Re-check a corpus: shard hashes, records against the schema, regions against their masks, counts."""
    from medpclip.corpus.inspect import check_corpus
    from medpclip.warehouse import CorpusError

    try:
        report = check_corpus(corpus)
    except CorpusError as e:
        _fail(str(e), _corpus_error_code(e))
    for problem in report.problems[:50]:
        err.print(f"- {problem}", highlight=False, soft_wrap=True)
    console.print(
        f"checked {report.shards} shards, {report.samples} samples, {report.regions} regions: "
        f"{len(report.problems)} problems",
        highlight=False,
    )
    raise typer.Exit(0 if not report.problems else 1)


# --- train, eval ------------------------------------------------------------------------------------------


@app.command()
def train(
    corpus: Annotated[
        str, typer.Option("--corpus", help="corpus directory or object-storage URL (its train split is used)")
    ],
    out: Annotated[Path, typer.Option("--out", help="training directory: checkpoints, run.json")],
    model: Annotated[
        str, typer.Option("--model", help="open_clip model name, or 'tiny' (CPU runs, tests)")
    ] = "ViT-B-16",
    steps: Annotated[int, typer.Option("--steps", help="optimizer steps in total")] = 1000,
    batch_size: Annotated[int, typer.Option("--batch-size", help="images per worker and micro-batch")] = 64,
    workers: Annotated[
        int, typer.Option("--workers", help="Ray Train workers (one GPU each with --gpu)")
    ] = 1,
    gpu: Annotated[bool, typer.Option("--gpu", help="train on GPUs (NCCL, bf16 autocast)")] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="continue the run in --out from its latest checkpoint")
    ] = False,
    pretrained: Annotated[
        Path | None, typer.Option("--pretrained", help="local open_clip checkpoint file for the backbone")
    ] = None,
    image_size: Annotated[
        int | None, typer.Option("--image-size", help="input size (default: the model's)")
    ] = None,
    lr: Annotated[float, typer.Option("--lr", help="peak learning rate")] = 5e-4,
    accum_steps: Annotated[int, typer.Option("--accum-steps", help="micro-batches per optimizer step")] = 1,
    checkpoint_every: Annotated[
        int, typer.Option("--checkpoint-every", help="steps between checkpoints")
    ] = 500,
    loader_workers: Annotated[
        int, typer.Option("--loader-workers", help="data loader processes per worker")
    ] = 2,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address", envvar="RAY_ADDRESS", help="existing Ray cluster (default: a local Ray)"
        ),
    ] = None,
    num_cpus: Annotated[
        int | None, typer.Option("--num-cpus", help="CPUs of the local Ray (default: all)")
    ] = None,
    prompt_layer: Annotated[
        int | None,
        typer.Option("--prompt-layer", help="vision layer the prompts enter (default: the model's)"),
    ] = None,
    region_mode: Annotated[
        str,
        typer.Option(
            "--region-mode",
            help="how a region reaches the image tower: medpclip (feature-level prompts), or the baselines "
            "crop (box crop), mask-input (outside blanked), alpha (Alpha-CLIP alpha channel)",
        ),
    ] = "medpclip",
    cpus_per_worker: Annotated[int, typer.Option("--cpus-per-worker", help="CPUs per Ray Train worker")] = 1,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay")] = 0.1,
    warmup: Annotated[
        int | None, typer.Option("--warmup", help="warm-up steps (default: 10% of --steps, at most 500)")
    ] = None,
    region_weight: Annotated[
        float, typer.Option("--region-weight", help="weight of the region loss against the image loss")
    ] = 1.0,
    grad_checkpointing: Annotated[
        bool, typer.Option("--grad-checkpointing", help="recompute activations in backward (less memory)")
    ] = False,
    keep_checkpoints: Annotated[
        int, typer.Option("--keep-checkpoints", help="checkpoints Ray Train keeps")
    ] = 2,
    log_every: Annotated[int, typer.Option("--log-every", help="steps between metric reports")] = 10,
    max_failures: Annotated[
        int, typer.Option("--max-failures", help="worker-group restarts from the latest checkpoint")
    ] = 0,
    datasets: Annotated[
        str | None, typer.Option("--datasets", help="comma-separated datasets to train on (default: all)")
    ] = None,
) -> None:
    """Pre-train MedP-CLIP on a corpus with Ray Train (resumable). Exit 0 when the run finished."""
    _check_out_dir(out)
    from ray.train import TrainingFailedError

    from medpclip.model.medpclip import ModelError
    from medpclip.train.data import DataError
    from medpclip.train.loop import TrainConfig, TrainError
    from medpclip.train.loop import train as run_training

    try:
        cfg = TrainConfig.of(
            corpus=str(corpus),
            out=str(out),
            model=model,
            pretrained=str(pretrained) if pretrained else None,
            image_size=image_size,
            prompt_layer=prompt_layer,
            region_mode=region_mode,
            steps=steps,
            batch_size=batch_size,
            accum_steps=accum_steps,
            workers=workers,
            gpu=gpu,
            cpus_per_worker=cpus_per_worker,
            loader_workers=loader_workers,
            lr=lr,
            weight_decay=weight_decay,
            warmup=warmup,
            region_weight=region_weight,
            grad_checkpointing=grad_checkpointing,
            seed=seed,
            checkpoint_every=checkpoint_every,
            keep_checkpoints=keep_checkpoints,
            log_every=log_every,
            max_failures=max_failures,
            datasets=[d for d in (datasets or "").split(",") if d] or None,
        )
    except TrainError as e:
        _fail(str(e))
    try:
        result = run_training(cfg, resume=resume, ray_address=ray_address, num_cpus=num_cpus)
    except (TrainError, DataError, ModelError) as e:
        _fail(str(e))
    except TrainingFailedError as e:
        _fail(f"training failed: {' '.join(str(e).split())[:400]}", code=1)
    m = result.metrics
    console.print(
        f"run {result.run_id}: step {result.step}, loss {m.get('loss', float('nan')):.3f}, "
        f"{m.get('samples_per_s', 0):.1f} samples/s, data wait {100 * m.get('data_wait_frac', 0):.1f}% "
        f"({result.seconds:.0f}s)\ncheckpoint: {result.checkpoint}\n"
        f"next: medpclip eval --corpus {corpus} --checkpoint {out}",
        highlight=False,
        soft_wrap=True,
    )


@app.command("eval")
def evaluate_checkpoint(
    corpus: Annotated[
        str,
        typer.Option(
            "--corpus", help="corpus directory or object-storage URL; metrics land in CORPUS/metrics/"
        ),
    ],
    checkpoint: Annotated[
        Path, typer.Option("--checkpoint", help="a checkpoint, or a training --out directory (its latest)")
    ],
    split: Annotated[
        str, typer.Option("--split", help="split(s) to evaluate, e.g. test or val,test")
    ] = "test",
    datasets: Annotated[
        str | None, typer.Option("--datasets", help="comma-separated datasets (default: all)")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 32,
    device: Annotated[
        str | None, typer.Option("--device", help="cpu, cuda (default: cuda if present)")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="seed of the shuffled-prompts control")] = 0,
) -> None:
    """Zero-shot evaluation: image and region classification, image/region–text retrieval → the metrics view."""
    from medpclip.evaluate import evaluate
    from medpclip.model.medpclip import ModelError
    from medpclip.train.data import DataError
    from medpclip.train.loop import TrainError
    from medpclip.warehouse import CorpusError, open_corpus

    try:
        open_corpus(corpus)  # a finished corpus, folder or object storage: one line otherwise
    except CorpusError as e:
        _fail(str(e), _corpus_error_code(e))
    names = [d for d in (datasets or "").split(",") if d] or None
    try:
        result = evaluate(
            corpus, checkpoint, split, datasets=names, batch_size=batch_size, device=device, seed=seed
        )
    except (TrainError, DataError, ModelError, CorpusError) as e:
        _fail(str(e))
    table = Table(title=f"{result.run_id} step {result.step} on {split}")
    for col in ("task", "dataset", "metric", "value", "chance", "n"):
        table.add_column(col, justify="right" if col in ("value", "chance", "n") else "left")
    for r in result.rows:
        table.add_row(r.task, r.dataset, r.metric, f"{r.value:.3f}", f"{r.chance:.3f}", str(r.n))
    console.print(table)
    problems = {k: v for k, v in result.data_counts.items() if k.startswith(("bad_", "dropped_"))}
    if problems:
        err.print(f"data problems (counted, skipped): {problems}", highlight=False)
    console.print(
        f"metrics: {result.path}  (view `metrics` of medpclip query --corpus {corpus})",
        highlight=False,
        soft_wrap=True,
    )


# --- orchestration ----------------------------------------------------------------------------------------


@app.command()
def serve(
    project: Annotated[
        Path | None,
        typer.Option("--project", help="folder holding prefect.yaml and flows/ (default: this checkout)"),
    ] = None,
) -> None:
    """Serve every deployment of prefect.yaml from this process (needs PREFECT_API_URL to reach a server)."""
    from medpclip.orchestration import DeploymentError, serve_deployments

    try:
        serve_deployments(project)
    except DeploymentError as e:
        _fail(str(e))


# --- text ---------------------------------------------------------------------------------------------------


@app.command()
def link(
    text: Annotated[str, typer.Argument(help="a report, a sentence, any text")],
    fmt: Annotated[str, typer.Option("--format", help="table | json")] = "table",
) -> None:
    """The concepts the report pipeline finds in a text: span, CUI, name, semantic types, assertion
    (positive, negated or uncertain), side.

    Uses the concept KB offline; MEDPCLIP_LINKER=umls and MEDPCLIP_SPACY_MODEL switch to scispacy's UMLS
    linker and a scispacy model where they are installed.
    """
    from medpclip.text.nlp import get_pipeline
    from medpclip.text.nlp import link as link_text

    if fmt not in ("table", "json"):
        _fail(f"--format must be table or json, got '{fmt}'")
    try:
        linked = link_text(text, get_pipeline())
    except ValueError as e:
        _fail(str(e))
    if fmt == "json":
        payload = {
            "text": linked.text,
            "sentences": list(linked.sentences),
            "concepts": [m.to_dict() for m in linked.mentions],
        }
        sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")
        return
    # the concept column is the CUI, or the KB's local id where no CUI is known (--format json has both)
    table = Table()
    table.add_column("span", no_wrap=True)
    table.add_column("text", overflow="fold")
    table.add_column("concept", no_wrap=True)
    table.add_column("name", overflow="fold")
    table.add_column("types", overflow="fold")
    table.add_column("assertion", no_wrap=True)
    table.add_column("side", no_wrap=True)
    for m in linked.mentions:
        table.add_row(
            f"{m.start}-{m.end}",
            m.text,
            m.concept_id,
            m.name,
            ",".join(m.semantic_types),
            m.assertion,
            m.laterality or "-",
        )
    console.print(table)
    if not linked.mentions:
        err.print("no concepts found", highlight=False)


# --- specs, demo data -------------------------------------------------------------------------------------


AccessOption = Annotated[
    str | None,
    typer.Option(
        "--access", help="only these access levels, comma-separated: open, registration, credentialed"
    ),
]
LicenceOption = Annotated[
    str | None,
    typer.Option(
        "--licence", help="only specs whose licence contains one of these, comma-separated (e.g. CC-BY,CC0)"
    ),
]


def _selected_specs(access: str | None, licence: str | None) -> tuple[list, list[tuple[str, str]]]:
    """The shipped specs that pass the access and licence filters, and (name, error) of the invalid ones."""
    from medpclip.specs import SpecError, available_specs, resolve_spec

    levels = {a.strip() for a in (access or "").split(",") if a.strip()}
    known = {"open", "registration", "credentialed"}
    if levels - known:
        _fail(f"--access takes {', '.join(sorted(known))}; got {', '.join(sorted(levels - known))}")
    wanted = [w.strip().lower() for w in (licence or "").split(",") if w.strip()]
    specs, invalid = [], []
    for name in available_specs():
        try:
            s = resolve_spec(name)
        except SpecError as e:
            invalid.append((name, str(e)))
            continue
        if levels and s.access not in levels:
            continue
        if wanted and not any(w in s.licence.lower() for w in wanted):
            continue
        specs.append(s)
    return specs, invalid


@specs_app.command("list")
def specs_list(
    access: AccessOption = None,
    licence: LicenceOption = None,
    names: Annotated[
        bool, typer.Option("--names", help="print the names comma-separated, for `build --spec`")
    ] = False,
) -> None:
    """The specs in dataset_specs/, optionally only those a user may download (--access) or redistribute
    (--licence)."""
    specs, invalid = _selected_specs(access, licence)
    if names:
        sys.stdout.write(",".join(s.name for s in specs) + "\n")
        return
    table = Table()
    width = max((len(s.name) for s in specs), default=4)
    # Names are what users copy into --spec: never wrapped or cut; the title gives way on narrow terminals.
    table.add_column("name", no_wrap=True, min_width=width)
    for c in ("format", "modality", "access", "licence", "labels"):
        table.add_column(c)
    table.add_column("title", overflow="ellipsis", no_wrap=True)
    for s in specs:
        table.add_row(s.name, s.format.family, s.modality, s.access, s.licence, str(len(s.labels)), s.title)
    for name, error in invalid:
        table.add_row(name, "[red]invalid[/red]", "", "", "", "", error)
    console.print(table)


@specs_app.command("census")
def specs_census(
    access: AccessOption = None,
    licence: LicenceOption = None,
    fmt: Annotated[str, typer.Option("--format", help="table, csv, json or markdown")] = "table",
) -> None:
    """Samples and regions a full download of each spec's dataset gives under the spec's own rules,
    projected from the publishers' counts (spec `stats`), per spec and in total, with the modality mix."""
    from medpclip.census import CensusError, census, markdown

    if fmt not in ("table", "csv", "json", "markdown"):
        _fail(f"--format must be table, csv, json or markdown, not '{fmt}'")
    specs, invalid = _selected_specs(access, licence)
    for _name, error in invalid:
        err.print(f"invalid {error}", highlight=False, soft_wrap=True)
    try:
        result = census(specs)
    except CensusError as e:
        _fail(str(e))
    rows = [p.row() for p in result.projections]
    if fmt == "markdown":
        sys.stdout.write(markdown(result))
        return
    if fmt == "json":
        total = {
            "datasets": len(rows),
            "samples": result.samples,
            "regions": result.regions,
            "distinct_samples": result.distinct_samples,
            "distinct_regions": result.distinct_regions,
        }
        doc = {"datasets": rows, "total": total, "by_modality": result.by_modality()}
        sys.stdout.write(json.dumps(doc | {"without_stats": result.without_stats}, indent=1) + "\n")
        return
    if fmt == "csv":
        import csv

        columns = ["dataset", "modality", "access", "licence", "frames", "samples", "regions", "estimated"]
        writer = csv.DictWriter(sys.stdout, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return
    table = Table()
    for c in ("dataset", "modality", "access", "samples", "regions", "estimated"):
        table.add_column(c, justify="right" if c in ("samples", "regions") else "left")
    for r in rows:
        table.add_row(
            str(r["dataset"]), str(r["modality"]), str(r["access"]), f"{r['samples']:,}", f"{r['regions']:,}",
            str(r["estimated"]) or "—",
        )  # fmt: skip
    table.add_row(
        f"total ({len(rows)} datasets)",
        "",
        "",
        f"{result.samples:,}",
        f"{result.regions:,}",
        "",
        style="bold",
    )
    console.print(table)
    if result.shared:
        console.print(
            f"counting re-published cases once ({', '.join(sorted(result.shared))} overlap other specs): "
            f"{result.distinct_samples:,} samples, {result.distinct_regions:,} regions",
            highlight=False,
            soft_wrap=True,
        )
    mix = ", ".join(f"{m} {n:,}" for m, n in result.by_modality().items())
    console.print(f"samples by modality: {mix}", highlight=False, soft_wrap=True)
    if result.without_stats:
        console.print(f"no stats yet: {', '.join(result.without_stats)}", highlight=False, soft_wrap=True)


@specs_app.command("show")
def specs_show(name: Annotated[str, typer.Argument(help="spec name or YAML path")]) -> None:
    """A spec as validated (defaults filled in), as YAML."""
    import yaml

    from medpclip.specs import SpecError, resolve_spec

    try:
        s = resolve_spec(name)
    except SpecError as e:
        _fail(str(e))
    sys.stdout.write(yaml.safe_dump(json.loads(s.model_dump_json()), sort_keys=False, allow_unicode=True))


@specs_app.command("validate")
def specs_validate(
    names: Annotated[list[str] | None, typer.Argument(help="spec names or paths (default: all)")] = None,
) -> None:
    """Validate specs; exit 1 if any is invalid (one line per problem)."""
    from medpclip.specs import SpecError, available_specs, resolve_spec

    bad = 0
    for name in names or available_specs():
        try:
            resolve_spec(name)
            console.print(f"ok      {name}", highlight=False)
        except SpecError as e:
            bad += 1
            err.print(f"invalid {e}", highlight=False, soft_wrap=True)
    raise typer.Exit(1 if bad else 0)


@app.command("demo-data")
def demo_data(
    directory: Annotated[Path, typer.Argument(help="raw root to write the demo datasets into")],
    dataset: Annotated[
        str | None,
        typer.Option(
            "--dataset",
            help="comma-separated demo datasets (default: demo_ct,demo_polyp,demo_cxr; also demo_context, "
            "the region-mode benchmark's task)",
        ),
    ] = None,
) -> None:
    """Write the small demo datasets in their publishers' layouts (deterministic)."""
    _check_out_dir(directory, "DIRECTORY")
    from medpclip.demo import DEFAULT_DEMOS, write_demo_data

    names = [n.strip() for n in (dataset or ",".join(DEFAULT_DEMOS)).split(",") if n.strip()]
    try:
        written = write_demo_data(directory, names or [""])
    except ValueError as e:
        _fail(f"--dataset: {e}")
    for name, path in written.items():
        console.print(f"{name:12s} {path}", highlight=False)


if __name__ == "__main__":  # pragma: no cover
    app()
