"""What a corpus holds: sample keys, the sample and region records, and their Arrow schemas.

The sample record (``KEY.json`` in the shards) is the contract with every consumer; ``docs/FORMATS.md``
documents it and ``medpclip/schemas/sample.schema.json`` is its JSON schema. The Parquet manifests flatten
the same records for DuckDB.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa

KEY_RE = re.compile(r"^[a-z0-9_-]+$")
MAX_SLUG = 40
# A DICOM UID (PS3.5 §9): digit components joined by dots. Five or more components, so that versions,
# IP addresses and dates are never taken for one. UIDs are in the PS3.15 Annex E basic profile (action U):
# they never reach an output as they are, only as a pseudonym token (see ``scrub_uids``).
UID_RE = re.compile(r"(?<![0-9.])[0-9]+(?:\.[0-9]+){4,}(?![0-9]|\.[0-9])")
SCHEMA_VERSION = 1
SAMPLE_SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "sample.schema.json"


# --- keys ------------------------------------------------------------------------------------------------


def uid_token(uid: str) -> str:
    """The pseudonym of a DICOM UID in outputs: stable (keys do not depend on the id salt), one-way."""
    return "uid-" + hashlib.sha256(f"medpclip-uid\x00{uid}".encode()).hexdigest()[:16]


def scrub_uids(text: str) -> str:
    """``text`` with every DICOM UID replaced by its :func:`uid_token`: for case ids, paths and reject details
    (a DICOM file or folder named by its SOP/Series/Study Instance UID is common: SIIM, Orthanc exports)."""
    return UID_RE.sub(lambda m: uid_token(m.group(0)), text) if "." in text else text


def case_slug(case_id: str) -> str:
    """A readable, key-safe form of a dataset's case id.

    Lower-case letters, digits, ``_`` and ``-`` only. When anything had to change (case, other characters,
    length) a short hash of the original id is appended, so two ids that slug alike never collide:
    ``benign (1)`` → ``benign-1-3f2a9c1e``, ``00000001_000`` → ``00000001_000``. DICOM UIDs in the id are
    replaced by their pseudonym first (:func:`scrub_uids`): a key never carries a raw UID.
    """
    public = scrub_uids(case_id)
    slug = re.sub(r"[^a-z0-9_-]+", "-", public.lower())
    slug = re.sub(r"-{2,}", "-", slug).strip("-_")
    if slug == case_id and 0 < len(slug) <= MAX_SLUG:
        return slug
    digest = hashlib.sha1(public.encode("utf-8")).hexdigest()[:8]
    slug = slug[:MAX_SLUG].rstrip("-_")
    return f"{slug}-{digest}" if slug else digest


def key_prefix(dataset: str, case_id: str) -> str:
    """Everything of a key before the plane: cases are processed in this order so keys ascend."""
    return f"{dataset}_{case_slug(case_id)}_"


def sample_key(dataset: str, case_id: str, plane: str, index: int) -> str:
    key = f"{key_prefix(dataset, case_id)}{plane}{index:04d}"
    if not KEY_RE.match(key):  # dataset names are validated by the spec; this guards the contract itself
        raise ValueError(f"invalid sample key {key!r}")
    return key


def hash_id(salt: str, dataset: str, raw_id: str) -> str:
    """A salted, one-way id: raw patient and study ids never leave the raw root."""
    return hashlib.sha256(f"{salt}\x00{dataset}\x00{raw_id}".encode()).hexdigest()[:16]


# --- Arrow schemas of the manifests --------------------------------------------------------------------

SAMPLES = pa.schema(
    [
        ("key", pa.string()),
        ("dataset", pa.string()),
        ("split", pa.string()),
        ("modality", pa.string()),
        ("body_part", pa.string()),
        ("plane", pa.string()),
        ("slice_index", pa.int32()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("channels", pa.int8()),
        ("spacing_row_mm", pa.float32()),
        ("spacing_col_mm", pa.float32()),
        ("intensity", pa.string()),
        ("patient_id", pa.string()),
        ("study_id", pa.string()),
        ("case_id_hash", pa.string()),
        ("source_path", pa.string()),
        ("source_sha256", pa.string()),
        ("caption", pa.string()),
        ("image_labels", pa.list_(pa.string())),
        ("report_text", pa.string()),
        ("n_regions", pa.int32()),
        ("pixel_sha256", pa.string()),
        ("phash", pa.int64()),
        ("split_by_rule", pa.string()),  # the spec's split rule's choice; ``split`` differs after dedup
        ("image_format", pa.string()),  # png | jpg
        ("image_bytes", pa.int64()),
        ("shard", pa.string()),
        ("unit", pa.int32()),
    ]
)

REGIONS = pa.schema(
    [
        ("key", pa.string()),
        ("rid", pa.int32()),
        ("dataset", pa.string()),
        ("split", pa.string()),
        ("modality", pa.string()),
        ("body_part", pa.string()),
        ("plane", pa.string()),
        ("label", pa.string()),
        ("name", pa.string()),
        ("category", pa.string()),
        ("concept_id", pa.string()),
        ("cui", pa.string()),
        ("semantic_types", pa.list_(pa.string())),
        ("kind", pa.string()),
        ("instance", pa.int32()),
        ("area_px", pa.int64()),
        ("area_fraction", pa.float32()),
        ("x0", pa.int32()),
        ("y0", pa.int32()),
        ("x1", pa.int32()),
        ("y1", pa.int32()),
        ("n_points", pa.int16()),
        ("has_mask", pa.bool_()),
        ("annotator", pa.string()),
        ("patient_id", pa.string()),
    ]
)

SOURCES = pa.schema(
    [
        ("dataset", pa.string()),
        ("unit", pa.int32()),
        ("case_id_hash", pa.string()),
        ("role", pa.string()),
        ("path", pa.string()),
        ("bytes", pa.int64()),
        ("sha256", pa.string()),
        ("status", pa.string()),  # ok | rejected
        ("n_samples", pa.int32()),
    ]
)

REJECTS = pa.schema(
    [
        ("dataset", pa.string()),
        ("unit", pa.int32()),
        ("stage", pa.string()),  # plan | read | frame | region
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("path", pa.string()),
        ("key", pa.string()),
        ("label", pa.string()),
    ]
)

MANIFESTS: dict[str, pa.Schema] = {
    "samples": SAMPLES,
    "regions": REGIONS,
    "sources": SOURCES,
    "rejects": REJECTS,
}


def reject_row(
    dataset: str,
    unit: int,
    stage: str,
    reason: str,
    detail: str,
    path: str | None = None,
    key: str | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    """One row of the rejects manifest: what was refused, at which stage, why. DICOM UIDs in the path and
    the detail are pseudonymised (:func:`scrub_uids`)."""
    return {
        "dataset": dataset,
        "unit": unit,
        "stage": stage,
        "reason": reason,
        "detail": scrub_uids(detail),
        "path": scrub_uids(path) if path is not None else None,
        "key": key,
        "label": label,
    }


def table(kind: str, rows: list[dict[str, Any]]) -> pa.Table:
    """Rows → a table with the manifest's exact schema (missing optional fields become null)."""
    schema = MANIFESTS[kind]
    return pa.Table.from_pylist([{f: r.get(f) for f in schema.names} for r in rows], schema=schema)


def load_sample_json_schema() -> dict[str, Any]:
    return json.loads(SAMPLE_SCHEMA_PATH.read_text(encoding="utf-8"))
