"""Dataset specs: one YAML file per public dataset, validated by pydantic.

A spec says where a dataset lives under the raw root, which reader family reads it and with which options,
what its label values mean (value → label → display name → category → CUI), how to turn its intensities into
8 bits, how to slice volumes, how to split by patient, and its licence and citation.

Specs are loaded with a safe YAML loader only (no Python object tags, no aliases) and refused with a one-line message that
names the file, the field and what is wrong.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from medpclip.sources.base import compile_regex
from medpclip.sources.registry import FAMILIES
from medpclip.vocab import SPLITS, Modality

# The shipped specs are package data: ``medpclip/dataset_specs`` is a link to the repository's
# ``dataset_specs/`` (the folder to edit), which a built wheel holds as a real folder.
SPECS_DIR = Path(str(resources.files("medpclip").joinpath("dataset_specs"))).resolve()
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]*$")
CUI_RE = re.compile(r"^C\d{7}$")
CONCEPT_LOCAL_RE = re.compile(r"^MEDP:\d{4}$")

Access = Literal["open", "registration", "credentialed"]
# the families, in registry order (sources/registry.py is the one list of them)
FormatFamily = Literal[tuple(FAMILIES)]  # type: ignore[valid-type]


class SpecError(ValueError):
    """A spec could not be loaded; the message is one line: file, field, what is wrong."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LabelEntry(_Strict):
    """One label of the dataset. ``value`` is the integer in a label map (volumes, coded masks); tables and
    mask files match on ``label`` and ``aliases`` (the dataset's own strings)."""

    value: int | None = None
    label: str = Field(min_length=1)
    name: str = Field(min_length=1, description="display name, e.g. 'Left kidney'")
    category: str = Field(min_length=1, description="coarse category without laterality, e.g. 'kidney'")
    cui: str | None = Field(default=None, description="UMLS CUI, or null when not known for certain")
    concept: str | None = Field(
        default=None,
        description="KB concept id (CUI or MEDP:NNNN) when the label and name alone are ambiguous",
    )
    aliases: tuple[str, ...] = ()

    @field_validator("cui")
    @classmethod
    def _cui_format(cls, v: str | None) -> str | None:
        if v is not None and not CUI_RE.match(v):
            raise ValueError(f"'{v}' is not a UMLS CUI (C followed by 7 digits); use null when unknown")
        return v

    @field_validator("concept")
    @classmethod
    def _concept_format(cls, v: str | None) -> str | None:
        if v is not None and not (CUI_RE.match(v) or CONCEPT_LOCAL_RE.match(v)):
            raise ValueError(f"'{v}' is not a KB concept id (a CUI or MEDP:NNNN)")
        return v


def _format_model(family: str, options: type[BaseModel]) -> type[BaseModel]:
    model = create_model(
        f"{family.capitalize()}Format",
        __base__=_Strict,
        __doc__=f"``family: {family}`` and its options ({options.__module__}.{options.__name__}).",
        __module__=__name__,
        family=(Literal[family], ...),
        # a layout union has no default: its layouts need their own fields (``images``, ``cases``, …)
        options=(options, Field(default_factory=options)) if isinstance(options, type) else (options, ...),
    )
    globals()[model.__name__] = model  # a module attribute, so specs pickle (discovery worker processes)
    return model


# Which reader family reads the dataset, with that family's options model: a union tagged by ``family``, so a
# misspelt or ill-typed option is refused when the spec loads, naming its field (``format.options.layuot``).
FormatSpec = Annotated[
    Union[tuple(_format_model(f.family, f.options) for f in FAMILIES.values())],  # noqa: UP007
    Field(discriminator="family"),
]
_FORMAT_ADAPTER = TypeAdapter(FormatSpec)


def format_spec(family: str, options: dict[str, Any]) -> BaseModel:
    """A validated ``format`` value (a reader handing part of its dataset to another family: LIDC → dicom)."""
    return _FORMAT_ADAPTER.validate_python({"family": family, "options": options})


class IntensitySpec(_Strict):
    """How to map scanner values to 8 bits.

    ``ct_window``: one CT preset (``window``) for the whole dataset, chosen for its anatomy (lung nodules →
    ``lung``). Not chosen per slice from the labels present: the rendering would then give the annotation away
    to the model. ``percentile``: clip to the [``low``, ``high``] percentiles of the frame, then scale.
    ``uint8``: the image is display-ready already.
    """

    kind: Literal["ct_window", "percentile", "uint8"]
    window: str | None = None
    low: float = 0.5
    high: float = 99.5

    @model_validator(mode="after")
    def _check(self) -> IntensitySpec:
        from medpclip.imaging import CT_WINDOWS

        if self.kind == "ct_window":
            if self.window is None:
                raise ValueError(
                    "kind ct_window needs 'window' (one of " + ", ".join(sorted(CT_WINDOWS)) + ")"
                )
            if self.window not in CT_WINDOWS:
                raise ValueError(f"unknown CT window '{self.window}'; known: {', '.join(sorted(CT_WINDOWS))}")
        if not 0 <= self.low < self.high <= 100:
            raise ValueError("percentiles need 0 <= low < high <= 100")
        return self


