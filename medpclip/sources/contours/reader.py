"""Outlines in XML: LIDC-IDRI nodule contours on CT series, Aperio ImageScope polygons (MoNuSeg).

Options (``spec.format.options``), paths relative to the dataset folder:

- ``layout: lidc|imagescope`` — which XML.

``layout: lidc`` (format reference §9a)

- ``files: "**/*"`` — the DICOM files, globbed and assembled into series by ``sources.dicom`` (slices ordered
  by position, never by name). Each CT series is one item (case id = its folder); the ``*.xml`` files in its
  folder are its readings (``LidcReadMessage``, namespace ``http://www.nih.gov``, parsed with or without it).
  A CT series without an XML beside it is ``missing_file``. Series of other modalities (LIDC's CR/DX chest
  radiograph studies, whose XML is another schema) are not items: ``modalities: [CT]`` names the kept ones.
- Each ``readingSession`` is one radiologist; annotator = ``reader1``…``reader4`` in the order of the file (the
  XML's ``servicingRadiologistID`` is often ``anon``, and readers are blinded: ids never link across scans).
  Several XML files of one series continue the numbering.
- An ``unblindedReadNodule``'s ``roi`` lies on the slice whose SOP Instance UID is its ``imageSOP_UID``, else
  whose ``ImagePositionPatient`` z equals its ``imageZposition`` (within 0.05 mm); neither →
  ``unmatched_annotation``. Edge maps are pixel chains (``xCoord`` = column, ``yCoord`` = row).
- ``repeated_slices: keep_lowest_instance`` — some LIDC scans hold two slices at one position: the one with the
  lower ``InstanceNumber`` is kept (pylidc's rule; rois on the other one land on it by their z). ``reject``
  refuses such series (``inconsistent_series``), as the DICOM family does.
- ``regions: mask`` (default): a roi with ``inclusion`` TRUE fills its outline; ``inclusion`` FALSE outlines are
  holes, subtracted from that nodule's fill on that slice. As in pylidc, the outline pixels themselves are left
  out (readers drew outlines just outside the nodule; ``include_contour: true`` keeps them), except that an
  outline enclosing no pixel centre keeps its outline pixels (a tiny nodule stays a region). The nodules of one
  reader share one mask (label ``nodule``) with that reader as annotator (``Frame.mask_annotators``): each
  nodule is a connected component, i.e. one instance, and different readers' masks overlap freely.
  ``regions: box`` gives one box per reader, nodule and slice (the tight box of the same fill) with its reader
  as annotator instead.
- A roi with ONE edge map (nodules < 3 mm have only that) → a point at that pixel (label ``small nodule``,
  or ``nodule`` when the nodule also has outlines), annotator kept; ``small_nodules: skip`` leaves them out.
  An inclusion outline of 2 points has no area: rejected at region level (``invalid_box`` at its first point).
  Exclusion outlines of fewer than 3 points remove nothing.
- ``non_nodules: true`` — each ``nonNodule`` ``locus`` (a ≥ 3 mm lesion the reader judged not a nodule) → a point
  labelled ``non-nodule``. Default false.
- Labels are these fixed strings (``nodule``, ``small nodule``, ``non-nodule``), resolved through the spec's
  labels and aliases. Points are 3D positions and appear in every plane; boxes only in the axial plane.

``layout: imagescope`` (MoNuSeg, format reference §9e)

- ``images: "**/*.tif"`` — glob or list of globs. Case id = the file stem (a TCGA barcode for MoNuSeg).
- ``annotations: ["{dir}/{stem}.xml"]`` — candidate paths of each image's XML, fields ``{dir}`` (the image's
  folder) and ``{stem}``; ``..`` allowed. The first that exists is read; none → ``missing_file``.
- ``label`` — the label of every region (default: the spec's only label).
- ``splits: {"MoNuSegTestData/*": test}`` — official split by fnmatch on the image path (first match wins).
- ``<Annotations><Annotation><Regions><Region><Vertices><Vertex X= Y=/>``: each Region is one instance,
  filled with the pixel-centre rule (pixel (r, c) is in when (x=c, y=r) lies inside or on the polygon; float
  vertices). Overlapping regions stay separate instances. A Region of fewer than 3 vertices is rejected at
  region level (``invalid_box`` at its first vertex). ``NegativeROA="1"`` regions (ImageScope exclusions,
  not used by MoNuSeg) are skipped. ``MicronsPerPixel`` gives the pixel spacing.

Read errors: ``unreadable_annotation`` (malformed XML, wrong root, missing or non-numeric coordinates),
``unmatched_annotation``, ``missing_file``, ``bad_label_value``, and the DICOM family's series errors.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import posixpath
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np

from medpclip.frame import Frame, ReadError, SourceFile, SourceItem
from medpclip.sources import dicom
from medpclip.sources._common import (
    existing,
    file_of,
    files_of,
    glob_files,
    is_junk,
    make_item,
    parse_options,
    parse_xml,
    raise_item_error,
    raw_path,
    read_image,
    resolve_label,
    sorted_items,
)
from medpclip.sources._shapes import InstanceLayers, polygon_crop, rejected_outline
from medpclip.sources.contours.options import ContourLayout, ImagescopeContours, LidcContours
from medpclip.specs import SPLITS, DatasetSpec, format_spec

NODULE, SMALL_NODULE, NON_NODULE = "nodule", "small nodule", "non-nodule"
_Z_TOLERANCE_MM = 0.05


def discover(spec: DatasetSpec, root: Path) -> Iterator[SourceItem]:
    opts = parse_options(spec, ContourLayout)
    if isinstance(opts, LidcContours):
        yield from _discover_lidc(spec, opts, root)
    else:
        yield from _discover_imagescope(spec, opts, root)


def read(spec: DatasetSpec, raw_root: Path, item: SourceItem) -> Iterator[Frame]:
    raise_item_error(item)
    opts = parse_options(spec, ContourLayout)
    if isinstance(opts, LidcContours):
        yield from _read_lidc(spec, opts, raw_root, item)
    else:
        yield from _read_imagescope(spec, opts, raw_root, item)


# --- XML ---------------------------------------------------------------------------------------------------


def _text(el: ET.Element, tag: str) -> str:
    child = el.find(tag)
    return (child.text or "").strip() if child is not None else ""


def _number(value: str | None, rel: str, what: str) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ReadError("unreadable_annotation", f"{rel}: {what} is not a number: {value!r}") from None


# --- LIDC-IDRI ---------------------------------------------------------------------------------------------


def _discover_lidc(spec: DatasetSpec, opts: LidcContours, root: Path) -> Iterator[SourceItem]:
    dicom_spec = spec.model_copy(
        update={"format": format_spec("dicom", {"files": opts.files, "volume_modalities": opts.modalities})}
    )
    items = []
    for item in dicom.discover(dicom_spec, root):
        kind = item.meta_dict().get("kind")
        if "error" in item.meta_dict():
            items.append(item)  # an unreadable DICOM: rejected at read, never dropped
            continue
        if kind != "series":
            continue  # radiographs and other non-CT objects of the collection (module docstring)
        folder = PurePosixPath(files_of(item, "image")[0]).parent
        local = folder.relative_to(PurePosixPath(spec.root))
        xmls = [p for p in sorted((root / local).glob("*.xml")) if p.is_file() and not is_junk(p)]
        files = item.files + tuple(SourceFile("xml", (folder / p.name).as_posix()) for p in xmls)
        meta = dict(item.meta)
        if not xmls:
            meta["error"] = ("missing_file", f"no LIDC XML (*.xml) beside the series in {folder}")
        items.append(dataclasses.replace(item, files=files, meta=tuple(sorted(meta.items()))))
    yield from sorted_items(items)


@dataclasses.dataclass
class _Roi:
    k: int
    inclusion: bool
    xs: np.ndarray
    ys: np.ndarray


def _read_lidc(spec: DatasetSpec, opts: LidcContours, raw_root: Path, item: SourceItem) -> Iterator[Frame]:
    vol = dicom.load_series(
        raw_root,
        item,
        drop_repeated=opts.repeated_slices == "keep_lowest_instance",
        max_pixels=opts.max_pixels,
    )
    first = dicom.read_dataset(
        raw_root / files_of(item, "image")[0], files_of(item, "image")[0], header_only=True
    )
    series_uid = str(first.get("SeriesInstanceUID", ""))
    z_of_k = vol.geo.positions[:, 2]
    tolerance = min(_Z_TOLERANCE_MM, 0.25 * vol.geo.gap()) if vol.geo.depth > 1 else _Z_TOLERANCE_MM

    def slice_of(roi: ET.Element, rel: str) -> int:
        sop = _text(roi, "imageSOP_UID")
        k = vol.sop_to_k.get((sop, None)) if sop else None
        if k is not None:
            return k
        z_text = _text(roi, "imageZposition")
        if z_text:
            z = _number(z_text, rel, "imageZposition")
            nearest = int(np.argmin(np.abs(z_of_k - z)))
            if abs(float(z_of_k[nearest]) - z) <= tolerance:
                return nearest
        raise ReadError(
            "unmatched_annotation",
            f"{rel}: a roi (imageSOP_UID {sop or '-'}, imageZposition {z_text or '-'}) matches no slice",
        )

    label = {name: resolve_label(spec, name).label for name in _lidc_labels(opts)}
    channels = dicom.MaskChannels(vol.stack.shape)
    points: list[dicom.StackPoint] = []
    boxes: list[dicom.StackBox] = []
    shape = vol.geo.shape
    reader_no = 0
    for rel in files_of(item, "xml"):
        xml = parse_xml(existing(raw_root, rel), rel)
        if xml.tag != "LidcReadMessage":
            raise ReadError("unreadable_annotation", f"{rel}: root <{xml.tag}> is not an LIDC CT reading")
        response = xml.find("ResponseHeader")
        header_uid = _text(response, "SeriesInstanceUid") if response is not None else ""
        if header_uid and series_uid and header_uid != series_uid:
            raise ReadError("unmatched_annotation", f"{rel}: reads series {header_uid}, not this series")
        for session in xml.findall("readingSession"):
            reader_no += 1
            reader = f"reader{reader_no}"
            channel: int | None = None
            for nodule in session.findall("unblindedReadNodule"):
                rois, single = _nodule_rois(nodule, rel, slice_of)
                small = not rois  # only single points: a nodule < 3 mm
                for roi in single:
                    if opts.small_nodules == "skip" and small:
                        continue
                    name = label[SMALL_NODULE] if small else label[NODULE]
                    points.append(dicom.StackPoint(name, roi.k, roi.ys[0] + 0.5, roi.xs[0] + 0.5, reader))
                by_slice: dict[int, list[_Roi]] = defaultdict(list)
                for roi in rois:
                    by_slice[roi.k].append(roi)
                for k, slice_rois in sorted(by_slice.items()):
                    mask, rejected = _nodule_slice(slice_rois, shape, opts.include_contour)
                    for roi in rejected:
                        boxes.append(
                            dicom.StackBox(
                                label[NODULE], k, roi.ys[0], roi.xs[0], roi.ys[0], roi.xs[0], reader
                            )
                        )
                    if mask is None:
                        continue
                    if opts.regions == "box":
                        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
                        boxes.append(
                            dicom.StackBox(
                                label[NODULE], k, rows[0], cols[0], rows[-1] + 1, cols[-1] + 1, reader
                            )
                        )
                    else:
                        if channel is None:
                            channel = channels.add(label[NODULE], reader)
                        channels.set(channel, k, mask)
            if opts.non_nodules:
                for nn in session.findall("nonNodule"):
                    k = slice_of(nn, rel)
                    locus = nn.find("locus")
                    if locus is None:
                        raise ReadError("unreadable_annotation", f"{rel}: a nonNodule without locus")
                    x = _number(_text(locus, "xCoord"), rel, "locus xCoord")
                    y = _number(_text(locus, "yCoord"), rel, "locus yCoord")
                    points.append(dicom.StackPoint(label[NON_NODULE], k, y + 0.5, x + 0.5, reader))
    # the masks are the readers' outlines on the acquisition plane (other planes cut through their stack)
    yield from dicom.volume_frames(spec, item, vol, channels, points=points, boxes=boxes, outlined=True)


def _lidc_labels(opts: LidcContours) -> list[str]:
    names = [NODULE]
    if opts.small_nodules == "point":
        names.append(SMALL_NODULE)
    if opts.non_nodules:
        names.append(NON_NODULE)
    return names


def _nodule_rois(nodule: ET.Element, rel: str, slice_of) -> tuple[list[_Roi], list[_Roi]]:
    """(rois with an outline of 2+ points, rois of a single point) of one nodule."""
    outlines, single = [], []
    for roi in nodule.findall("roi"):
        k = slice_of(roi, rel)
        inclusion = _text(roi, "inclusion").upper() != "FALSE"
        edges = roi.findall("edgeMap")
        xs = np.array([_number(_text(e, "xCoord"), rel, "edgeMap xCoord") for e in edges])
        ys = np.array([_number(_text(e, "yCoord"), rel, "edgeMap yCoord") for e in edges])
        if xs.size == 0:
            continue
        if xs.size > 1 and np.all(xs == xs[0]) and np.all(ys == ys[0]):
            xs, ys = xs[:1], ys[:1]  # one pixel listed several times is a point
        r = _Roi(k, inclusion, xs, ys)
        if xs.size == 1:
            if inclusion:
                single.append(r)
        else:
            outlines.append(r)
    return outlines, single


def _nodule_slice(
    rois: list[_Roi], shape: tuple[int, int], include_contour: bool
) -> tuple[np.ndarray | None, list[_Roi]]:
    """One nodule on one slice: (inclusion fills minus exclusion fills or None, inclusion rois of < 3 points)."""
    mask = np.zeros(shape, dtype=bool)
    rejected = []
    for roi in rois:
        if not roi.inclusion:
            continue
        if roi.xs.size < 3:
            rejected.append(roi)
            continue
        found = polygon_crop(roi.xs, roi.ys, shape, boundary=include_contour)
        if found is None and not include_contour:
            found = polygon_crop(roi.xs, roi.ys, shape, boundary=True)  # encloses no pixel centre
        if found is not None:
            sl, crop = found
            mask[sl] |= crop
    for roi in rois:
        if roi.inclusion or roi.xs.size < 3:
            continue
        found = polygon_crop(roi.xs, roi.ys, shape, boundary=False)
        if found is not None:
            sl, crop = found
            mask[sl] &= ~crop
    return (mask if mask.any() else None), rejected


# --- Aperio ImageScope (MoNuSeg) ---------------------------------------------------------------------------


def _discover_imagescope(spec: DatasetSpec, opts: ImagescopeContours, root: Path) -> Iterator[SourceItem]:
    for split in opts.splits.values():
        if split not in SPLITS:
            raise ReadError("bad_option", f"spec '{spec.name}': split '{split}' is not one of {SPLITS}")
    items = []
    for path in glob_files(root, opts.images):
        rel = PurePosixPath(path.relative_to(root).as_posix())
        fields = {"dir": rel.parent.as_posix(), "stem": rel.stem}
        candidates = [posixpath.normpath(p.format(**fields)) for p in opts.annotations]
        xml = next((c for c in candidates if not c.startswith("..") and (root / c).is_file()), None)
        files = [SourceFile("image", raw_path(spec, rel))]
        error = None
        if xml is None:
            looked = ", ".join(raw_path(spec, c) for c in candidates)
            error = ("missing_file", f"no annotation for {raw_path(spec, rel)}: looked for {looked}")
        else:
            files.append(SourceFile("annotation", raw_path(spec, xml)))
        split = next(
            (s for pattern, s in opts.splits.items() if fnmatch.fnmatchcase(rel.as_posix(), pattern)), None
        )
        items.append(make_item(spec, rel.stem, files, official_split=split, error=error))
    yield from sorted_items(items)


def _read_imagescope(
    spec: DatasetSpec, opts: ImagescopeContours, raw_root: Path, item: SourceItem
) -> Iterator[Frame]:
    rel = file_of(item, "image")
    img = read_image(existing(raw_root, rel), rel, max_pixels=opts.max_pixels)
    image, intensity = img.array, img.intensity
    if opts.label is None and len(spec.labels) != 1:
        raise ReadError("bad_option", f"spec '{spec.name}': give 'label' (the spec has several labels)")
    label = resolve_label(spec, opts.label or spec.labels[0].label).label
    xml_rel = file_of(item, "annotation")
    xml = parse_xml(existing(raw_root, xml_rel), xml_rel)
    if xml.tag != "Annotations":
        raise ReadError(
            "unreadable_annotation", f"{xml_rel}: root <{xml.tag}> is not ImageScope <Annotations>"
        )
    shape = image.shape[:2]
    layers = InstanceLayers(shape)
    rejected = []
    for region in xml.iter("Region"):
        if region.get("NegativeROA", "0").strip() == "1":
            continue
        vertices = region.findall("Vertices/Vertex")
        xs = np.array([_number(v.get("X"), xml_rel, "Vertex X") for v in vertices])
        ys = np.array([_number(v.get("Y"), xml_rel, "Vertex Y") for v in vertices])
        if xs.size < 3:
            if xs.size:
                rejected.append(rejected_outline(label, xs[0], ys[0]))
            else:
                rejected.append(rejected_outline(label, float("nan"), float("nan")))
            continue
        found = polygon_crop(xs, ys, shape)
        if found is not None:
            layers.add(*found)
    spacing = None
    mpp = xml.get("MicronsPerPixel")
    if mpp:
        um = _number(mpp, xml_rel, "MicronsPerPixel")
        spacing = (um / 1000.0, um / 1000.0) if um > 0 else None
    yield Frame(
        item=item,
        image=image,
        intensity=intensity,
        spacing_mm=spacing,
        masks=[(label, layer) for layer in layers.layers],
        boxes=rejected,
        outlined=True,  # every mask is a filled ImageScope polygon
    )
