"""Volume family (NIfTI, MetaImage, NRRD): a 3D (or 4D) image per case, annotated by one integer label volume on
the same grid or by one binary mask volume per structure.

Layouts (``spec.format.options.layout``) say how cases are found:

- ``msd`` — from lists in an index file (``index``, default ``dataset.json``): Medical Segmentation Decathlon
  tasks, AMOS22. ``lists`` maps list names to the official split of their cases (default
  ``{training: null}``: MSD's only labelled list, no official split). Entries are ``{"image", "label"}``
  with ``./`` paths; an entry without a label (MSD ``test`` lists plain path strings) is read only when a
  label file ``labelsXx/<name>`` lies beside ``imagesXx/<name>``. Never a directory listing, which also keeps
  macOS ``._*`` files out.
- ``pairs`` — one case per image file: ``images`` (a glob) and ``labels`` or ``masks`` (patterns).
  ``case_regex`` (group ``case``) turns the image's stem into the case id; images it does not match are not
  cases. A label file whose image is missing still becomes a case, rejected as ``missing_file``.
- ``cases`` — one case per folder: ``cases`` (a glob of folders, or a list of globs whose matches are joined;
  the folder name, or ``case_regex``'s group ``case`` on it, is the case id), ``image`` and ``labels`` or
  ``masks`` (patterns).

Pattern placeholders: ``{case}``; ``{stem}`` (pairs: the image file name without its image suffix,
``.nii.gz``/``.nii``/``.mha``/``.mhd``/``.nrrd``/``.nhdr``); ``{dir}`` (the image's folder in pairs, the case
folder in cases, relative to the dataset folder); ``{sequence}`` (option ``sequence``: which per-sequence file
of a multi-file MR case to read, e.g. BraTS ``flair``); ``{label}`` (masks: a spec ``label`` string). A pattern
ending ``.nii.gz`` also finds ``.nii`` and vice versa (BraTS 2020 ships one segmentation as ``.nii``), and
likewise ``.mhd`` ↔ ``.mha`` and ``.nrrd`` ↔ ``.nhdr`` (the same image, header detached or not). The data file
of a detached header (``Case00.raw``/``.zraw`` beside ``Case00.mhd``) is never an image or label: globs skip
it and a pattern naming one is refused when the spec loads.

Annotations:

- ``labels`` — an integer label volume: 0 is background, every other value must be the ``value`` of a spec
  label (else ``bad_label_value``); float-stored labels are rounded; ``(x, y, z, 1)`` shapes are 3D.
- ``masks`` — one binary volume per spec label (TotalSegmentator ``segmentations/<structure>.nii.gz``),
  binarised at 0.5 and kept as separate named masks, so overlapping structures both survive. An all-zero
  mask is an absent structure (no region). A missing mask file (a partial download, an older release) is by
  default left out: the case is built with the masks it has and each absent file is one plan-stage
  ``missing_file`` row, naming the case (``missing_masks: skip``; ``discover`` returns them as
  ``frame.DiscoveryNote``). ``missing_masks: reject`` refuses such a case whole (``missing_file``, read);
  ``empty`` takes the missing file for an absent structure, without a row.

More options:

- ``channel`` — for 4D images (channels last, as nibabel reads them): an index, or (msd) a name from the
  index's ``modality``/``channel_names`` map such as ``FLAIR``. Required when an image has several channels.
- ``study_regex`` (group ``study``) — the study id from the case id (BraTS 2023: the timepoint).
- ``split_by_path`` — prefix of the image path (relative to the dataset folder) → official split.
- ``annotation_dirs`` (pairs) — image folder → the folder holding its labels or masks, which ``{dir}`` then
  names in ``labels``/``masks`` (WORD: ``imagesTr`` → ``labelsTr``, ``imagesVal`` → ``labelsVal``).
- ``annotation_dir_parts`` (pairs, cases) — folder name → the name that replaces it in the ``{dir}`` of
  ``labels``/``masks``: an annotation tree beside the image tree, whatever the depth (BIDS ``rawdata`` →
  ``derivatives``: VerSe's ``dataset-01training/rawdata/sub-gl003/`` has its masks in
  ``dataset-01training/derivatives/sub-gl003/``). Applied after ``annotation_dirs``; each side is one folder
  name (checked when the spec loads). Only files inside a swapped-in folder are labels, so a label pattern
  that names the image's own file name (INSTANCE: ``data/001.nii.gz`` → ``label/001.nii.gz``, labels
  ``{dir}/{stem}.nii.gz``) does not take the images for labels. A label without its image is a rejected case only where ``images``
  could have put that image (its folder with the names swapped back matches the glob's folder): another
  release's derivatives beside the one read (VerSe'19's) are not cases.
- ``table`` — a delimited file of per-case rows (``path``, ``delimiter``, ``id_column``, ``split_column``;
  UTF-8 with or without BOM): the split column gives the official split, the row's columns are fields for
  ``patient_id.field``. A row naming a case that is not on disk becomes a rejected case.
- ``info`` — pattern of a per-case ``key: value`` file (ACDC ``Info.cfg``); its entries are fields too, and
  are kept in the item's meta. A case without one is read all the same.
- ``modality_by_id`` — ``regex`` (group ``id``) over the case id and ``ranges`` of ``{first, last,
  modality}``: mixed-modality datasets (AMOS22: ids up to 500 are CT, above are MR). Sets ``Frame.modality``.
- ``case_regex_on`` (pairs, cases) — ``name`` (default): ``case_regex`` (or, without one, the case id itself)
  is taken from the image's stem (pairs) or the folder's name (cases); ``path``: from its path relative to
  the dataset folder (pairs: ``<folder>/<stem>``). For datasets whose case folder is a study inside a
  patient folder (autoPET ``PETCT_<patient>/<study date>/``): the case id keeps the parent, and
  ``patient_id.regex`` takes the patient from it, so a patient's studies share one split.
- ``label_sets`` (pairs, cases; with ``labels``) — spec label → the label-map values that make up that
  structure, for maps whose values code the overlap of structures (SegRap2023 Task 1: value 6 is the part the
  left temporal lobe and the left hippocampus share, so ``TemporalLobe_L: [4, 6]`` and ``Hippocampus_L: [8,
  6]``; ``Brain`` is values 1-9). Each spec label then becomes its own binary mask (like ``masks``), so
  overlapping structures both survive; a value in no set is ``bad_label_value``. Every spec label needs a
  set and every set a spec label (``bad_option``); the labels' own ``value`` is not used.
- ``instance_table`` (pairs, cases; with ``labels``) — ``{path, delimiter, id_column, instance_column,
  class_column, classes}`` for label maps whose values are instance ids classed by a per-instance table
  (RibFrac: ``RibFrac1-label.nii.gz`` holds fracture ids 1…N; ``ribfrac-train-info-1.csv`` rows
  ``public_id,label_id,label_code`` give each id's code, ``classes`` maps a code to a spec label: ``"1":
  displaced`` … ``"-1": unidentified``). ``path`` is one table or a list of globs whose rows are joined. The
  tables are read at discovery and each case's ``(instance, label)`` pairs travel in its meta; at read every
  instance becomes its own mask under its class's label, so touching instances of one class stay two
  regions. Instance 0 is background whatever its row says. A voxel value without a row is
  ``bad_label_value``; a case with no rows, a non-integer instance id, a code not in ``classes`` or two rows
  giving one instance two codes is ``bad_row``; rows naming cases not on disk are one ``missing_files``
  plan note per table. Class labels must be spec labels (``bad_option``); excludes ``label_sets`` and
  ``time_frames``; the labels' own ``value`` is not used.
- ``hu_offset`` — a number added to every voxel of a CT case before windowing, for publishers that store
  Hounsfield units shifted so that air is 0 (KiPA22 stores HU + 1000: ``hu_offset: -1000``). Default 0 (the
  voxels as stored, scaled by the header's slope and intercept); refused (``bad_option``) for a spec with no
  CT cases.
- ``exclude`` — case id (as discovered, before ``time_frames``) → why it is never read (ATM'22's withdrawn
  ``ATM_164_0000``). Each such case is one plan-stage ``excluded_case`` row with that reason (``discover``
  returns them as ``frame.DiscoveryNote``), never a silent drop; an id no case on disk has is one such row
  too (a release without it, or a typo that would otherwise read the very case meant to be left out). Checked
  when the spec loads: every entry needs an id and a reason.
- ``time_frames`` (pairs, cases) — fields (``table`` columns or ``info`` keys) holding 0-based time-frame
  indices of a 4D image and its 4D label or masks (M&Ms ``ED``, ``ES``): the case becomes one case per
  field, ``<case>_<field>`` (``A0S9V9_ED``), which reads only that frame of image and annotation; the frames
  of a case are one study. A value that is not a non-negative integer is ``bad_row`` (read); a frame past the
  file's last is ``bad_dimensions``. Needs ``table`` or ``info``, and excludes ``channel`` (both pick the
  fourth axis).

Reading: NIfTI (and Analyze, MGH) with nibabel; MetaImage (``.mha``, ``.mhd`` + ``.raw``/``.zraw``) and NRRD
(``.nrrd``, ``.nhdr``) with SimpleITK (``itk_images.py``), as an image in nibabel's ``(x, y, z[, c])`` order with
the RAS affine of ITK's spacing, origin and direction (ITK's LPS with its first two rows flipped), so both kinds
take the same path from here on; a header ITK cannot parse, or a data file missing or shorter than its header
says, is ``unreadable_image``. CT cases are handed over in HU (``intensity="hu"``, windowed by the spec),
every other modality as ``raw`` (percentile-normalised with the spec's ``intensity.low``/``high``). Image and
annotation volumes must share grid shape and axis codes (``shape_mismatch``, ``geometry_mismatch``); both are
reoriented to RAS+ with the image's affine, so files stored LPS, or slices-first like KiTS, are sliced along
the true axes, and cut into display slices along every plane of ``spec.slicing``.
"""