class SlicingSpec(_Strict):
    """How 3D volumes become 2D frames. Planes: ax (axial), co (coronal), sa (sagittal)."""

    planes: tuple[Literal["ax", "co", "sa"], ...] = ("ax",)
    step: int = Field(default=1, ge=1)
    keep_empty: bool = Field(default=False, description="keep slices/images without any region")


class SplitSpec(_Strict):
    """Patient-level split. ``hash``: a salted hash of the patient id assigns train/val/test by ``ratios``.
    ``official``: the reader's official split where the dataset has one (its val is carved out of the
    official train by hash); items without an official split fall back to ``hash``."""

    rule: Literal["hash", "official"] = "hash"
    salt: str = "medpclip-v1"
    ratios: dict[str, float] = Field(default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1})

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, v: dict[str, float]) -> dict[str, float]:
        if set(v) - set(SPLITS):
            raise ValueError(f"split names must be among {SPLITS}, got {sorted(v)}")
        if any(r < 0 for r in v.values()) or abs(sum(v.values()) - 1.0) > 1e-6:
            raise ValueError("ratios must be non-negative and sum to 1")
        return v


class PatientIdSpec(_Strict):
    """Where the patient id comes from: a regex over the case id whose group ``pid`` is the id (whole case id
    when no regex), or a field the reader found (e.g. a table column)."""

    regex: str | None = None
    field: str | None = None

    @field_validator("regex")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            compile_regex(v, ("pid",))
        return v


class RegionFilterSpec(_Strict):
    """Which regions are too small to keep, after resizing; each dropped one is a ``rejects`` row.

    Mask-derived instances (label maps, mask files, cuts through 3D masks) smaller than max(``min_fraction`` ×
    image area, ``min_pixels``) are ``below_min_area``: slicing a 3D mask leaves slivers at its ends and lossy
    mask files leave specks. What an annotator drew on the image itself (boxes, points, outlines:
    ``Frame.outlined``) is an annotation at any size: it is dropped only under ``min_drawn_pixels``
    (``degenerate_annotation``; default 1 px, i.e. never once it covers a pixel). The area rule once removed
    ~3 % of VinDr-CXR's radiologist boxes (16–20 px nodules at 1024 px)."""

    min_fraction: float = Field(default=0.0005, ge=0, lt=1)
    min_pixels: int = Field(default=16, ge=0)
    min_drawn_pixels: int = Field(default=1, ge=1)


class DatasetStats(_Strict):
    """What the publisher says the part of the dataset this spec reads holds, and the few assumptions the
    census (``medpclip specs census``, ``medpclip.census``) projects samples and regions from.

    2D datasets give ``images``; 3D ones ``cases`` and ``slices`` (acquisition-plane slices of all cases) or
    ``slices_per_case``, and ``matrix`` (in-plane size) when the spec slices other planes too.
    ``annotated_fraction`` is the share of slices or images with at least one region (what ``keep_empty:
    false`` keeps); ``regions_per_sample`` the regions on such a sample, or ``annotations`` the published
    count of annotation objects (boxes, masks) of a 2D dataset. ``source`` cites where each published number
    is stated; every field that is this project's estimate, not the publisher's number, is named in
    ``estimated`` with how it was estimated in ``source``."""

    cases: int | None = Field(default=None, ge=1, description="volumes, series or studies the spec reads")
    images: int | None = Field(default=None, ge=1, description="2D images the spec reads")
    slices: int | None = Field(default=None, ge=1, description="acquisition-plane slices over all cases")
    slices_per_case: float | None = Field(default=None, gt=0)
    acquisition: Literal["ax", "co", "sa"] = "ax"
    matrix: int | None = Field(default=None, ge=1, description="in-plane rows ≈ columns of a typical case")
    structures: int = Field(ge=1, description="annotated classes the spec reads")
    annotations: int | None = Field(default=None, ge=0, description="published annotation objects (2D)")
    annotated_fraction: float = Field(default=1.0, gt=0, le=1)
    regions_per_sample: float | None = Field(default=None, ge=0)
    modalities: dict[str, float] | None = Field(
        default=None, description="share of samples per modality when the dataset mixes them (AMOS: CT/MR)"
    )
    source: str = Field(min_length=1)
    estimated: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> DatasetStats:
        fields = set(type(self).model_fields) - {"source", "estimated"}
        unknown = set(self.estimated) - fields
        if unknown:
            raise ValueError(f"estimated names unknown fields {sorted(unknown)} (fields: {sorted(fields)})")
        if (self.images is None) == (self.cases is None and self.slices is None):
            raise ValueError(
                "give 'images' (a 2D dataset) or 'cases' with 'slices' or 'slices_per_case' (3D)"
            )
        if (
            self.images is None
            and self.slices is None
            and (self.cases is None or self.slices_per_case is None)
        ):
            raise ValueError("a 3D dataset needs 'slices', or 'cases' and 'slices_per_case'")
        if self.regions_per_sample is None and self.annotations is None:
            raise ValueError("give 'regions_per_sample' or (2D) 'annotations'")
        if self.annotations is not None and self.images is None:
            raise ValueError("'annotations' projects 2D datasets only; give 'regions_per_sample' for 3D")
        if self.modalities is not None:
            if set(self.modalities) - set(Modality.__args__):  # type: ignore[attr-defined]
                raise ValueError(f"modalities must be among {list(Modality.__args__)}")  # type: ignore[attr-defined]
            if abs(sum(self.modalities.values()) - 1.0) > 1e-6:
                raise ValueError("modalities shares must sum to 1")
        return self


