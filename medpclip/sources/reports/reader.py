"""Radiology reports attached to their images: IU X-ray / OpenI (XML reports + PNG) and MIMIC-CXR (one text
report per study + JPG or DICOM images).

Every image is one item and one frame; its study's report text goes to ``Frame.report`` (linking the text to
concepts happens later, in the build). The text kept is the report's FINDINGS and IMPRESSION sections, in
that order, as ``"FINDINGS: …\\nIMPRESSION: …"`` with whitespace collapsed; headers and other sections
(``FINAL REPORT``, EXAMINATION, INDICATION, TECHNIQUE, COMPARISON, …) are left out. De-identification tokens
(IU ``XXXX``, MIMIC ``___``) are kept as written. A report with neither section gives no text (the image is
still read).

Options (``spec.format.options``), paths relative to the dataset folder:

- ``layout: openi|mimic``.
- ``images`` — glob or list of globs of the images.
- ``sections: [FINDINGS, IMPRESSION]`` — the sections kept; a header matches a name when it equals it or starts
  with it and a space (MIMIC's ``FINDINGS AND IMPRESSION``).
- ``grey: true`` — read images as one channel.

``layout: openi`` (IU X-ray, format reference §9g)

- ``reports: "ecgen-radiology/*.xml"`` — the reports. Each ``parentImage/@id`` names an image file ``<id>.png``,
  found by its stem wherever ``images`` finds it (``NLMCXR_png/`` or the raw root folder itself). The report id
  (``uId/@id``, e.g. ``CXR1``; else ``CXR`` + the file stem) is the field ``report_id`` (the only grouping
  key the dataset has: the patient) and the study id. Sections come from ``AbstractText/@Label``; an empty
  element (``<AbstractText Label="FINDINGS"/>``) is an absent section.
- ``mesh_labels: false`` — ``true``: the ``MeSH/major`` terms become image-level labels. A term such as
  ``Pulmonary Atelectasis/base/left`` is matched against the spec's labels and aliases from its full text
  down to its first component (the longest match wins); one of ``normal_labels`` (``normal``) passes through
  as written, only for images without a finding. MeSH is an open vocabulary: terms matching no label are not
  labels (counted nowhere; ``automatic`` terms are never used).
- A report XML that cannot be parsed is an item of its own, rejected ``unreadable_annotation``; an image no
  report names is ``no_report``; an image two reports name is ``duplicate_row``; an image a report names but
  the folder lacks is ``missing_file``. Reports without ``parentImage`` (104 in the release) make no sample.

``layout: mimic`` (MIMIC-CXR, format reference §9f)

- ``images: "files/p*/p*/s*/*.jpg"`` — ``files/p10/p10000032/s50414267/<dicom_id>.jpg``; case id
  ``p10000032/s50414267/<dicom_id>``; fields ``subject_id`` (``p10000032``, the patient) and ``study_id``
  (``s50414267``, the study). An image outside ``p<digits>/s<digits>/`` folders is ``unexpected_name``.
- The report is ``files/p10/p10000032/s50414267.txt`` (``mimic-cxr-reports.zip`` unpacks to the same
  ``files/`` tree). Missing → ``missing_file`` with ``require_report: true`` (default), else the image is
  read without text. Sections start at an upper-case header line (``FINDINGS:``); with neither kept section,
  ``fallback: last_paragraph`` (default, as the MIT-LCP section parser does) keeps the report's last
  paragraph, ``none`` keeps nothing.
- ``split_table: [mimic-cxr-2.0.0-split.csv.gz, mimic-cxr-2.0.0-split.csv]`` — the official split (first
  that exists; columns ``dicom_id, study_id, subject_id, split``; ``validate`` → ``val``). An image it does not
  list takes its subject's split when the table gives the subject one. No table: no official split.

Read errors: ``missing_file``, ``unreadable_annotation`` (malformed XML, undecodable text), ``no_report``,
``duplicate_row``, ``unexpected_name``, ``unreadable_table`` (split table), and the image loaders' codes.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from medpclip.frame import Frame, ReadError, SourceFile, SourceItem
from medpclip.sources._common import (
    existing,
    file_of,
    files_of,
    glob_files,
    make_item,
    parse_options,
    parse_xml,
    raise_item_error,
    raw_path,
    read_image,
    sorted_items,
)
from medpclip.sources.reports.options import MimicReports, OpeniReports, ReportLayout
from medpclip.specs import DatasetSpec

_SPLIT_NAMES = {"train": "train", "validate": "val", "val": "val", "test": "test"}
# an upper-case header at the start of a line, up to its colon (MIMIC: " FINDINGS:", "IMPRESSION:")
_HEADER = re.compile(r"(?m)^[ \t]*([A-Z][A-Z0-9 ()/,&'-]*?)[ \t]*:")


def discover(spec: DatasetSpec, root: Path) -> Iterator[SourceItem]:
    opts = parse_options(spec, ReportLayout)
    if isinstance(opts, OpeniReports):
        yield from _discover_openi(spec, opts, root)
    else:
        yield from _discover_mimic(spec, opts, root)


def read(spec: DatasetSpec, raw_root: Path, item: SourceItem) -> Iterator[Frame]:
    raise_item_error(item)
    opts = parse_options(spec, ReportLayout)
    rel = file_of(item, "image")
    img = read_image(
        existing(raw_root, rel), rel, grey=opts.grey, dicom_voi=opts.dicom_voi, max_pixels=opts.max_pixels
    )
    report_rel = files_of(item, "report")
    text, labels = None, []
    if report_rel:
        path = existing(raw_root, report_rel[0])
        if isinstance(opts, OpeniReports):
            xml = parse_xml(path, report_rel[0])
            text = keep_sections(openi_sections(xml), opts.sections)
            if opts.mesh_labels:
                labels = mesh_labels(spec, xml, opts.normal_labels)
        else:
            text = mimic_report_text(_read_text(path, report_rel[0]), opts.sections, opts.fallback)
    yield Frame(
        item=item,
        image=img.array,
        intensity=img.intensity,
        spacing_mm=img.spacing_mm,
        report=text,
        image_labels=labels,
    )


# --- report text -------------------------------------------------------------------------------------------


def keep_sections(sections: list[tuple[str, str]], keep: list[str]) -> str | None:
    """``[(header, body)]`` → the kept sections as ``"HEADER: body"`` lines, in the order of ``keep`` (then of
    the report), whitespace collapsed; None when nothing is left."""
    wanted = [k.strip().upper() for k in keep]
    lines = []
    for name in wanted:
        for header, body in sections:
            h = " ".join(header.split()).upper()
            text = " ".join(body.split())
            if text and (h == name or h.startswith(name + " ")):
                lines.append(f"{h}: {text}")
    return "\n".join(lines) or None


def mimic_sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    """A MIMIC-CXR report → (preamble, [(header, body)]): sections start at upper-case header lines."""
    matches = list(_HEADER.finditer(text))
    preamble = text[: matches[0].start()] if matches else text
    sections = []
    ends = [m.start() for m in matches[1:]] + ([len(text)] if matches else [])
    for m, end in zip(matches, ends, strict=True):
        sections.append((m.group(1), text[m.end() : end]))
    return preamble, sections


def mimic_report_text(text: str, keep: list[str], fallback: str = "last_paragraph") -> str | None:
    """The kept sections of a MIMIC-CXR report, else (``last_paragraph``) its last paragraph."""
    _, sections = mimic_sections(text)
    kept = keep_sections(sections, keep)
    if kept is not None or fallback == "none":
        return kept
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n[ \t]*\n", text)]
    paragraphs = [p for p in paragraphs if p and p.upper() != "FINAL REPORT"]
    return paragraphs[-1] if paragraphs else None


def openi_sections(xml: ET.Element) -> list[tuple[str, str]]:
    """``AbstractText`` elements of an OpenI report as (Label, text)."""
    return [(el.get("Label", ""), "".join(el.itertext())) for el in xml.iter("AbstractText")]


def mesh_labels(spec: DatasetSpec, xml: ET.Element, normal_labels: list[str]) -> list[str]:
    """``MeSH/major`` terms → spec labels (longest leading match of their ``/`` components), else normals."""
    by_name = spec.label_by_name()
    normal = {n.lower(): n for n in normal_labels}
    found: list[str] = []
    normals: list[str] = []
    for major in xml.iter("major"):
        parts = [p.strip() for p in (major.text or "").split("/") if p.strip()]
        for n in range(len(parts), 0, -1):
            key = "/".join(parts[:n]).lower()
            if key in by_name:
                found.append(by_name[key].label)
                break
            if n == 1 and key in normal:
                normals.append(normal[key])
    return list(dict.fromkeys(found)) or list(dict.fromkeys(normals))


# --- files -------------------------------------------------------------------------------------------------


def _read_text(path: Path, rel: str) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ReadError("missing_file", rel) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ReadError("unreadable_annotation", f"{rel}: {type(e).__name__}: {e}") from None


# --- OpenI -------------------------------------------------------------------------------------------------


def _discover_openi(spec: DatasetSpec, opts: OpeniReports, root: Path) -> Iterator[SourceItem]:
    on_disk: dict[str, Path] = {}
    for p in glob_files(root, opts.images):
        on_disk.setdefault(p.stem, p)
    named: dict[str, list[tuple[str, str]]] = defaultdict(list)  # image id → [(report rel, report id)]
    items: list[SourceItem] = []
    for path in glob_files(root, opts.reports):
        rel = path.relative_to(root).as_posix()
        try:
            xml = parse_xml(path, raw_path(spec, rel))
        except ReadError as e:
            items.append(
                make_item(
                    spec, f"report/{path.stem}", [SourceFile("report", raw_path(spec, rel))],
                    fields={"report_id": f"CXR{path.stem}"}, error=(e.reason, e.detail),
                )
            )  # fmt: skip
            continue
        uid = xml.find("uId")
        report_id = (uid.get("id", "") if uid is not None else "").strip() or f"CXR{path.stem}"
        for parent in xml.iter("parentImage"):
            image_id = (parent.get("id") or "").strip()
            if image_id:
                named[image_id].append((rel, report_id))
    fallback_dir = PurePosixPath(_first(opts.images)).parent
    for image_id in sorted(set(named) | set(on_disk)):
        reports = list(dict.fromkeys(named.get(image_id, [])))
        if image_id in on_disk:
            image_rel = on_disk[image_id].relative_to(root).as_posix()
        else:
            image_rel = (fallback_dir / f"{image_id}.png").as_posix()
        files = [SourceFile("image", raw_path(spec, image_rel))]
        error = None
        if not reports:
            error = ("no_report", f"{image_rel}: no report in {_first(opts.reports)} names {image_id}")
            report_id = ""
        else:
            report_rel, report_id = reports[0]
            files.append(SourceFile("report", raw_path(spec, report_rel)))
            if len(reports) > 1:
                error = ("duplicate_row", f"{image_id} is named by {', '.join(r for r, _ in reports)}")
            elif image_id not in on_disk:
                error = ("missing_file", raw_path(spec, image_rel))
        items.append(
            make_item(
                spec,
                image_id,
                files,
                fields={"report_id": report_id},
                study_id=report_id or None,
                error=error,
            )
        )
    yield from sorted_items(items)


def _first(v: str | list[str]) -> str:
    return v if isinstance(v, str) else v[0]


# --- MIMIC-CXR ---------------------------------------------------------------------------------------------


def _discover_mimic(spec: DatasetSpec, opts: MimicReports, root: Path) -> Iterator[SourceItem]:
    by_dicom, by_subject = _mimic_splits(spec, opts, root)
    items = []
    for path in glob_files(root, opts.images):
        rel = PurePosixPath(path.relative_to(root).as_posix())
        study, subject = rel.parent.name, rel.parent.parent.name
        case_id = f"{subject}/{study}/{rel.stem}"
        files = [SourceFile("image", raw_path(spec, rel))]
        error = None
        if not (re.fullmatch(r"p\d+", subject) and re.fullmatch(r"s\d+", study)):
            error = ("unexpected_name", f"{rel}: expected files/pNN/p<subject_id>/s<study_id>/<dicom_id>")
        report = rel.parent.parent / f"{study}.txt"
        if (root / report).is_file():
            files.append(SourceFile("report", raw_path(spec, report)))
        elif opts.require_report:
            error = error or ("missing_file", f"{raw_path(spec, report)} (the report of {rel})")
        splits = by_subject.get(subject, set())
        split = by_dicom.get(rel.stem) or (next(iter(splits)) if len(splits) == 1 else None)
        items.append(
            make_item(
                spec, case_id, files, fields={"subject_id": subject, "study_id": study}, study_id=study,
                official_split=split, error=error,
            )
        )  # fmt: skip
    yield from sorted_items(items)


def _mimic_splits(
    spec: DatasetSpec, opts: MimicReports, root: Path
) -> tuple[dict[str, str], dict[str, set[str]]]:
    names = [opts.split_table] if isinstance(opts.split_table, str) else list(opts.split_table)
    name = next((n for n in names if (root / n).is_file()), None)
    by_dicom: dict[str, str] = {}
    by_subject: dict[str, set[str]] = defaultdict(set)
    if name is None:
        return by_dicom, by_subject
    try:
        data = (root / name).read_bytes()
        if name.endswith(".gz"):
            data = gzip.decompress(data)
        rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    except (OSError, EOFError, UnicodeDecodeError, csv.Error, gzip.BadGzipFile) as e:
        raise ReadError("unreadable_table", f"{name}: {type(e).__name__}: {e}") from None
    for n, row in enumerate(rows, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        split = _SPLIT_NAMES.get(row.get("split", "").lower())
        if split is None or not row.get("dicom_id"):
            raise ReadError("unreadable_table", f"{name} line {n}: needs dicom_id and a split, got {row}")
        by_dicom[row["dicom_id"]] = split
        if row.get("subject_id"):
            by_subject[f"p{row['subject_id']}"].add(split)
    return by_dicom, by_subject