from __future__ import annotations

import fnmatch
import json
import re
import zlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import nibabel as nib
import numpy as np
from zlib_ng.zlib_ng import error as gzip_ng_error

from medpclip.frame import DiscoveryNote, Frame, ReadError, SourceFile, SourceItem
from medpclip.imaging import display_slice, iter_slices, reorient_canonical
from medpclip.sources._common import (
    SPLIT_WORDS,
    check_pixels,
    existing,
    file_of,
    files_of,
    glob_files,
    is_junk,
    make_item,
    parse_options,
    raise_item_error,
    raw_path,
    rows_by_id,
    sorted_items,
    strip_dot,
    table_rows,
)
from medpclip.sources.volumes.itk_images import detached_data_file, is_data_file, is_itk, load_itk
from medpclip.sources.volumes.nifti_files import load_nifti
from medpclip.sources.volumes.options import (
    IMAGE_SUFFIXES,
    PLACEHOLDER_RE,
    CaseVolumes,
    InstanceTable,
    MsdVolumes,
    PairVolumes,
    VolumeLayout,
)
from medpclip.specs import DatasetSpec

_SUFFIXES = IMAGE_SUFFIXES
# a pattern naming one of these also finds the other (the same image, compressed or not / header attached or
# detached): ``_resolve``
_VARIANTS = ((".nii.gz", ".nii"), (".nii", ".nii.gz"), (".mhd", ".mha"), (".mha", ".mhd"), (".nrrd", ".nhdr"),
             (".nhdr", ".nrrd"))  # fmt: skip
_PLANE_AXIS = {"sa": 0, "co": 1, "ax": 2}


def file_stem(name: str) -> str:
    """The file name without its image suffix (``.nii.gz``, ``.nii``, ``.mha``, ``.mhd``, ``.nrrd``, …)."""
    for suffix in _SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return PurePosixPath(name).stem


# --- discover ----------------------------------------------------------------------------------------------


@dataclass
class _Case:
    """A case as found on disk, before the spec's id, split and field rules make it a SourceItem."""

    case: str
    files: list[tuple[str, str]]  # (role, path relative to the dataset folder)
    dir: str = ""
    stem: str = ""
    official: str | None = None
    meta: dict[str, object] = field(default_factory=dict)
    fields: dict[str, object] = field(default_factory=dict)
    error: tuple[str, str] | None = None
    absent: list[str] = field(
        default_factory=list
    )  # mask files the case is built without (missing_masks: skip)


