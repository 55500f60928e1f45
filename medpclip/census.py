"""How large the corpus is when every spec's dataset is downloaded whole: a projection from the publishers'
own counts (``spec.stats``) under each spec's slicing, planes and ``keep_empty`` rules. Pure: no files read.

Per spec:

- 2D (``stats.images``): every image is a frame; kept = all of them with ``slicing.keep_empty``, else the
  ``annotated_fraction`` of them that carry a region. Regions = the published ``annotations`` count when
  there is one (a box or a mask instance is one region), else kept-with-regions × ``regions_per_sample``.
- 3D (``stats.cases``/``slices``): frames per plane = the acquisition plane's slices (``slices``, or
  ``cases`` × ``slices_per_case``) or, for the other planes the spec slices, ``cases`` × ``matrix``; each
  divided by ``slicing.step``. Kept and regions as for 2D with ``regions_per_sample``.

Every projection names its inputs as ``published`` or ``estimated`` (``stats.estimated``), so a reader sees
which totals rest on whose numbers. Where a spec declares that another spec of the census re-publishes some
of its cases (``spec.overlaps``), the distinct totals count that share once (it stays in the per-spec rows:
a build of both specs holds both copies, in one split). The region-size rules are not modelled: ``regions_per_sample`` is meant
as the count after them (a stated estimate where the publisher gives only per-case structure counts).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from medpclip.specs import DatasetSpec


class CensusError(ValueError):
    """A spec's stats cannot be projected under its own rules (one line: spec, field, what to add)."""


@dataclass(frozen=True)
class Projection:
    """One spec's projected corpus share: ``samples`` (frames kept), ``regions``, ``by_modality`` samples."""

    dataset: str
    modality: str
    access: str
    licence: str
    frames: int
    samples: int
    regions: int
    by_modality: dict[str, int]
    published: tuple[str, ...]
    estimated: tuple[str, ...]
    source: str

    def row(self) -> dict[str, object]:
        d = asdict(self)
        d["published"] = ", ".join(self.published)
        d["estimated"] = ", ".join(self.estimated)
        d["by_modality"] = ", ".join(f"{m} {n}" for m, n in sorted(self.by_modality.items()))
        return d


@dataclass
class Census:
    """Projections of the specs that have stats, and the names of those that have none yet. ``shared``:
    per spec, the share of its samples another spec of this census also holds (``spec.overlaps``), so that
    ``distinct_samples``/``distinct_regions`` count re-published cases once."""

    projections: list[Projection] = field(default_factory=list)
    without_stats: list[str] = field(default_factory=list)
    shared: dict[str, float] = field(default_factory=dict)

    @property
    def distinct_samples(self) -> int:
        return sum(round(p.samples * (1 - self.shared.get(p.dataset, 0.0))) for p in self.projections)

    @property
    def distinct_regions(self) -> int:
        return sum(round(p.regions * (1 - self.shared.get(p.dataset, 0.0))) for p in self.projections)

    @property
    def samples(self) -> int:
        return sum(p.samples for p in self.projections)

    @property
    def regions(self) -> int:
        return sum(p.regions for p in self.projections)

    def by_modality(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.projections:
            for m, n in p.by_modality.items():
                out[m] = out.get(m, 0) + n
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def project(spec: DatasetSpec) -> Projection:
    """The projected samples and regions of ``spec`` (``CensusError`` when its stats lack what its rules
    need, e.g. ``matrix`` for a spec that slices coronal and sagittal planes too)."""
    st = spec.stats
    if st is None:
        raise CensusError(f"spec '{spec.name}' has no stats block")
    if st.images is not None:
        frames = st.images
        used = ["images"]
    else:
        frames = 0
        used = []
        for plane in spec.slicing.planes:
            if plane == st.acquisition:
                if st.slices is not None:
                    n, used = st.slices, [*used, "slices"]
                else:
                    assert st.cases is not None and st.slices_per_case is not None  # DatasetStats checks
                    n, used = round(st.cases * st.slices_per_case), [*used, "cases", "slices_per_case"]
            else:
                if st.matrix is None or st.cases is None:
                    raise CensusError(
                        f"spec '{spec.name}': slicing.planes has '{plane}' besides the acquisition plane "
                        f"'{st.acquisition}': stats need 'cases' and 'matrix' (in-plane size)"
                    )
                n, used = st.cases * st.matrix, [*used, "cases", "matrix"]
            frames += math.ceil(n / spec.slicing.step)
    annotated = round(frames * st.annotated_fraction)
    if st.annotated_fraction < 1:
        used.append("annotated_fraction")
    samples = frames if spec.slicing.keep_empty else annotated
    if st.annotations is not None:
        regions, used = st.annotations, [*used, "annotations"]
    else:
        assert st.regions_per_sample is not None  # DatasetStats checks
        regions, used = round(annotated * st.regions_per_sample), [*used, "regions_per_sample"]
    shares = st.modalities or {spec.modality: 1.0}
    by_modality = {m: round(samples * share) for m, share in shares.items()}
    names = tuple(dict.fromkeys(used))
    return Projection(
        dataset=spec.name,
        modality="+".join(sorted(shares)),
        access=spec.access,
        licence=spec.licence,
        frames=frames,
        samples=samples,
        regions=regions,
        by_modality=by_modality,
        published=tuple(n for n in names if n not in st.estimated),
        estimated=tuple(n for n in names if n in st.estimated),
        source=st.source,
    )


def census(specs: list[DatasetSpec]) -> Census:
    """Projections of every spec with stats (in the given order); the others are listed, never guessed."""
    out = Census()
    for spec in specs:
        if spec.synthetic:
            continue
        if spec.stats is None:
            out.without_stats.append(spec.name)
        else:
            out.projections.append(project(spec))
    present = {p.dataset for p in out.projections}
    counted: set[frozenset[str]] = set()  # a pair both of whose specs declare it is taken off once
    for spec in specs:
        if spec.stats is None or spec.synthetic:
            continue
        total = spec.stats.images or spec.stats.cases
        shared = 0
        for o in spec.overlaps:
            pair = frozenset((spec.name, o.spec))
            if o.spec in present and pair not in counted:
                counted.add(pair)
                shared += o.cases
        if shared and total:
            out.shared[spec.name] = min(1.0, shared / total)
    return out


def markdown(result: Census) -> str:
    """The census as the Markdown table docs/COVERAGE.md holds (``medpclip specs census --format markdown``):
    one row per spec, the totals, the distinct totals and the modality mix."""
    lines = [
        "| dataset | modality | access | samples | regions | estimated inputs |",
        "|---|---|---|---:|---:|---|",
    ]
    for p in result.projections:
        estimated = ", ".join(p.estimated) or "—"
        lines.append(
            f"| {p.dataset} | {p.modality} | {p.access} | {p.samples:,} | {p.regions:,} | {estimated} |"
        )
    n = len(result.projections)
    lines.append(f"| **total ({n} datasets)** | | | **{result.samples:,}** | **{result.regions:,}** | |")
    lines.append("")
    if result.shared:
        lines.append(
            f"Counting re-published cases once ({', '.join(sorted(result.shared))} overlap other specs): "
            f"{result.distinct_samples:,} samples, {result.distinct_regions:,} regions."
        )
        lines.append("")
    mix = ", ".join(f"{m} {k:,}" for m, k in result.by_modality().items())
    lines.append(f"Samples by modality: {mix}.")
    if result.without_stats:
        lines += ["", f"No stats yet: {', '.join(result.without_stats)}."]
    return "\n".join(lines) + "\n"
