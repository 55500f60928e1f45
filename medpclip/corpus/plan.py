"""Plan a build: specs → discovered items → deterministic work units, each with a fingerprint.

Planning runs on the driver and reads no pixels: discovery lists cases, cases are ordered by key (so every
unit writes ascending keys), cut into units, and each unit gets a fingerprint of everything that decides its
bytes (spec, items, code version, parameters). A unit whose marker carries that fingerprint is done.

A reader's ``discover`` may RETURN (as its generator's value) notes about the dataset as a whole
(``frame.DiscoveryNote``; the tables reader: rows naming images that are not on disk, one per table file):
each becomes a plan-stage reject row and a line of ``Plan.notes`` (build.json, the build summary).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medpclip import __version__
from medpclip.corpus import schema
from medpclip.corpus.encoding import codec_versions
from medpclip.corpus.sample import SampleParams
from medpclip.corpus.schema import reject_row
from medpclip.corpus.shards import DEFAULT_SHARD_BYTES
from medpclip.corpus.split import Overrides
from medpclip.frame import DiscoveryNote, ReadError, SourceItem
from medpclip.sources import get_reader
from medpclip.sources._common import symlink_problems
from medpclip.specs import DatasetSpec

PACKAGE_DIR = Path(__file__).resolve().parent.parent
# Modules (and their data) that decide the bytes of a sample; a change to any of them changes every fingerprint.
_OUTPUT_CODE = ("frame.py", "imaging.py", "regions.py", "specs.py", "sources", "text", "corpus")


class BuildError(RuntimeError):
    """Nothing could run (bad arguments, no readable dataset): the CLI prints it as one line."""


@dataclass(frozen=True)
class BuildParams:
    max_side: int = 1024
    id_salt: str = "medpclip-ids-v1"
    shard_max_bytes: int = DEFAULT_SHARD_BYTES

    def sample_params(self) -> SampleParams:
        return SampleParams(max_side=self.max_side, id_salt=self.id_salt)


@dataclass(frozen=True)
class WorkUnit:
    dataset: str
    unit: int
    spec_json: str
    items: tuple[SourceItem, ...]
    raw_root: str
    out: str
    params: BuildParams
    fingerprint: str
    # Duplicate overrides for patients of this unit (hashed patient id, forced split), part of the fingerprint.
    forced_splits: tuple[tuple[str, str], ...] = ()
    base_fingerprint: str = ""  # the fingerprint before the overrides

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> WorkUnit:
        d = json.loads(text)
        items = tuple(SourceItem.from_dict(i) for i in d["items"])
        return WorkUnit(
            dataset=d["dataset"],
            unit=d["unit"],
            spec_json=d["spec_json"],
            items=items,
            raw_root=d["raw_root"],
            out=d["out"],
            params=BuildParams(**d["params"]),
            fingerprint=d["fingerprint"],
            forced_splits=tuple((p, s) for p, s in d["forced_splits"]),
            base_fingerprint=d["base_fingerprint"],
        )

    def patient_hashes(self) -> set[str]:
        return {schema.hash_id(self.params.id_salt, self.dataset, i.patient_id) for i in self.items}

    def with_overrides(self, overrides: Overrides) -> WorkUnit:
        """This unit with the overrides of its patients; its fingerprint changes only when they do."""
        mine = overrides.get(self.dataset, {})
        forced = tuple(sorted((p, mine[p]) for p in self.patient_hashes() if p in mine))
        fp = self.base_fingerprint
        if forced:
            fp = hashlib.sha256(json.dumps([fp, forced]).encode()).hexdigest()
        return dataclasses.replace(self, forced_splits=forced, fingerprint=fp)


@dataclass
class Plan:
    out: Path
    params: BuildParams
    units: list[WorkUnit]
    rejects: dict[str, list[dict[str, Any]]]  # dataset → plan-stage reject rows
    specs: list[DatasetSpec]
    overrides: Overrides = dataclasses.field(default_factory=dict)  # as in manifests/split_overrides.json
    settled: bool = False  # duplicate overrides derived from this plan's manifests and applied
    # dataset → lines for the build summary (a table only part of whose images are on disk)
    notes: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def with_overrides(self, overrides: Overrides) -> Plan:
        units = [u.with_overrides(overrides) for u in self.units]
        return dataclasses.replace(self, units=units, overrides=overrides)


# --- plan ------------------------------------------------------------------------------------------------


def code_version() -> str:
    """Hash of the code that decides output bytes (so a code change rebuilds, a docs change does not), and
    of the codec libraries' versions (a new zlib-ng deflates to other bytes)."""
    h = hashlib.sha256(__version__.encode())
    h.update(codec_versions().encode())
    for name in _OUTPUT_CODE:
        p = PACKAGE_DIR / name
        # Code and the data shipped with it (the concept KB decides CUIs and texts).
        files = sorted([*p.rglob("*.py"), *p.rglob("*.jsonl")]) if p.is_dir() else [p]
        for f in files:
            h.update(str(f.relative_to(PACKAGE_DIR)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _item_fingerprint(item: SourceItem, raw_root: Path) -> list[Any]:
    """Identity of an item's inputs without reading them: relative paths and sizes (not mtimes, so a raw
    root copied elsewhere resumes instead of rebuilding). Content hashes are computed while reading."""
    sizes = []
    for f in item.files:
        try:
            sizes.append((f.path, (raw_root / f.path).stat().st_size))
        except OSError:
            sizes.append((f.path, None))
    return [item.case_id, sizes, list(item.meta), item.patient_id, item.official_split]


def _discover(reader: Any, spec: DatasetSpec, root: Path) -> tuple[list[SourceItem], list[DiscoveryNote]]:
    """The items ``reader.discover`` yields and the notes its generator returns (none for most readers)."""
    found = iter(reader.discover(spec, root))
    items: list[SourceItem] = []
    while True:
        try:
            items.append(next(found))
        except StopIteration as stop:
            return items, list(stop.value or ())


def plan_build(
    specs: list[DatasetSpec],
    raw_root: Path,
    out: Path,
    params: BuildParams,
    overrides: Overrides | None = None,
    unit_raw_root: str | None = None,
) -> Plan:
    """Discover under ``raw_root`` and cut units. ``unit_raw_root`` is where the units read their files when
    that is not ``raw_root`` itself: a raw URL, planned on its local discovery skeleton (``raw_staging``)."""
    code = code_version()
    units: list[WorkUnit] = []
    rejects: dict[str, list[dict[str, Any]]] = {}
    notes: dict[str, list[str]] = {}
    for spec in specs:
        rows = rejects.setdefault(spec.name, [])
        root = raw_root / spec.root
        if not root.is_dir():
            rows.append(
                reject_row(
                    spec.name,
                    -1,
                    "plan",
                    "missing_root",
                    f"no folder '{spec.root}' under the raw root",
                    spec.root,
                )
            )
            continue
        # Symlinks discovery will not follow (loops, targets outside the dataset folder): said, not silent.
        for reason, rel, detail in symlink_problems(root, spec.root):
            rows.append(reject_row(spec.name, -1, "plan", reason, detail, rel))
        reader = get_reader(spec.format.family)
        try:
            items, said = _discover(reader, spec, root)
        except ReadError as e:
            rows.append(reject_row(spec.name, -1, "plan", e.reason, e.detail, spec.root))
            continue
        for note in said:
            rows.append(reject_row(spec.name, -1, "plan", note.reason, note.detail, note.path))
            if note.summary is not None:
                notes.setdefault(spec.name, []).append(note.summary)
        # Cases run in key order, so the keys a unit writes ascend (DESIGN §4: members sorted by key).
        items.sort(key=lambda i: schema.key_prefix(spec.name, i.case_id))
        unique: list[SourceItem] = []
        seen: dict[str, str] = {}
        for item in items:
            prefix = schema.key_prefix(spec.name, item.case_id)
            if prefix in seen:
                rows.append(
                    reject_row(
                        spec.name,
                        -1,
                        "plan",
                        "duplicate_key",
                        f"case '{item.case_id}' maps to the same key as '{seen[prefix]}'",
                        item.files[0].path,
                    )
                )
                continue
            seen[prefix] = item.case_id
            unique.append(item)
        per_unit = spec.unit_items or reader.unit_items
        spec_json = spec.model_dump_json()
        for n, start in enumerate(range(0, len(unique), per_unit)):
            chunk = tuple(unique[start : start + per_unit])
            fp = hashlib.sha256(
                json.dumps(
                    [
                        spec_json,
                        code,
                        dataclasses.asdict(params),
                        [_item_fingerprint(i, raw_root) for i in chunk],
                    ],
                    sort_keys=True,
                    default=str,
                ).encode()
            ).hexdigest()
            unit = WorkUnit(
                spec.name,
                n,
                spec_json,
                chunk,
                unit_raw_root or str(raw_root),
                str(out),
                params,
                fp,
                base_fingerprint=fp,
            )
            units.append(unit)
    plan = Plan(out=out, params=params, units=units, rejects=rejects, specs=specs, notes=notes)
    return plan.with_overrides(overrides or {})