def discover(spec: DatasetSpec, root: Path) -> Generator[SourceItem, None, list[DiscoveryNote]]:
    opts = parse_options(spec, VolumeLayout)
    _check_intensity(spec, opts)
    if isinstance(opts, MsdVolumes):
        cases = _msd_cases(spec, root, opts)
    elif isinstance(opts, PairVolumes):
        cases = _pair_cases(spec, root, opts)
    else:
        assert isinstance(opts, CaseVolumes)
        cases = _folder_cases(spec, root, opts)
    for c in cases:
        for prefix, split in opts.split_by_path.items():
            if c.files[0][1].startswith(prefix):
                c.official = split
                break
    if opts.table is not None:
        cases = _apply_table(spec, root, opts, cases)
    table_notes = []
    if isinstance(opts, PairVolumes | CaseVolumes) and opts.instance_table is not None:
        table_notes = _apply_instance_table(spec, root, opts.instance_table, cases)
    cases, notes = _exclude(spec, opts, cases)
    notes = table_notes + notes
    items = []
    for c in cases:
        if opts.info is not None and c.error is None:
            info = _read_info(root, _fill(opts.info, case=c.case, dir=c.dir, stem=c.stem))
            if info:
                c.fields.update(info)
                c.meta["info"] = tuple(sorted(info.items()))
        study = None
        if opts.study_regex is not None:
            m = re.search(opts.study_regex, c.case)
            if m is None:
                c.error = c.error or ("bad_case_id", f"case '{c.case}' does not match study_regex")
            else:
                study = m.group("study")
        if opts.modality_by_id is not None:
            modality = opts.modality_by_id.modality_of(c.case)
            if modality is None:
                c.error = c.error or (
                    "bad_case_id",
                    f"case '{c.case}' has no modality by modality_by_id (regex or ranges do not cover it)",
                )
            else:
                c.meta["modality"] = modality
        files = [SourceFile(role, raw_path(spec, rel)) for role, rel in c.files]
        files += _detached_data_files(spec, root, c.files)
        for case, meta, error, case_study in _frame_cases(opts, c, study):
            items.append(
                make_item(
                    spec,
                    case,
                    files,
                    fields=c.fields,
                    study_id=case_study,
                    official_split=c.official,
                    meta=meta,
                    error=error,
                )
            )
    yield from sorted_items(items)
    return notes + [
        DiscoveryNote(
            "missing_file",
            f"case '{c.case}': {raw_path(spec, rel)} is absent; the case is built with its other "
            f"{len(c.meta.get('structures', ()))} masks (format.options.missing_masks: reject refuses it)",
            raw_path(spec, rel),
        )
        for c in sorted(cases, key=lambda c: c.case)
        if c.error is None
        for rel in c.absent
    ]


def _exclude(
    spec: DatasetSpec, opts: VolumeLayout, cases: list[_Case]
) -> tuple[list[_Case], list[DiscoveryNote]]:
    """Cases the spec's ``exclude`` names are never read: one plan note each, with the spec's reason; an id
    no case on disk has is one note too (a typo there would read the very case meant to be left out)."""
    if not opts.exclude:
        return cases, []
    kept, notes, seen = [], [], set()
    for c in cases:
        why = opts.exclude.get(c.case)
        if why is None:
            kept.append(c)
            continue
        seen.add(c.case)
        path = raw_path(spec, c.files[0][1]) if c.files else spec.root
        detail = f"case '{c.case}' is not read: {why} (format.options.exclude)"
        notes.append(DiscoveryNote("excluded_case", detail, path))
    for case in sorted(set(opts.exclude) - seen):
        detail = (
            f"format.options.exclude names case '{case}' ({opts.exclude[case]}), which is not on disk: "
            f"a release without it, or a typo in the id"
        )
        notes.append(DiscoveryNote("excluded_case", detail, spec.root))
    return kept, sorted(notes, key=lambda n: n.detail)


def _frame_cases(
    opts: VolumeLayout, c: _Case, study: str | None
) -> list[tuple[str, dict[str, object], tuple[str, str] | None, str | None]]:
    """The case as items: itself, or (``time_frames``) one per named frame field, ``<case>_<field>``, each
    reading that 0-based frame of its 4D image and label; the frames of a case are one study."""
    names = getattr(opts, "time_frames", ())
    if not names:
        return [(c.case, c.meta, c.error, study)]
    out = []
    for name in names:
        meta, error = dict(c.meta), c.error
        value = str(c.fields.get(name, "")).strip()
        if value.isdigit():
            meta["frame"] = int(value)
        else:
            where = opts.table.path if opts.table is not None else "its info file"
            error = error or (
                "bad_row",
                f"case '{c.case}': time frame '{name}' is {value or 'absent'!r} in {where}, not a frame index",
            )
        out.append((f"{c.case}_{name}", meta, error, study or c.case))
    return out


def _check_intensity(spec: DatasetSpec, opts: VolumeLayout) -> None:
    modalities = {spec.modality}
    if opts.modality_by_id is not None:
        modalities = {r.modality for r in opts.modality_by_id.ranges}
    if "CT" in modalities and spec.intensity.kind != "ct_window":
        raise ReadError(
            "bad_option", f"spec '{spec.name}' has CT cases: intensity.kind must be ct_window (a CT window)"
        )
    sets = getattr(opts, "label_sets", {})
    if sets and set(sets) != {e.label for e in spec.labels}:
        missing = sorted({e.label for e in spec.labels} - set(sets))
        unknown = sorted(set(sets) - {e.label for e in spec.labels})
        raise ReadError(
            "bad_option",
            f"spec '{spec.name}': format.options.label_sets must name every spec label once "
            f"(no set: {missing or 'none'}; not a spec label: {unknown or 'none'})",
        )
    table = getattr(opts, "instance_table", None)
    if table is not None and not set(table.classes.values()) <= {e.label for e in spec.labels}:
        unknown = sorted(set(table.classes.values()) - {e.label for e in spec.labels})
        raise ReadError(
            "bad_option",
            f"spec '{spec.name}': format.options.instance_table.classes names {unknown}, not spec labels",
        )
    if opts.hu_offset and "CT" not in modalities:
        raise ReadError(
            "bad_option",
            f"spec '{spec.name}': format.options.hu_offset shifts Hounsfield units; it has no CT",
        )