class Overlap(_Strict):
    """Part of this dataset that another shipped spec also holds (one source re-published inside another:
    MSD Task03 is LiTS' training set). Cross-dataset pixel duplicates are settled by the build (same split,
    corpus/split.py); the census counts the shared part once (``medpclip.census``)."""

    spec: str = Field(min_length=1, description="the other spec's name")
    cases: int = Field(ge=1, description="how many of THIS spec's cases (3D) or images (2D) the other holds")
    note: str = Field(min_length=1, description="what is shared and where that is stated")


class DatasetSpec(_Strict):
    name: Annotated[str, Field(min_length=1)]
    root: str = Field(
        min_length=1, description="the dataset's folder under the raw root, as its archive unpacks"
    )
    title: str
    citation: str
    licence: str
    access: Access
    homepage: str
    modality: Modality
    body_part: str
    format: FormatSpec
    labels: tuple[LabelEntry, ...] = Field(min_length=1)
    intensity: IntensitySpec
    slicing: SlicingSpec = SlicingSpec()
    split: SplitSpec = SplitSpec()
    patient_id: PatientIdSpec = PatientIdSpec()
    regions: RegionFilterSpec = RegionFilterSpec()
    unit_items: int = Field(default=0, ge=0, description="items per work unit; 0 = the family's default")
    stats: DatasetStats | None = Field(default=None, description="publisher's counts for the census")
    overlaps: tuple[Overlap, ...] = ()
    synthetic: bool = Field(
        default=False, description="written by `medpclip demo-data`, not a public dataset: no census share"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("must match [a-z0-9][a-z0-9_]* (it becomes part of every sample key)")
        return v

    @field_validator("root")
    @classmethod
    def _root(cls, v: str) -> str:
        p = Path(v)
        if p.is_absolute() or ".." in p.parts:
            raise ValueError("must be a folder name relative to the raw root, without '..'")
        return v

    @model_validator(mode="after")
    def _labels_unique(self) -> DatasetSpec:
        seen_labels: set[str] = set()
        seen_values: set[int] = set()
        for entry in self.labels:
            for s in (entry.label, *entry.aliases):
                if s.lower() in seen_labels:
                    raise ValueError(f"label or alias '{s}' appears twice in labels")
                seen_labels.add(s.lower())
            if entry.value is not None:
                if entry.value in seen_values:
                    raise ValueError(f"label value {entry.value} appears twice in labels")
                seen_values.add(entry.value)
        return self

    # --- look-ups used by readers and the build -------------------------------------------------------
    def label_by_value(self) -> dict[int, LabelEntry]:
        return {e.value: e for e in self.labels if e.value is not None}

    def label_by_name(self) -> dict[str, LabelEntry]:
        """Dataset label string (or alias), lower-cased → entry."""
        out: dict[str, LabelEntry] = {}
        for e in self.labels:
            for s in (e.label, *e.aliases):
                out[s.lower()] = e
        return out

    def patient_of(self, case_id: str, fields: dict[str, object] | None = None) -> str:
        """The raw patient id of a case, by this spec's rule."""
        pid = self.patient_id
        if pid.field is not None:
            value = (fields or {}).get(pid.field)
            if value is None or str(value) == "":
                raise ValueError(f"case '{case_id}' has no field '{pid.field}' for its patient id")
            return str(value)
        if pid.regex is not None:
            m = re.search(pid.regex, case_id)
            if not m:
                raise ValueError(f"case '{case_id}' does not match patient_id.regex '{pid.regex}'")
            return m.group("pid")
        return case_id


# --- loading ---------------------------------------------------------------------------------------------


def _format_validation_error(source: str, err: ValidationError) -> str:
    # a misspelt key also makes the layout's required fields look missing: report the unknown key first
    errors = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    parts = [str(p) for p in first["loc"]]
    layout = None
    if parts[:1] == ["format"] and parts[1:2] and parts[1] in FAMILIES:
        family = FAMILIES[parts.pop(1)]  # pydantic names the union member taken: not a field of the file
        layered = not isinstance(family.options, type)
        if layered and parts[1:2] == ["options"] and len(parts) > 2 and first["type"] != "invalid_layout":
            layout = parts.pop(2)  # and the layout taken, for a family with one options model per layout
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        parts.append("family")
    if first["type"] == "invalid_layout":
        parts.append("layout")
    loc = ".".join(parts) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        where = f" for layout '{layout}'" if layout else ""
        msg = f"unknown field{where} (check the spelling; see `medpclip specs show demo_ct` for a complete spec)"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{source}: field '{loc}': {msg}{more}"


def parse_spec(data: object, source: str = "<spec>") -> DatasetSpec:
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a spec must be a YAML mapping, got {type(data).__name__}")
    try:
        return DatasetSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(_format_validation_error(source, e)) from None


class _SpecLoader(yaml.SafeLoader):
    """``yaml.safe_load`` semantics (no Python tags) without anchors/aliases: a spec never needs them, and
    nested aliases ('billion laughs') load as a tiny graph that explodes when anything walks it."""

    def compose_node(self, parent, index):  # noqa: ANN001 — PyYAML's signature
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not allowed in specs", mark
            )
        return super().compose_node(parent, index)


