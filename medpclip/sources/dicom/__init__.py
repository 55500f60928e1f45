"""DICOM: single images, CT/MR/PET series assembled into volumes, enhanced multi-frame, DICOM SEG and RTSTRUCT.

Options (``spec.format.options``), paths relative to the dataset folder:

- ``files: "**/*"`` — glob or list of globs. Candidates are files named ``*.dcm``/``*.dicom``/``*.dic``/``*.ima``
  and files without a suffix (or with an all-digit one, as UID-named files have) that start with the DICM
  preamble. A ``.dcm`` file without the preamble is still read (raw datasets such as pydicom's ``rtstruct.dcm``);
  one that is no DICOM at all is rejected ``not_dicom``. Non-image objects (SR, RTPLAN, RTDOSE, PR, DICOMDIR…)
  are skipped; so are localizer/scout images (``ImageType`` contains ``LOCALIZER``) unless
  ``keep_localizers: true``.
- ``volume_modalities: [CT, MR, PT]`` — single-frame files of these modalities that share a
  ``SeriesInstanceUID``, an orientation and a size become ONE volume; everything else is read file by file.
- ``voi: true`` — 2D images other than CT: apply the file's VOI LUT or first window (VOI LUT Function honoured)
  and hand over ``uint8``; ``false``: hand over the raw values (modality LUT applied) for the spec's percentile
  rule.
- ``segment_label: label|property`` — the name of a DICOM SEG segment: its ``SegmentLabel`` (default) or the
  ``CodeMeaning`` of its Segmented Property Type.
- ``ignore_labels: []`` — fnmatch patterns (case-insensitive) of SEG segment / RTSTRUCT ROI names to leave out
  on purpose (planning structures such as ``z_*``, ``PTV*``). Any other name that is not a spec label or alias
  rejects the case (``bad_label_value``), as a label value outside the spec does in the other readers.
- ``split_series_by_folder: false`` — ``true``: files of one ``SeriesInstanceUID`` in different folders are
  different volumes (CHAOS splits one T1 dual-echo series into ``InPhase/`` and ``OutPhase/`` folders whose
  slices share their positions; as one series they would be refused as ``inconsistent_series``).
- ``masks: []`` — 2D mask files, ONE PER SLICE, for series whose folder matches (CHAOS ``Ground/*.png``).
  Each entry: ``series`` (regex searched in the series folder, relative to the dataset folder), ``folder``
  (the mask folder relative to the dataset folder; ``{name}`` fields are the regex's named groups and
  ``{folder}`` the series folder; ``..`` allowed), ``files: "*.png"``, ``encoding: threshold`` (grey value
  ``> threshold`` is ``label``, default the spec's only label) or ``ranges`` (``ranges: {label: [lo, hi]}``,
  inclusive grey-level ranges; any other non-zero value rejects the case, ``bad_label_value``), ``order:
  reversed`` (the mask files in NATURAL name order run opposite to the slice stack: the first file is the
  last slice along the slice normal, nnU-Net's ``[::-1]`` for CHAOS) or ``same``, ``required: true`` (a
  matched series without mask files is ``missing_file``). The first matching entry applies. A count of mask
  files other than the number of slices, or a mask of another size than the slices, is ``shape_mismatch``.
  Masks are in the slices' stored pixel grid and are reoriented with the volume.
- ``discovery_workers: 1`` — processes that read the headers at discovery (every file's header is parsed on
  the planning machine, ~0.5 ms each for a small CT header: a million-file archive is hours on one core).
  Set it to the planning machine's cores for archives of thousands of files and more (10,000 small CT
  headers: 5.2 s serial, 3.7 s with 2 processes on 2 cores; the processes' start-up is ~0.7 s). The
  result is the same whatever the number. The processes are spawned: a script that calls the build itself
  needs the ``if __name__ == "__main__":`` guard (the CLI, the Ray job entry point and the flows have it).

Items and case ids: a volume's case id is its series' folder relative to the dataset folder (plus the series
UID when several series share a folder); a single image's is its path without suffix. The patient id comes from
the spec's rule, usually ``patient_id: {field: PatientID}``: the fields offered are ``PatientID``,
``StudyInstanceUID``, ``SeriesInstanceUID`` and ``folder`` (the first folder of the path). The raw PatientID is
only ever put into ``SourceItem.patient_id`` (hashed by the build), never into a case id or the item's meta.

Geometry and intensity:

- Slices are ordered by ``ImagePositionPatient`` projected on the slice normal (row × column direction cosines),
  never by ``InstanceNumber`` or file name. The volume gets an affine from the DICOM geometry (LPS → RAS) and is
  sliced like the NIfTI volumes: :func:`medpclip.imaging.reorient_canonical` then
  :func:`~medpclip.imaging.iter_slices` for the spec's planes. A series with one slice, or whose slice gaps
  differ by more than 10 % (missing slices), gives its acquisition plane only — resliced planes would be
  distorted. A tilted gantry (slice step not along the normal) is kept as a sheared affine: acquisition-plane
  slices are exact, resliced planes are not resampled.
- CT: Hounsfield units through ``RescaleSlope/Intercept`` per slice (per frame in enhanced files, where the
  values live in the functional group sequences), ``intensity: hu``. MR/PET/other volumes: ``raw``.
- 2D images (CR/DX/MG/SC…): see ``voi`` above; 8-bit images without rescale are ``uint8`` as stored.
  MONOCHROME1 is turned into display-correct data HERE: the uint8 result is inverted, and raw values are
  mirrored within their stored range (``lo + hi − x``), so higher values are brighter in every output and the
  Frame contract needs no "invert" flag.
- Multi-frame images that are not volumes (cine, US, XA, or enhanced frames without distinct positions) give one
  ``im`` frame per frame, ``slice_index`` = frame number (0-based), with the frame's own pixel spacing (enhanced
  files keep it in the functional groups).

Annotations (files in the same dataset folder):

- DICOM SEG: each frame is matched to its source slice by the referenced SOP Instance UID (and frame number),
  else by its ``ImagePositionPatient``; segments become named masks (BINARY as is, FRACTIONAL ≥ 50 %). On the
  frames of a multi-frame image that is no volume only the reference places it; one without a frame number is
  to every frame (PS3.3 Table 10-3), one with several (derived from several source frames) to each of them.
  A SEG frame the source lacks (or one of its several frames) → ``unmatched_annotation``; of another size →
  ``shape_mismatch``; ``max_pixels`` holds for SEGs as for images.
- RTSTRUCT: CLOSED_PLANAR contours are rasterized on the slice they lie on (the referenced SOP UID, else the
  slice within half a slice gap of the contour's plane): pixel centres inside or on the polygon; several
  contours of one ROI on one slice combine by XOR (inner contours are holes). POINT and OPEN contours
  (isocentres, markers) are no region and are skipped. An RTSTRUCT on frames that are no volume →
  ``unmatched_annotation``.
- An annotation whose referenced series is not under the dataset folder → ``missing_file``.

Read errors (reason codes): ``not_dicom``, ``no_pixel_data``, ``unsupported_transfer_syntax``,
``unreadable_image`` (truncated or corrupt pixel data), ``inconsistent_series``, ``unmatched_annotation``,
``shape_mismatch``, ``bad_label_value``, ``bad_dimensions``, ``too_large`` (Rows × Columns × frames × samples,
or a series' slices × Rows × Columns, over ``max_pixels``: refused from the header, before any pixel is
decoded), ``burned_in_annotation`` (``BurnedInAnnotation`` YES: identifying text may be in the pixels).

Identifiers: DICOM UIDs never reach an output as they are. A case id that holds one (a series in the dataset
folder itself is named by its SeriesInstanceUID; SIIM names files by SOP UID) gets a pseudonym token in keys,
paths and reject details (``medpclip.corpus.schema.scrub_uids``); PatientID and StudyInstanceUID only feed
the salted patient and study hashes.

Memory: one series at a time; annotation masks are bit-packed (8 masks per byte per voxel).

For sibling readers (``sources.contours``: LIDC-IDRI XML contours on a CT series): :func:`load_series` assembles
an item's series in stack order and :func:`volume_frames` slices it with annotations given on the stack
(:class:`MaskChannels`, each channel with an optional annotator, :class:`StackPoint`, :class:`StackBox`),
through the same reorientation as SEG and RTSTRUCT masks.

Modules: ``files`` (the DICOM file test, reading datasets, decoding pixels, header values), ``options``
(``DicomOptions``, ``SeriesMasks``), ``functional_groups`` (enhanced multi-frame macros), ``intensity``,
``geometry``, ``discovery`` (``discover``), ``annotations`` (SEG, RTSTRUCT, polygon fill, mask files),
``series`` (series volumes and their Frames), ``image`` (one 2D image for the other families) and ``reader``
(``read``). This package exposes the names other modules use.
"""

from __future__ import annotations

from medpclip.sources.base import lazy_attributes

# Lazy (PEP 562), as in every family package: ``medpclip.specs`` imports ``dicom.options`` without the reader.
__getattr__ = lazy_attributes(
    __name__, ("options", "annotations", "discovery", "files", "image", "reader", "series")
)