# --- msd: cases from index lists ---


def _msd_cases(spec: DatasetSpec, root: Path, opts: MsdVolumes) -> list[_Case]:
    index = _read_index(root, opts.index)
    meta: dict[str, object] = {}
    if isinstance(opts.channel, str):
        meta["channel"] = _channel_by_name(index, opts.channel, opts.index)
    out, absent = [], set()
    for list_name, split in opts.lists.items():
        entries = index.get(list_name)
        if not isinstance(entries, list):
            raise ReadError("unreadable_table", f"{opts.index} has no list '{list_name}'")
        for entry in entries:
            image, label = _index_entry(entry, opts.index, list_name)
            if is_junk(image):
                continue
            if label is None:  # unlabelled by publication (MSD test) unless labels lie beside the images
                label = _label_beside(image)
                if label is None or not (root / label).is_file():
                    continue
            if not (root / label.parent).is_dir():  # a release without this list's labels (AMOS labelsTs)
                absent.add(label.parent.as_posix())
                continue
            files = [("image", image.as_posix()), ("label", _resolve(root, label.as_posix()))]
            out.append(
                _Case(
                    file_stem(image.name), files, dir=image.parent.as_posix(), official=split, meta=dict(meta)
                )
            )
    if not out and absent:
        raise ReadError(
            "missing_file", f"no label folder of {opts.index}: {', '.join(sorted(absent))} absent"
        )
    return out