def load_spec_file(path: Path) -> DatasetSpec:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{path}: cannot read: {e}") from None
    try:
        data = yaml.load(text, Loader=_SpecLoader)  # noqa: S506 — a SafeLoader subclass, see below
    except yaml.YAMLError as e:
        msg = " ".join(str(e).split())
        raise SpecError(
            f"{path}: not valid YAML (only plain YAML is accepted, no Python tags): {msg}"
        ) from None
    spec = parse_spec(data, str(path))
    if path.parent.resolve() == SPECS_DIR and spec.name != path.stem:
        raise SpecError(f"{path}: field 'name': '{spec.name}' must equal the file name '{path.stem}'")
    _check_concepts(spec, str(path))
    return spec


def _check_concepts(spec: DatasetSpec, source: str) -> None:
    """Every label must map to a concept of the KB (its CUI, semantic types and priors come from there)."""
    from medpclip.text.kb import spec_concept_problems

    problems = spec_concept_problems(spec)
    if problems:
        i, msg = problems[0]
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise SpecError(f"{source}: field 'labels.{i}': {msg}{more}")


def available_specs(specs_dir: Path = SPECS_DIR) -> list[str]:
    return sorted(p.stem for p in specs_dir.glob("*.yaml"))


def resolve_spec(name_or_path: str, specs_dir: Path = SPECS_DIR) -> DatasetSpec:
    """A spec by name (a file in ``dataset_specs/``) or by path to a YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise SpecError(f"{name_or_path}: no such spec file")
        return load_spec_file(candidate)
    path = specs_dir / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(available_specs(specs_dir)) or "none"
        raise SpecError(f"unknown spec '{name_or_path}' (known: {known}; or pass a path to a .yaml file)")
    return load_spec_file(path)


def resolve_specs(names: str | list[str], specs_dir: Path = SPECS_DIR) -> list[DatasetSpec]:
    """Comma-separated names/paths → specs, refusing duplicates."""
    items = names.split(",") if isinstance(names, str) else list(names)
    items = [s.strip() for s in items if s.strip()]
    if not items:
        raise SpecError("no spec given (pass --spec NAME[,NAME…])")
    specs = [resolve_spec(s, specs_dir) for s in items]
    seen: set[str] = set()
    for s in specs:
        if s.name in seen:
            raise SpecError(f"spec '{s.name}' given twice")
        seen.add(s.name)
    return specs