def _read_index(root: Path, name: str) -> dict:
    try:
        data = json.loads((root / name).read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise ReadError("missing_file", f"{name} (the index this layout is driven by)") from None
    except (OSError, ValueError) as e:
        raise ReadError("unreadable_table", f"{name}: {type(e).__name__}: {e}") from None
    if not isinstance(data, dict):
        raise ReadError("unreadable_table", f"{name}: not a JSON object")
    return data


def _index_entry(entry: object, index: str, list_name: str) -> tuple[PurePosixPath, PurePosixPath | None]:
    if isinstance(entry, str):
        return strip_dot(entry), None
    if isinstance(entry, dict) and isinstance(entry.get("image"), str):
        label = entry.get("label")
        return strip_dot(entry["image"]), strip_dot(label) if isinstance(label, str) and label else None
    raise ReadError("unreadable_table", f"{index}: an entry of '{list_name}' is not a path or an image dict")


def _label_beside(image: PurePosixPath) -> PurePosixPath | None:
    """``imagesTs/x.nii.gz`` → ``labelsTs/x.nii.gz``."""
    parts = image.parts
    if len(parts) < 2 or not parts[0].startswith("images"):
        return None
    return PurePosixPath("labels" + parts[0][len("images") :], *parts[1:])


def _channel_by_name(index: dict, name: str, index_name: str) -> int:
    channels = index.get("modality") or index.get("channel_names") or {}
    if isinstance(channels, dict):
        for key, value in channels.items():
            if str(value).strip().lower() == name.strip().lower() and str(key).isdigit():
                return int(key)
    known = ", ".join(str(v) for v in channels.values()) if isinstance(channels, dict) else "none"
    raise ReadError("bad_option", f"channel '{name}' is not a channel of {index_name} (channels: {known})")


# --- pairs: one case per image file ---


def _detached_data_files(spec: DatasetSpec, root: Path, files: list[tuple[str, str]]) -> list[SourceFile]:
    """The ``.raw``/``.zraw`` data files of a case's detached MetaImage/NRRD headers that exist, as
    ``{role}_data`` files of the item (a missing one is left for the reader to report, as before)."""
    out = []
    for role, rel in files:
        name = detached_data_file(root / rel)
        if name is None:
            continue
        data = (PurePosixPath(rel).parent / name).as_posix()
        if (root / data).is_file():
            out.append(SourceFile(f"{role}_data", raw_path(spec, data)))
    return out


def _pair_cases(spec: DatasetSpec, root: Path, opts: PairVolumes) -> list[_Case]:
    label_files: set[str] = set()
    if opts.labels is not None:
        # with annotation_dirs, {dir} is one of those folders: `{dir}/{stem}.nii.gz` must not match images
        for folder in sorted(set(opts.annotation_dirs.values())) or [None]:
            label_glob = _to_glob(_fill(opts.labels, sequence=opts.sequence, dir=folder))
            label_files |= {
                p.relative_to(root).as_posix()
                for p in glob_files(root, label_glob)
                if not is_data_file(p.name)
            }
        if opts.annotation_dir_parts:
            # labels lie only where a swapped-in folder name puts them: `{dir}/{stem}.nii.gz` over INSTANCE's
            # data/ → label/ would otherwise also match every image, which would then be taken for a label
            swapped = set(opts.annotation_dir_parts.values())
            label_files = {p for p in label_files if swapped & set(PurePosixPath(p).parent.parts)}
    out: list[_Case] = []
    used: set[str] = set()
    for path in glob_files(root, _fill(opts.images, sequence=opts.sequence)):
        rel = path.relative_to(root).as_posix()
        if rel in label_files:  # images and labels in one folder: a label is not a case
            continue
        if is_data_file(path.name):  # Case00.raw beside Case00.mhd: the header's voxels, not an image
            continue
        stem = file_stem(path.name)
        folder = PurePosixPath(rel).parent.as_posix()
        named = stem if opts.case_regex_on == "name" else strip_dot(f"{folder}/{stem}").as_posix()
        case = _case_of(named, opts.case_regex)
        if case is None:
            continue  # not an image of this layout (e.g. a second channel file `_0001`)
        beside = _annotation_dir(opts, opts.annotation_dirs.get(folder, folder))
        files, meta, absent = _annotations(spec, root, opts, case=case, dir=beside, stem=stem)
        out.append(_Case(case, [("image", rel), *files], dir=folder, stem=stem, meta=meta, absent=absent))
        used.update(p for _, p in files)
    if opts.labels is not None:
        out.extend(_orphan_labels(opts, sorted(label_files - used), {c.case for c in out}))
    return out


def _beside_images(opts: PairVolumes, folder: str | None) -> bool:
    """Whether an annotation folder (``{dir}`` of a label) is where ``annotation_dir_parts`` puts the labels
    of an image folder that ``images`` can match: its parts swapped back, matched against the glob's folder."""
    if folder is None:
        return True
    back = {new: old for old, new in opts.annotation_dir_parts.items()}
    image_folder = "/".join(back.get(part, part) for part in folder.split("/"))
    pattern = PurePosixPath(_fill(opts.images, sequence=opts.sequence)).parent.as_posix()
    return fnmatch.fnmatchcase(image_folder, pattern)


def _annotation_dir(opts: PairVolumes | CaseVolumes, folder: str) -> str:
    """The ``{dir}`` of a case's annotations: its folder with ``annotation_dir_parts`` swapped in
    (``dataset-01training/rawdata/sub-gl003`` → ``dataset-01training/derivatives/sub-gl003``)."""
    if not opts.annotation_dir_parts:
        return folder
    return "/".join(opts.annotation_dir_parts.get(part, part) for part in folder.split("/"))


def _case_of(stem: str, case_regex: str | None) -> str | None:
    if case_regex is None:
        return stem
    m = re.search(case_regex, stem)
    return m.group("case") if m else None


def _orphan_labels(opts: PairVolumes, paths: list[str], known: set[str]) -> list[_Case]:
    """Label files no image claimed: each becomes a case rejected for its missing image."""
    assert opts.labels is not None
    regex = _to_regex(_fill(opts.labels, sequence=opts.sequence))
    out = []
    for rel in paths:
        m = regex.fullmatch(rel)
        if m is None:
            continue
        groups = m.groupdict()
        if opts.annotation_dir_parts and not _beside_images(opts, groups.get("dir")):
            continue  # another image tree's annotations (VerSe'19's derivatives beside VerSe'20's)
        named = groups.get("stem") or ""
        if opts.case_regex_on == "path":  # the label's own path: the best guess at its image's
            named = strip_dot(f"{PurePosixPath(rel).parent.as_posix()}/{file_stem(PurePosixPath(rel).name)}")
            named = named.as_posix()
        case = groups.get("case") or _case_of(named, opts.case_regex) or groups.get("stem")
        if not case or case in known:
            continue
        known.add(case)
        error = ("missing_file", f"label {rel} has no image matching '{opts.images}'")
        out.append(_Case(case, [("label", rel)], error=error))
    return out


# --- cases: one case per folder ---


def _folder_cases(spec: DatasetSpec, root: Path, opts: CaseVolumes) -> list[_Case]:
    patterns = [opts.cases] if isinstance(opts.cases, str) else opts.cases
    folders = sorted(
        {
            p
            for pattern in patterns
            for p in root.glob(pattern)
            if p.is_dir() and not is_junk(p.relative_to(root))
        }
    )
    out = []
    for folder in folders:
        rel = folder.relative_to(root).as_posix()
        case = _case_of(rel if opts.case_regex_on == "path" else folder.name, opts.case_regex)
        if case is None:
            continue
        image = _resolve(root, _fill(opts.image, case=case, dir=rel, sequence=opts.sequence))
        files, meta, absent = _annotations(spec, root, opts, case=case, dir=_annotation_dir(opts, rel))
        out.append(_Case(case, [("image", image), *files], dir=rel, meta=meta, absent=absent))
    return out


def _annotations(
    spec: DatasetSpec, root: Path, opts: PairVolumes | CaseVolumes, **values: str
) -> tuple[list[tuple[str, str]], dict[str, object], list[str]]:
    """The annotation files of one case (label volume, or one mask per spec label), their meta, and the mask
    files absent that the case is built without (``missing_masks: skip``)."""
    if opts.labels is not None:
        return [("label", _resolve(root, _fill(opts.labels, sequence=opts.sequence, **values)))], {}, []
    assert opts.masks is not None
    files, structures, absent = [], [], []
    for entry in spec.labels:
        rel = _resolve(root, _fill(opts.masks, sequence=opts.sequence, label=entry.label, **values))
        if opts.missing_masks != "reject" and not (root / rel).is_file():
            if opts.missing_masks == "skip":
                absent.append(rel)
            continue
        files.append(("mask", rel))
        structures.append(entry.label)
    return files, {"structures": tuple(structures)}, absent


# --- tables and info files ---


def _apply_table(spec: DatasetSpec, root: Path, opts: VolumeLayout, cases: list[_Case]) -> list[_Case]:
    table = opts.table
    assert table is not None
    rows = rows_by_id(root, table.path, table.delimiter, table.id_column, [table.split_column], "splits")
    found = {c.case for c in cases}
    for case in sorted(set(rows) - found):  # a row the folder lacks: rejected, never silently skipped
        error = ("missing_file", f"case '{case}' is listed in {table.path} but not on disk")
        cases.append(_Case(case, [("table", table.path)], error=error))
    for c in cases:
        row = rows.get(c.case)
        if row is None:
            continue
        c.fields.update(row)
        value = row.get(table.split_column, "") if table.split_column is not None else ""
        split = SPLIT_WORDS.get(value.lower())
        if split is not None:
            c.official = split
        elif value:
            c.error = c.error or (
                "bad_row",
                f"{table.path}: {table.split_column} '{value}' of case '{c.case}' is not train/val/test",
            )
    return cases


def _apply_instance_table(
    spec: DatasetSpec, root: Path, table: InstanceTable, cases: list[_Case]
) -> list[DiscoveryNote]:
    """Each case's instance id → spec label (``meta["instances"]``) from the per-instance rows of
    ``instance_table``; a case without rows, or with a row the table's rules cannot read, is ``bad_row``.
    Rows of cases not on disk (the validation CSV without its images) are one ``missing_files`` note per
    table file, as the tables family reports them."""
    named = table.path if isinstance(table.path, str) else ", ".join(table.path)
    paths = [p.relative_to(root).as_posix() for p in glob_files(root, table.path)]
    if not paths:
        raise ReadError("missing_file", f"{named} (format.options.instance_table: no such table)")
    rows: dict[str, dict[int, tuple[str, str]]] = {}  # case → instance → (code, where)
    problems: dict[str, str] = {}
    by_file: dict[str, set[str]] = {}
    for rel in paths:
        needed = (table.id_column, table.instance_column, table.class_column)
        for line, row in table_rows(root, rel, table.delimiter, needed):
            case, instance, code = (
                row.get(c, "") for c in (table.id_column, table.instance_column, table.class_column)
            )
            if not case:
                continue
            by_file.setdefault(rel, set()).add(case)
            where = f"{rel} line {line}"
            if not instance.isdigit():
                problems.setdefault(
                    case, f"{where}: {table.instance_column} {instance!r} is not an instance id"
                )
                continue
            seen = rows.setdefault(case, {}).setdefault(int(instance), (code, where))
            if seen[0] != code:
                problems.setdefault(
                    case, f"{where}: instance {instance} is {code!r} here and {seen[0]!r} at {seen[1]}"
                )
    found = {c.case for c in cases}
    for c in cases:
        if c.error is not None:
            continue
        if c.case in problems:
            c.error = ("bad_row", problems[c.case])
            continue
        if c.case not in rows:
            c.error = ("bad_row", f"case '{c.case}' has no rows in {named} (its instances have no class)")
            continue
        instances = []
        for instance, (code, where) in sorted(rows[c.case].items()):
            if instance == 0:  # background, whatever its row's code (RibFrac writes 0)
                continue
            label = table.classes.get(code)
            if label is None:
                known = ", ".join(sorted(table.classes))
                c.error = (
                    "bad_row",
                    f"{where}: {table.class_column} {code!r} is not a class (classes: {known})",
                )
                break
            instances.append((instance, label))
        else:
            c.meta["instances"] = tuple(instances)
    notes = []
    for rel, listed in sorted(by_file.items()):
        absent = sorted(listed - found)
        if absent:
            first = ", ".join(absent[:3]) + (", …" if len(absent) > 3 else "")
            summary = (
                f"{rel}: {len(absent):,} of {len(listed):,} cases have no image on disk (first: {first})"
            )
            notes.append(DiscoveryNote("missing_files", summary, raw_path(spec, rel), summary=summary))
    return notes


def _read_info(root: Path, rel: str) -> dict[str, str]:
    """``key: value`` lines (ACDC ``Info.cfg``); an absent or unreadable file gives nothing."""
    try:
        text = (root / rel).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return {}
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out


# --- patterns ---


def _fill(pattern: str, **values: str | None) -> str:
    """Fill placeholders that have a value (others stay) and drop ``./`` parts left by an empty ``{dir}``."""
    for name, value in values.items():
        if value is not None:
            pattern = pattern.replace("{" + name + "}", value)
    return strip_dot(pattern).as_posix() if "{" not in pattern else pattern


def _to_glob(pattern: str) -> str:
    """A pattern with placeholders → a glob that matches every file it can name."""
    out = pattern.replace("{dir}", "**")
    return PLACEHOLDER_RE.sub("*", out)


def _to_regex(pattern: str) -> re.Pattern[str]:
    """A pattern with placeholders → a regex with one named group per placeholder (repeats refer back)."""
    parts, seen, pos = [], set(), 0
    for m in PLACEHOLDER_RE.finditer(pattern):
        parts.append(re.escape(pattern[pos : m.start()]))
        name = m.group(1)
        if name in seen:
            parts.append(f"(?P={name})")
        else:
            seen.add(name)
            parts.append(f"(?P<{name}>.+)" if name == "dir" else f"(?P<{name}>[^/]+)")
        pos = m.end()
    parts.append(re.escape(pattern[pos:]))
    return re.compile("".join(parts))


def _resolve(root: Path, rel: str) -> str:
    """``x.nii.gz`` ↔ ``x.nii``, ``x.mhd`` ↔ ``x.mha``, ``x.nrrd`` ↔ ``x.nhdr``: the variant that exists, else
    the path as given (to be rejected at read)."""
    if (root / rel).is_file():
        return rel
    for suffix, other in _VARIANTS:
        if rel.lower().endswith(suffix):
            alt = rel[: -len(suffix)] + other
            return alt if (root / alt).is_file() else rel
    return rel


# --- read --------------------------------------------------------------------------------------------------


def read(spec: DatasetSpec, raw_root: Path, item: SourceItem) -> Iterator[Frame]:
    raise_item_error(item)
    opts = parse_options(spec, VolumeLayout)
    meta = item.meta_dict()
    modality = str(meta.get("modality") or spec.modality)
    intensity = "hu" if modality == "CT" else "raw"
    channel = meta.get("channel", opts.channel if isinstance(opts.channel, int) else None)
    frame_index = meta.get("frame")  # time_frames: this case is one frame of a 4D image and label
    frame_index = None if frame_index is None else int(frame_index)
    image_rel = file_of(item, "image")
    image_img = _load(raw_root, image_rel)
    limit = opts.max_pixels
    if frame_index is not None:
        image = _image_array(image_img, image_rel, frame_index, limit, axis="time frame")
    else:
        image = _image_array(image_img, image_rel, None if channel is None else int(channel), limit)
    axes = nib.aff2axcodes(image_img.affine)
    if intensity == "hu" and opts.hu_offset:  # stored HU + 1000 (KiPA22): back to HU before the window
        image = image.astype(np.float32) + np.float32(opts.hu_offset)

    def frame(index: int, img2d: np.ndarray, spacing: tuple[float, float], plane: str, **ann) -> Frame:
        return Frame(
            item=item,
            image=img2d,
            intensity=intensity,
            plane=plane,
            slice_index=index,
            spacing_mm=spacing,
            modality=modality,
            **ann,
        )

    if isinstance(opts, PairVolumes | CaseVolumes) and opts.masks is not None:
        structures = [str(s) for s in meta.get("structures", ())]
        paths = files_of(item, "mask")
        if len(structures) != len(paths):
            raise ReadError(
                "bad_item", f"case '{item.case_id}': {len(paths)} masks for {len(structures)} names"
            )
        crops = []
        for label, rel in zip(structures, paths, strict=True):
            crop = _structure(raw_root, rel, image.shape, axes, image_img.affine, limit, frame_index)
            if crop is not None:  # an all-zero mask: the structure is absent from this case
                crops.append((label, *crop))
        image, zooms = reorient_canonical(image, image_img.affine)
        for plane in spec.slicing.planes:
            for index, img2d, spacing in iter_slices(image, zooms, plane, spec.slicing.step):
                masks = _masks_at(crops, image.shape, _PLANE_AXIS[plane], index)
                yield frame(index, img2d, spacing, plane, masks=masks)
        return

    label_rel = file_of(item, "label")
    label_img = _load(raw_root, label_rel)
    sets = getattr(opts, "label_sets", {})
    # instance_table: the map's values are instance ids, each classed by its row (discovery put them in meta)
    instances = {int(i): str(label) for i, label in meta.get("instances", ())}
    if getattr(opts, "instance_table", None) is not None:
        allowed = set(instances)
    elif sets:
        allowed = {v for values in sets.values() for v in values}
    else:
        allowed = set(spec.label_by_value())
    labels = _label_array(label_img, label_rel, spec, limit, frame_index, allowed)
    if image.shape != labels.shape:
        raise ReadError("shape_mismatch", f"image {image.shape} != label {labels.shape} ({image_rel})")
    _same_axes(axes, label_img, label_rel)
    # Both grids are the same (checked above), so the image's affine orients both; zooms come from it too.
    image, zooms = reorient_canonical(image, image_img.affine)
    labels, _ = reorient_canonical(labels, image_img.affine)
    if sets or getattr(opts, "instance_table", None) is not None:
        if sets:  # overlap-coded values: one mask per structure, from the set of values that make it up
            parts = ((e.label, np.isin(labels, sets[e.label])) for e in spec.labels)
        else:  # one mask per instance, so two touching fractures of one class stay two regions
            parts = ((label, labels == i) for i, label in sorted(instances.items()))
        # generators: one full-size boolean volume at a time, kept only as its crop (45 SegRap structures or
        # a scan's fractures at 512² × 400 would not fit in a worker side by side)
        crops = [(label, *c) for label, mask in parts if (c := _crop(mask)) is not None]
        del labels, parts
        for plane in spec.slicing.planes:
            for index, img2d, spacing in iter_slices(image, zooms, plane, spec.slicing.step):
                masks = _masks_at(crops, image.shape, _PLANE_AXIS[plane], index)
                yield frame(index, img2d, spacing, plane, masks=masks)
        return
    label_values = {v: e.label for v, e in spec.label_by_value().items() if v != 0}
    for plane in spec.slicing.planes:
        image_slices = iter_slices(image, zooms, plane, spec.slicing.step)
        label_slices = iter_slices(labels, zooms, plane, spec.slicing.step)
        for (index, img2d, spacing), (_, lab2d, _) in zip(image_slices, label_slices, strict=True):
            yield frame(index, img2d, spacing, plane, label_map=lab2d, label_values=label_values)


def _same_axes(axes: tuple, img: nib.spatialimages.SpatialImage, rel: str) -> None:
    other = nib.aff2axcodes(img.affine)
    if axes != other:  # one of the two affines is wrong; we cannot tell which
        raise ReadError(
            "geometry_mismatch", f"{rel}: axes {''.join(other)} differ from the image's {''.join(axes)}"
        )


def _load(raw_root: Path, rel: str) -> nib.spatialimages.SpatialImage:
    path = existing(raw_root, rel)
    if is_itk(rel) or is_data_file(rel):  # MetaImage / NRRD: SimpleITK, as a NIfTI image in RAS
        return load_itk(path, rel)
    try:
        return load_nifti(path)
    except (
        nib.filebasedimages.ImageFileError,
        OSError,
        EOFError,
        ValueError,
        zlib.error,
        gzip_ng_error,
    ) as e:
        raise ReadError("unreadable_image", f"{rel}: {type(e).__name__}: {e}") from None
    except nib.spatialimages.HeaderDataError as e:  # a header nibabel cannot make sense of
        raise ReadError("unreadable_image", f"{rel}: corrupt header: {e}") from None


def _voxels(img: nib.spatialimages.SpatialImage, rel: str, channel: int | None = None) -> np.ndarray:
    """The voxel array (scaled as stored), read once; a 4D channel is sliced before decoding the rest."""
    try:
        proxy = img.dataobj if channel is None else img.dataobj[..., channel]
        data = np.asanyarray(proxy)
    except (
        OSError,
        EOFError,
        ValueError,
        zlib.error,
        gzip_ng_error,
    ) as e:  # truncated/corrupt data after the header
        raise ReadError("unreadable_image", f"{rel}: {type(e).__name__}: {e}") from None
    if not data.dtype.isnative:
        data = data.astype(data.dtype.newbyteorder("="))
    return data


def _spatial(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Drop trailing singleton axes beyond the third (some writers store (x, y, z, 1))."""
    shape = tuple(shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def _image_array(
    img: nib.spatialimages.SpatialImage, rel: str, channel: int | None, max_pixels: int, axis: str = "channel"
) -> np.ndarray:
    """The image volume (x, y, z), its size checked against the header before reading, non-finite voxels
    refused (a NaN/inf voxel has no display value: rendering it as black would make the image silently
    wrong). ``channel`` picks one index of a 4D image's last axis (a channel, or a time frame)."""
    shape = _spatial(img.shape)
    check_pixels(img.shape, rel, max_pixels, "volume")
    if axis != "channel" and len(shape) != 4:
        raise ReadError(
            "bad_dimensions", f"{rel}: image shape {tuple(img.shape)} has no time frames (not 4D)"
        )
    if len(shape) == 4:
        if channel is None:
            raise ReadError(
                "bad_dimensions", f"{rel}: 4D image with {shape[3]} channels needs option 'channel'"
            )
        if not 0 <= channel < shape[3]:
            raise ReadError("bad_dimensions", f"{rel}: {axis} {channel} of {shape[3]} does not exist")
        data = _voxels(img, rel, channel).reshape(shape[:3])
    elif len(shape) not in (2, 3):
        raise ReadError("bad_dimensions", f"{rel}: image shape {tuple(img.shape)} is not 2D/3D/4D")
    else:
        data = _voxels(img, rel).reshape(shape)
        data = data[..., None] if data.ndim == 2 else data
    if data.dtype.kind in "fc":
        finite = np.isfinite(data)
        if not finite.all():
            bad = int(finite.size - np.count_nonzero(finite))
            raise ReadError(
                "non_finite_voxels", f"{rel}: {bad:,} of {data.size:,} voxels are NaN or infinite"
            )
    return data


def _annotation_array(
    img: nib.spatialimages.SpatialImage, rel: str, max_pixels: int, frame: int | None = None
) -> np.ndarray:
    """A 2D/3D annotation volume, or (``frame``) one time frame of a 4D one."""
    shape = _spatial(img.shape)
    if frame is not None:
        if len(shape) != 4:
            raise ReadError(
                "bad_dimensions", f"{rel}: annotation shape {tuple(img.shape)} has no time frames"
            )
        if not 0 <= frame < shape[3]:
            raise ReadError("bad_dimensions", f"{rel}: time frame {frame} of {shape[3]} does not exist")
        check_pixels(shape, rel, max_pixels, "annotation volume")
        return _voxels(img, rel, frame).reshape(shape[:3])
    if len(shape) not in (2, 3):
        raise ReadError("bad_dimensions", f"{rel}: annotation shape {tuple(img.shape)} is not 2D/3D")
    check_pixels(shape, rel, max_pixels, "annotation volume")
    data = _voxels(img, rel).reshape(shape)
    return data[..., None] if data.ndim == 2 else data


def _label_array(
    img: nib.spatialimages.SpatialImage,
    rel: str,
    spec: DatasetSpec,
    max_pixels: int,
    frame: int | None = None,
    values: set[int] | None = None,
) -> np.ndarray:
    """Label volume → smallest unsigned integer array; values must be 0 or a spec label value (or one of
    ``values``: the values ``label_sets`` name)."""
    data = _annotation_array(img, rel, max_pixels, frame)
    if data.dtype.kind == "f":  # float-stored labels (an MSD quirk): nearest integer
        if not np.isfinite(data).all():
            raise ReadError("bad_label_value", f"{rel}: non-finite label values")
        data = np.rint(data)
    elif data.dtype.kind == "b":
        data = data.view(np.uint8)
    present = _present_values(data)
    allowed = {0, *(spec.label_by_value() if values is None else values)}
    unknown = sorted(set(present) - allowed)
    if unknown:
        raise ReadError(
            "bad_label_value", f"{rel}: values {unknown[:10]} are not label values of spec '{spec.name}'"
        )
    top = max(present, default=0)
    return data.astype(np.uint8 if top <= 255 else np.uint16 if top <= 65535 else np.int32, copy=False)


_BINCOUNT_CHUNK = 1 << 20


def _present_values(data: np.ndarray) -> list[int]:
    """Distinct values of an integer-valued array; a bincount where the range allows (far cheaper than
    sorting a few hundred million voxels)."""
    lo, hi = float(data.min()), float(data.max())
    if lo >= 0 and hi < 65536:
        small = data if data.dtype in (np.uint8, np.uint16) else data.astype(np.uint16, order="K")
        # order="K": NIfTI arrays are Fortran-ordered; a C-order ravel would copy the whole volume. Chunks:
        # bincount casts its input to int64, and one 8-bytes-per-voxel buffer per volume costs more in page
        # faults than the counting itself.
        flat = small.ravel(order="K")
        counts = np.zeros(int(hi) + 1, np.int64)
        for start in range(0, flat.size, _BINCOUNT_CHUNK):
            counts += np.bincount(flat[start : start + _BINCOUNT_CHUNK], minlength=counts.size)
        return np.flatnonzero(counts).tolist()
    return [int(v) for v in np.unique(data)]


# --- per-structure masks ---

_Crop = tuple[tuple[int, int, int], np.ndarray]  # offset in the canonical volume, boolean crop


def _structure(
    raw_root: Path,
    rel: str,
    shape: tuple[int, ...],
    axes: tuple,
    affine: np.ndarray,
    max_pixels: int,
    frame: int | None = None,
) -> _Crop | None:
    """One structure's mask, canonical and cropped to its bounding box (a whole-body CT has ~100 of them:
    full-size copies of each would not fit in a worker). None when the mask is empty."""
    img = _load(raw_root, rel)
    data = _annotation_array(img, rel, max_pixels, frame)
    if data.shape != shape:
        raise ReadError("shape_mismatch", f"image {shape} != mask {data.shape} ({rel})")
    _same_axes(axes, img, rel)
    mask = data > 0.5 if data.dtype.kind == "f" else data != 0
    del data
    mask, _ = reorient_canonical(mask, affine)
    return _crop(mask)


def _crop(mask: np.ndarray) -> _Crop | None:
    """A canonical boolean volume cropped to its bounding box, with its offset; None when it is empty."""
    spans = []
    for axis in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        if hit.size == 0:
            return None
        spans.append((int(hit[0]), int(hit[-1]) + 1))
    crop = np.ascontiguousarray(mask[tuple(slice(lo, hi) for lo, hi in spans)])
    return (spans[0][0], spans[1][0], spans[2][0]), crop


def _masks_at(
    crops: list[tuple[str, tuple[int, int, int], np.ndarray]], shape: tuple[int, ...], axis: int, index: int
) -> list[tuple[str, np.ndarray]]:
    """The display-oriented masks of the structures that the slice ``index`` along ``axis`` cuts."""
    in_plane = [a for a in range(3) if a != axis]
    out = []
    for label, offset, crop in crops:
        k = index - offset[axis]
        if not 0 <= k < crop.shape[axis]:
            continue
        part = crop[(slice(None),) * axis + (k,)]
        if not part.any():
            continue
        full = np.zeros((shape[in_plane[0]], shape[in_plane[1]]), dtype=bool)
        r0, c0 = offset[in_plane[0]], offset[in_plane[1]]
        full[r0 : r0 + part.shape[0], c0 : c0 + part.shape[1]] = part
        out.append((label, display_slice(full)))
    return out
