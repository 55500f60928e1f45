"""Contours (LIDC-IDRI XML on CT series, MoNuSeg ImageScope XML), reports (IU X-ray OpenI XML, MIMIC-CXR text),
CHAOS (DICOM series + reversed, grey-coded PNG mask stacks) and COCO JSON — on fixtures this test writes in the
publishers' layouts, checked against known truth, through the shipped specs. One end-to-end build. No mocks."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from corpus_utils import frames_of, items_of
from PIL import Image
from pycocotools import mask as mask_utils
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from medpclip import imaging, regions
from medpclip.corpus.sample import SampleParams, make_sample
from medpclip.frame import Frame, ReadError, SourceItem
from medpclip.specs import DatasetSpec, parse_spec, resolve_spec, resolve_specs

# --- helpers -------------------------------------------------------------------------------------------------


def _reason(spec: DatasetSpec, raw: Path, item: SourceItem) -> str:
    with pytest.raises(ReadError) as e:
        frames_of(spec, raw, item)
    return e.value.reason


def _regions(frame: Frame):
    """What the build makes of a frame's annotations (no resizing: the fixtures are small)."""
    return regions.extract_regions(
        frame.shape,
        label_map=frame.label_map,
        label_values=frame.label_values,
        masks=frame.masks,
        mask_annotators=frame.mask_annotators,
        boxes=frame.boxes,
        points=frame.points,
        min_area_px=1,
        rng_for=lambda _: np.random.default_rng(0),
    )


def _components(frame: Frame, label: str) -> list[np.ndarray]:
    return [c for lab, m in frame.masks if lab == label for c in regions.connected_instances(m)]


def _same_sets(found: list[np.ndarray], truth: list[np.ndarray]) -> bool:
    key = lambda m: np.packbits(m).tobytes()  # noqa: E731
    return sorted(map(key, found)) == sorted(map(key, truth))


def _dicom_slice(
    path: Path,
    pixels: np.ndarray,
    *,
    z: float,
    series_uid: str,
    study_uid: str,
    sop_uid: str | None = None,
    modality: str = "CT",
    orientation=(1, 0, 0, 0, 1, 0),
    spacing=(0.7, 0.7),
    patient_id: str = "PAT",
    instance: int = 1,
) -> str:
    """One slice as scanners write them (CT: HU + 1024 with intercept -1024; MR: raw unsigned)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage if modality == "CT" else MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientID = patient_id
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = study_uid + ".9"
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [-10.0, -12.0, float(z)]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [float(v) for v in spacing]
    ds.SliceThickness = 2.5
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    if modality == "CT":
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = (pixels.astype(np.int32) + 1024).astype("<i2").tobytes()
    else:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = pixels.astype("<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds.SOPInstanceUID


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def _rect_chain(x0: int, y0: int, x1: int, y1: int) -> list[tuple[int, int]]:
    """Every pixel of a rectangle's outline, in order (an LIDC edge map)."""
    top = [(x, y0) for x in range(x0, x1 + 1)]
    right = [(x1, y) for y in range(y0 + 1, y1 + 1)]
    bottom = [(x, y1) for x in range(x1 - 1, x0 - 1, -1)]
    left = [(x0, y) for y in range(y1 - 1, y0, -1)]
    return top + right + bottom + left


# --- LIDC-IDRI -----------------------------------------------------------------------------------------------

LIDC_SHAPE = (32, 32)
LIDC_Z = [-122.5, -125.0, -127.5, -120.0]  # file order; stack order is ascending z: files 2, 1, 0, 3


def _roi(z: float, sop: str | None, points, inclusion: bool = True) -> str:
    edges = "".join(f"<edgeMap><xCoord>{x}</xCoord><yCoord>{y}</yCoord></edgeMap>" for x, y in points)
    sop_xml = f"<imageSOP_UID>{sop}</imageSOP_UID>" if sop else ""
    flag = "TRUE" if inclusion else "FALSE"
    return (
        f"<roi><imageZposition>{z:.6f} </imageZposition>{sop_xml}<inclusion>{flag}</inclusion>{edges}</roi>"
    )


CHARACTERISTICS = (
    "<characteristics><subtlety>5</subtlety><internalStructure>1</internalStructure><calcification>6"
    "</calcification><sphericity>4</sphericity><margin>4</margin><lobulation>2</lobulation><spiculation>1"
    "</spiculation><texture>5</texture><malignancy>3</malignancy></characteristics>"
)


def _lidc_case(raw: Path, pid: str = "LIDC-IDRI-0001", orientation=(1, 0, 0, 0, 1, 0)) -> dict:
    """One CT series in the TCIA layout with its XML (namespace, 2 readers, a hole, a point, a z-only roi, a
    2-point outline, a non-nodule). Returns the truth in the stored pixel grid, per stack index."""
    study, series = "1.3.6.1.4.1.14519.5.2.1.6279.6001.1001", "1.3.6.1.4.1.14519.5.2.1.6279.6001.2002"
    folder = raw / "LIDC-IDRI" / pid / study / series
    sops = {}
    for i, z in enumerate(LIDC_Z):
        hu = np.full(LIDC_SHAPE, -900, dtype=np.int16)
        hu[0, 0] = i  # which file this is
        hu[25, 5] = 300  # the small nodule's pixel
        sops[z] = _dicom_slice(
            folder / f"1-{i + 1:03d}.dcm", hu, z=z, series_uid=series, study_uid=study, orientation=orientation,
            instance=i + 1, patient_id="PHI-PATIENT-ID",
        )  # fmt: skip
    k_of_z = {z: k for k, z in enumerate(sorted(LIDC_Z))}
    # reader 1: nodule on z=-125 (outline + hole, by SOP UID) and z=-122.5 (by z only); a small nodule (point)
    r1 = [_roi(-125.0, sops[-125.0], _rect_chain(10, 8, 20, 16))]
    r1 += [_roi(-125.0, sops[-125.0], _rect_chain(13, 10, 16, 13), inclusion=False)]
    r1 += [_roi(-122.5, None, _rect_chain(11, 9, 18, 15))]
    small = _roi(-127.5, sops[-127.5], [(5, 25)])
    # reader 2: the same nodule outlined by its 4 corners only; a 2-point outline; a non-nodule
    r2 = [_roi(-125.0, sops[-125.0], [(11, 9), (21, 9), (21, 17), (11, 17)])]
    r2 += [_roi(-120.0, sops[-120.0], [(3, 3), (6, 6)])]
    xml = f"""<?xml version="1.0" encoding="UTF-8"?>
<LidcReadMessage uid="1.3.6.1.4.1.14519.5.2.1.6279.6001.9" xmlns="http://www.nih.gov"
 xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
 xsi:schemaLocation="http://www.nih.gov http://troll.rad.med.umich.edu/lidc/LidcReadMessage.xsd">
<ResponseHeader><Version>1.8.1</Version><MessageId>-421198203</MessageId><DateRequest>2007-11-01</DateRequest>
<TaskDescription>Second unblinded read</TaskDescription><SeriesInstanceUid>{series}</SeriesInstanceUid>
<ResponseDescription>1 - Reading complete</ResponseDescription><StudyInstanceUID>{study}</StudyInstanceUID>
</ResponseHeader>
<readingSession><annotationVersion>3.12</annotationVersion><servicingRadiologistID>anon</servicingRadiologistID>
<unblindedReadNodule><noduleID>Nodule 001</noduleID>{CHARACTERISTICS}{"".join(r1)}</unblindedReadNodule>
<unblindedReadNodule><noduleID>IL057_130763</noduleID>{small}</unblindedReadNodule>
</readingSession>
<readingSession><annotationVersion>3.12</annotationVersion><servicingRadiologistID>anon</servicingRadiologistID>
<unblindedReadNodule><noduleID>0</noduleID>{CHARACTERISTICS}{"".join(r2)}</unblindedReadNodule>
<nonNodule><nonNoduleID>Non-nodule 001</nonNoduleID><imageZposition>-120.000000</imageZposition>
<imageSOP_UID>{sops[-120.0]}</imageSOP_UID><locus><xCoord>28</xCoord><yCoord>4</yCoord></locus></nonNodule>
</readingSession>
</LidcReadMessage>
"""
    (folder / "069.xml").write_text(xml, encoding="utf-8")
    truth = {}
    m = np.zeros(LIDC_SHAPE, bool)
    m[9:16, 11:20] = True  # strict interior of the 10..20 x 8..16 outline
    m[11:13, 14:16] = False  # strict interior of the 13..16 x 10..13 hole
    truth[("reader1", k_of_z[-125.0])] = m
    m = np.zeros(LIDC_SHAPE, bool)
    m[10:15, 12:18] = True
    truth[("reader1", k_of_z[-122.5])] = m
    m = np.zeros(LIDC_SHAPE, bool)
    m[10:17, 12:21] = True  # corners only: the outline's lattice points are left out all the same
    truth[("reader2", k_of_z[-125.0])] = m
    return {"truth": truth, "k_of_z": k_of_z, "case": f"{pid}/{study}/{series}", "folder": folder}


def test_lidc_masks_holes_points_and_slices(tmp_path):
    case = _lidc_case(tmp_path)
    spec = resolve_spec("lidc_idri")
    (tmp_path / "LIDC-IDRI" / "LICENSE.txt").write_text("junk")
    items = items_of(spec, tmp_path)
    assert list(items) == [case["case"]]
    item = items[case["case"]]
    assert item.patient_id == "LIDC-IDRI-0001"
    assert sorted({f.role for f in item.files}) == ["image", "xml"]
    frames = {f.slice_index: f for f in frames_of(spec, tmp_path, item)}
    assert sorted(frames) == [0, 1, 2, 3]
    k = case["k_of_z"]
    for z, i in zip(LIDC_Z, range(4), strict=True):  # slices by position; display = stored grid (axial LPS)
        assert frames[k[z]].image[0, 0] == i and frames[k[z]].intensity == "hu"
    # reader masks: one mask per reader and slice, each the nodule's fill without outline and hole
    at = frames[k[-125.0]]
    assert [lab for lab, _ in at.masks] == ["nodule", "nodule"]
    assert at.mask_annotators == ["reader1", "reader2"]  # each reader's mask names its reader
    assert np.array_equal(at.masks[0][1], case["truth"][("reader1", k[-125.0])])
    assert np.array_equal(at.masks[1][1], case["truth"][("reader2", k[-125.0])])
    z_only = frames[k[-122.5]]  # found by imageZposition (no SOP UID in the roi)
    assert [lab for lab, _ in z_only.masks] == ["nodule"] and z_only.mask_annotators == ["reader1"]
    assert np.array_equal(z_only.masks[0][1], case["truth"][("reader1", k[-122.5])])
    # the < 3 mm nodule: a point at its pixel, with its reader
    (point,) = frames[k[-127.5]].points
    assert (point.label, point.xy, point.annotator) == ("small nodule", (5.5, 25.5), "reader1")
    assert frames[k[-127.5]].image[25, 5] == 300
    # the 2-point outline: rejected at region level, on its slice; the non-nodule is off in the spec
    top = frames[k[-120.0]]
    assert not top.masks and not top.points
    found, drops = _regions(top)
    assert found == [] and [(d.label, d.reason) for d in drops] == [("nodule", "invalid_box")]
    found, drops = _regions(at)
    assert [(r.label, r.kind, r.instance, r.annotator) for r in found] == [
        ("nodule", "mask", 0, "reader1"), ("nodule", "mask", 1, "reader2"),
    ]  # fmt: skip


def test_lidc_sample_records_keep_each_readers_mask_with_its_reader(tmp_path):
    """Through make_sample, which resizes the masks (32 -> 24 px): each region record is the resized mask of
    the reader it names."""
    case = _lidc_case(tmp_path)
    spec = resolve_spec("lidc_idri")
    (item,) = items_of(spec, tmp_path).values()
    frames = {f.slice_index: f for f in frames_of(spec, tmp_path, item)}
    k = case["k_of_z"]
    for z, readers in ((-125.0, ["reader1", "reader2"]), (-122.5, ["reader1"])):
        sample, drops = make_sample(
            frames[k[z]], spec, SampleParams(max_side=24), key="lidc", split="train", source_files=[]
        )
        assert not drops
        records = sample.record["regions"]
        assert (sample.record["height"], sample.record["width"]) == (24, 24)
        assert [(r["kind"], r["instance"], r["annotator"]) for r in records] == [
            ("mask", i, reader) for i, reader in enumerate(readers)
        ]
        for r in records:
            truth = imaging.resize_labels(case["truth"][(r["annotator"], k[z])], (24, 24))
            assert np.array_equal(regions.decode_rle(r["mask_rle"]), truth)


def test_lidc_boxes_with_annotators_non_nodules_and_flipped_rows(tmp_path):
    # rows stored right-to-left (row direction -x): display flips the columns; boxes and points follow
    case = _lidc_case(tmp_path, pid="LIDC-IDRI-0007", orientation=(-1, 0, 0, 0, 1, 0))
    data = resolve_spec("lidc_idri").model_dump(mode="json")
    data["format"]["options"].update(regions="box", non_nodules=True)
    spec = parse_spec(data)
    (item,) = items_of(spec, tmp_path).values()
    frames = {f.slice_index: f for f in frames_of(spec, tmp_path, item)}
    k, w = case["k_of_z"], LIDC_SHAPE[1]
    at = frames[k[-125.0]]
    assert not at.masks
    assert np.array_equal(at.image[:, ::-1][0, 0], 1)  # file 1 (z=-125), stored pixel (0, 0) is now top right
    boxes = sorted((b.annotator, b.xyxy) for b in at.boxes)
    assert boxes == [("reader1", (w - 20, 9, w - 11, 16)), ("reader2", (w - 21, 10, w - 12, 17))]
    (point,) = frames[k[-127.5]].points
    assert point.xy == (w - 5.5, 25.5) and point.annotator == "reader1"
    x, y = (int(v) for v in point.xy)
    assert frames[k[-127.5]].image[y, x] == 300  # the point still sits on its pixel
    (nn,) = frames[k[-120.0]].points
    assert (nn.label, nn.xy, nn.annotator) == ("non-nodule", (w - 28.5, 4.5), "reader2")


def test_lidc_repeated_slice_and_bad_inputs(tmp_path):
    case = _lidc_case(tmp_path)
    spec = resolve_spec("lidc_idri")
    # a second slice at z=-125 with a higher InstanceNumber: pylidc keeps the lower one
    dup = np.full(LIDC_SHAPE, -900, dtype=np.int16)
    dup[0, 0] = 99
    study, series = case["case"].split("/")[1:]
    _dicom_slice(case["folder"] / "1-050.dcm", dup, z=-125.0, series_uid=series, study_uid=study, instance=50)
    (item,) = items_of(spec, tmp_path).values()
    frames = {f.slice_index: f for f in frames_of(spec, tmp_path, item)}
    assert sorted(frames) == [0, 1, 2, 3] and frames[case["k_of_z"][-125.0]].image[0, 0] == 1
    data = spec.model_dump(mode="json")
    data["format"]["options"]["repeated_slices"] = "reject"
    assert _reason(parse_spec(data), tmp_path, item) == "inconsistent_series"
    (case["folder"] / "1-050.dcm").unlink()
    xml = case["folder"] / "069.xml"
    text = xml.read_text()
    xml.write_text(text[: len(text) // 2])
    (item,) = items_of(spec, tmp_path).values()
    assert _reason(spec, tmp_path, item) == "unreadable_annotation"
    xml.write_text(text.replace("-122.500000", "-99.000000"))  # the z-only roi now lies on no slice
    assert _reason(spec, tmp_path, item) == "unmatched_annotation"
    xml.unlink()
    (item,) = items_of(spec, tmp_path).values()
    assert _reason(spec, tmp_path, item) == "missing_file"


# --- MoNuSeg -------------------------------------------------------------------------------------------------


def _monuseg_xml(recordsxy: list[list[tuple[float, float]]]) -> str:
    out = ['<?xml version="1.0"?>\n<Annotations MicronsPerPixel="0.252100">']
    out.append('<Annotation Id="1" Name="" ReadOnly="0" LineColor="65280" Visible="1" Type="4"><Attributes>')
    out.append(
        '<Attribute Name="Description" Id="0" Value=""/></Attributes><Regions><RegionAttributeHeaders>'
    )
    out.append('<AttributeHeader Id="9999" Name="Region" ColumnWidth="-1"/></RegionAttributeHeaders>')
    for n, pts in enumerate(recordsxy, start=1):
        out.append(
            f'<Region Id="{n}" Type="0" Zoom="0.5" Selected="0" NegativeROA="0" Analyze="1"><Attributes/>'
        )
        out.append("<Vertices>" + "".join(f'<Vertex X="{x}" Y="{y}" Z="0"/>' for x, y in pts) + "</Vertices>")
        out.append("</Region>")
    out.append("</Regions><Plots/></Annotation></Annotations>")
    return "\n".join(out)


NUCLEI = [
    [(4.6, 3.2), (12.4, 3.2), (12.4, 9.8), (4.6, 9.8)],  # A: cols 5..12, rows 4..9
    [(10.0, 7.0), (16.0, 7.0), (16.0, 12.0), (10.0, 12.0)],  # B: overlaps A; cols 10..16, rows 7..12
    [(30.0, 5.0), (40.0, 5.0), (30.0, 15.0)],  # C: a right triangle
    [(44.0, 30.0), (46.0, 32.0)],  # D: two vertices, no area
]


def _monuseg_truth(shape) -> list[np.ndarray]:
    a, b, c = (np.zeros(shape, bool) for _ in range(3))
    a[4:10, 5:13] = True
    b[7:13, 10:17] = True
    rr, cc = np.mgrid[0 : shape[0], 0 : shape[1]]
    c[(cc >= 30) & (rr >= 5) & ((cc - 30) + (rr - 5) <= 10)] = True
    return [a, b, c]


def _monuseg(raw: Path) -> None:
    root = raw / "monuseg"
    rgb = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    train = root / "MoNuSeg 2018 Training Data"
    (train / "Tissue Images").mkdir(parents=True)
    (train / "Annotations").mkdir()
    Image.fromarray(rgb).save(train / "Tissue Images" / "TCGA-18-5592-01Z-00-DX1.tif")
    (train / "Annotations" / "TCGA-18-5592-01Z-00-DX1.xml").write_text(_monuseg_xml(NUCLEI))
    Image.fromarray(rgb).save(train / "Tissue Images" / "TCGA-21-5784-01Z-00-DX1.tif")  # no annotation
    test = root / "MoNuSegTestData"
    test.mkdir()
    Image.fromarray(rgb).save(test / "TCGA-2Z-A9J9-01A-01-TS1.tif")
    (test / "TCGA-2Z-A9J9-01A-01-TS1.xml").write_text(_monuseg_xml(NUCLEI[:1])[:-40])  # truncated
    (test / "._TCGA-2Z-A9J9-01A-01-TS1.tif").write_bytes(b"\x00\x05\x16\x07")


def test_monuseg_polygons_become_instances(tmp_path):
    _monuseg(tmp_path)
    spec = resolve_spec("monuseg")
    items = items_of(spec, tmp_path)
    assert list(items) == ["TCGA-18-5592-01Z-00-DX1", "TCGA-21-5784-01Z-00-DX1", "TCGA-2Z-A9J9-01A-01-TS1"]
    good = items["TCGA-18-5592-01Z-00-DX1"]
    assert (good.patient_id, good.official_split) == ("TCGA-18-5592", "train")
    assert items["TCGA-2Z-A9J9-01A-01-TS1"].official_split == "test"
    (frame,) = frames_of(spec, tmp_path, good)
    assert frame.image.shape == (40, 50, 3) and frame.intensity == "uint8"
    assert frame.spacing_mm == pytest.approx((0.0002521, 0.0002521))
    assert len(frame.masks) == 2  # A and B overlap: two layers; C shares a layer with A
    assert _same_sets(_components(frame, "nucleus"), _monuseg_truth((40, 50)))
    found, drops = _regions(frame)
    assert [(r.label, r.kind) for r in found] == [("nucleus", "mask")] * 3
    assert sorted(r.area_px for r in found) == sorted(int(t.sum()) for t in _monuseg_truth((40, 50)))
    assert [(d.label, d.reason) for d in drops] == [("nucleus", "invalid_box")]  # D
    assert _reason(spec, tmp_path, items["TCGA-21-5784-01Z-00-DX1"]) == "missing_file"
    assert _reason(spec, tmp_path, items["TCGA-2Z-A9J9-01A-01-TS1"]) == "unreadable_annotation"


# --- IU X-ray (OpenI) ----------------------------------------------------------------------------------------


def _openi_xml(uid: str, sections: dict[str, str | None], mesh: list[str], images: list[str]) -> str:
    texts = "".join(
        f'<AbstractText Label="{k}"/>' if v is None else f'<AbstractText Label="{k}">{v}</AbstractText>'
        for k, v in sections.items()
    )
    parents = "".join(
        f'<parentImage id="{i}"><figureId>F1</figureId><caption>Xray Chest PA and Lateral</caption><panel '
        f'type="single"><url>/hadoop/storage/radiology/extract/{i}.jpg</url><imgModality>7</imgModality></panel>'
        "</parentImage>"
        for i in images
    )
    majors = "".join(f"<major>{m}</major>" for m in mesh)
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\n<eCitation><meta type="rr"/><uId id="{uid}"/>'
        f'<pmcId id="{uid[3:]}"/><docSource>CXR</docSource><IUXRId id="{uid[3:]}"/>'
        "<licenseType>open-access</licenseType><licenseURL>http://creativecommons.org/licenses/by-nc-nd/4.0/"
        '</licenseURL><MedlineCitation Owner="Indiana University" Status="supplied by publisher"><Article '
        'PubModel="Electronic"><ArticleTitle>Indiana University Chest X-ray Collection</ArticleTitle><Abstract>'
        f"{texts}</Abstract></Article></MedlineCitation><MeSH>{majors}<automatic>Lung</automatic></MeSH>"
        f"{parents}</eCitation>"
    )


def _iu_xray(raw: Path) -> None:
    root = raw / "iu_xray"
    (root / "ecgen-radiology").mkdir(parents=True)
    (root / "ecgen-radiology" / "1.xml").write_text(
        _openi_xml(
            "CXR1",
            {
                "COMPARISON": "None.",
                "INDICATION": "Positive TB test",
                "FINDINGS": "The heart is enlarged.  There is\n   mild left basilar atelectasis. No XXXX effusion.",
                "IMPRESSION": "Cardiomegaly. Left basilar atelectasis.",
            },
            ["Cardiomegaly/mild", "Pulmonary Atelectasis/base/left", "Lung/hypoinflation"],
            ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"],
        )
    )
    (root / "ecgen-radiology" / "2.xml").write_text(
        _openi_xml(
            "CXR2",
            {
                "COMPARISON": None,
                "INDICATION": "Chest pain",
                "FINDINGS": None,
                "IMPRESSION": "Normal chest x-XXXX.",
            },
            ["normal"],
            ["CXR2_IM-0652-1001"],
        )
    )
    (root / "ecgen-radiology" / "3.xml").write_text("<eCitation><uId id='CXR3'/><parentImage")  # truncated
    grey = np.arange(24 * 20, dtype=np.uint8).reshape(24, 20)
    for name in ("CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001", "CXR2_IM-0652-1001", "CXR9_IM-9999-1001"):
        _png(root / "NLMCXR_png" / f"{name}.png", grey)


def test_iu_xray_reports_mesh_labels_and_grouping(tmp_path):
    _iu_xray(tmp_path)
    spec = resolve_spec("iu_xray")
    items = items_of(spec, tmp_path)
    assert list(items) == [
        "CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001", "CXR2_IM-0652-1001", "CXR9_IM-9999-1001", "report/3",
    ]  # fmt: skip
    pa, lateral = items["CXR1_1_IM-0001-3001"], items["CXR1_1_IM-0001-4001"]
    assert (pa.patient_id, pa.study_id) == ("CXR1", "CXR1") and lateral.patient_id == "CXR1"
    (frame,) = frames_of(spec, tmp_path, pa)
    assert frame.report == (
        "FINDINGS: The heart is enlarged. There is mild left basilar atelectasis. No XXXX effusion.\n"
        "IMPRESSION: Cardiomegaly. Left basilar atelectasis."
    )
    assert frame.image_labels == ["Cardiomegaly", "Pulmonary Atelectasis"]  # Lung/hypoinflation: no label
    assert frame.image.dtype == np.uint8 and frame.image.shape == (24, 20)
    (normal,) = frames_of(spec, tmp_path, items["CXR2_IM-0652-1001"])
    assert normal.report == "IMPRESSION: Normal chest x-XXXX." and normal.image_labels == ["normal"]
    assert _reason(spec, tmp_path, items["CXR9_IM-9999-1001"]) == "no_report"
    assert _reason(spec, tmp_path, items["report/3"]) == "unreadable_annotation"


# --- MIMIC-CXR -----------------------------------------------------------------------------------------------

MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with shortness of breath  // eval for pneumonia

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  The
 cardiomediastinal silhouette is normal.  Degenerative changes of the
 thoracic spine are noted.

 IMPRESSION:

 No acute cardiopulmonary process.
"""

MIMIC_NO_SECTIONS = """                                 FINAL REPORT
 PORTABLE CHEST RADIOGRAPH

 Endotracheal tube tip lies 4 cm above the carina.

 Interval increase in the right pleural effusion.
"""


def test_mimic_reports_split_and_ids(tmp_path):
    root = tmp_path / "mimic_cxr"
    grey = np.full((16, 12), 128, np.uint8)
    studies = {
        ("p10", "p10000032", "s50414267"): (MIMIC_REPORT, ["02aa804e-bde0afdd-112c0b34-7bc16630-4e384014",
                                                           "174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962"]),
        ("p10", "p10000764", "s57375967"): (MIMIC_NO_SECTIONS, ["096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4"]),
        ("p11", "p11000011", "s51029426"): (None, ["8959e402-2175d68d-edba5a6c-520a4ea0-6b5a2b9e"]),
    }  # fmt: skip
    for (group, subject, study), (report, dicoms) in studies.items():
        (root / "files" / group / subject / study).mkdir(parents=True)
        for d in dicoms:
            Image.fromarray(grey).save(root / "files" / group / subject / study / f"{d}.jpg")
        if report is not None:
            (root / "files" / group / subject / f"{study}.txt").write_text(report)
    split = "dicom_id,study_id,subject_id,split\n" + "".join(
        f"{d},{study[1:]},{subject[1:]},{s}\n"
        for ((_, subject, study), (_, dicoms)), s in zip(
            studies.items(), ["train", "validate", "test"], strict=True
        )
        for d in dicoms[:1]
    )
    (root / "mimic-cxr-2.0.0-split.csv.gz").write_bytes(gzip.compress(split.encode()))
    spec = resolve_spec("mimic_cxr")
    items = items_of(spec, tmp_path)
    first = items["p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014"]
    second = items["p10000032/s50414267/174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962"]
    assert (first.patient_id, first.study_id, first.official_split) == ("p10000032", "s50414267", "train")
    assert second.official_split == "train"  # not in the table: its subject's split
    (frame,) = frames_of(spec, tmp_path, first)
    assert frame.report == (
        "FINDINGS: There is no focal consolidation, pleural effusion or pneumothorax. The cardiomediastinal "
        "silhouette is normal. Degenerative changes of the thoracic spine are noted.\n"
        "IMPRESSION: No acute cardiopulmonary process."
    )
    other = items["p10000764/s57375967/096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4"]
    assert other.official_split == "val"
    (frame,) = frames_of(spec, tmp_path, other)
    assert frame.report == "Interval increase in the right pleural effusion."  # no sections: last paragraph
    missing = items["p11000011/s51029426/8959e402-2175d68d-edba5a6c-520a4ea0-6b5a2b9e"]
    assert missing.official_split == "test" and _reason(spec, tmp_path, missing) == "missing_file"


# --- CHAOS ---------------------------------------------------------------------------------------------------

CHAOS_SHAPE = (20, 16)


def _square(k: int) -> np.ndarray:
    m = np.zeros(CHAOS_SHAPE, bool)
    m[2 + 3 * k : 6 + 3 * k, 1 + 2 * k : 5 + 2 * k] = True
    return m


def _chaos(raw: Path) -> dict:
    """CT patient 2 (liver 0/255) and MR patient 2 (T2SPIR, T1DUAL in/out phase; grey-coded organs). File i is
    the i-th slice from the TOP (z descending); mask file i (natural order) belongs to file i."""
    base = raw / "chaos" / "Train_Sets"
    zs = [0.0, -5.0, -10.0]
    ct = base / "CT" / "2"
    for i, z in enumerate(zs):
        hu = np.full(CHAOS_SHAPE, 40, np.int16)
        hu[0, 0] = i
        _dicom_slice(
            ct / "DICOM_anon" / f"i{i:04d},0000b.dcm", hu, z=z, series_uid="1.2.3.1", study_uid="1.2.3"
        )
        _png(ct / "Ground" / f"liver_GT_{i:03d}.png", _square(i) * 255)
    mr = base / "MR" / "2"
    coded = []
    for i, z in enumerate(zs):
        g = np.zeros(CHAOS_SHAPE, np.uint8)
        g[_square(i)] = 63  # liver
        g[15:18, 1 + 4 * i : 3 + 4 * i] = (126, 189, 252)[i]  # right kidney, left kidney, spleen
        coded.append(g)
        raw_mr = np.full(CHAOS_SHAPE, 200, np.uint16)
        raw_mr[0, 0] = i
        _dicom_slice(
            mr / "T2SPIR" / "DICOM_anon" / f"IMG-0002-{i + 1:05d}.dcm", raw_mr, z=z, series_uid="1.2.3.2",
            study_uid="1.2.3", modality="MR",
        )  # fmt: skip
        _png(mr / "T2SPIR" / "Ground" / f"IMG-0002-{8 + i}.png", g)  # 8, 9, 10: natural order, not text order
        for phase, n in (("OutPhase", 2 * i + 1), ("InPhase", 2 * i + 2)):  # one series, two folders
            _dicom_slice(
                mr / "T1DUAL" / "DICOM_anon" / phase / f"IMG-0004-{n:05d}.dcm", raw_mr, z=z,
                series_uid="1.2.3.4", study_uid="1.2.3", modality="MR", instance=n,
            )  # fmt: skip
        _png(mr / "T1DUAL" / "Ground" / f"IMG-0004-{2 * i + 2:05d}.png", g)
    return {"zs": zs, "coded": coded}


def test_chaos_ct_and_mr_masks_in_reversed_stack_order(tmp_path):
    truth = _chaos(tmp_path)
    spec = resolve_spec("chaos")
    items = items_of(spec, tmp_path)
    assert list(items) == [
        "Train_Sets/CT/2/DICOM_anon",
        "Train_Sets/MR/2/T1DUAL/DICOM_anon/InPhase",
        "Train_Sets/MR/2/T1DUAL/DICOM_anon/OutPhase",
        "Train_Sets/MR/2/T2SPIR/DICOM_anon",
    ]
    assert {i.patient_id for i in items.values()} == {
        "2"
    }  # one group: T1 in/out, T2 and the CT share a split
    ct = frames_of(spec, tmp_path, items["Train_Sets/CT/2/DICOM_anon"])
    assert [f.slice_index for f in ct] == [0, 1, 2]
    for f in ct:  # slice_index 0 is the lowest z = the LAST file and the LAST mask file
        i = 2 - f.slice_index
        assert f.image[0, 0] == i and f.modality == "CT" and f.intensity == "hu"
        assert [lab for lab, _ in f.masks] == ["liver"] and np.array_equal(f.masks[0][1], _square(i))
    for case in ("Train_Sets/MR/2/T2SPIR/DICOM_anon", "Train_Sets/MR/2/T1DUAL/DICOM_anon/InPhase"):
        frames = frames_of(spec, tmp_path, items[case])
        assert len(frames) == 3
        for f in frames:
            i = 2 - f.slice_index
            assert f.image[0, 0] == i and f.modality == "MR" and f.intensity == "raw"
            g = truth["coded"][i]
            masks = dict(f.masks)
            assert np.array_equal(masks["liver"], g == 63)
            other = ("right kidney", "left kidney", "spleen")[i]
            assert set(masks) == {"liver", other}
            assert np.array_equal(masks[other], g == (126, 189, 252)[i])


def test_chaos_bad_masks_and_merged_phases(tmp_path):
    _chaos(tmp_path)
    spec = resolve_spec("chaos")
    ground = tmp_path / "chaos" / "Train_Sets" / "MR" / "2" / "T2SPIR" / "Ground"
    g = np.array(Image.open(ground / "IMG-0002-9.png"))
    g[0, 0] = 30  # a grey level in no range
    _png(ground / "IMG-0002-9.png", g)
    (tmp_path / "chaos" / "Train_Sets" / "CT" / "2" / "Ground" / "liver_GT_002.png").unlink()
    items = items_of(spec, tmp_path)
    assert _reason(spec, tmp_path, items["Train_Sets/MR/2/T2SPIR/DICOM_anon"]) == "bad_label_value"
    assert _reason(spec, tmp_path, items["Train_Sets/CT/2/DICOM_anon"]) == "shape_mismatch"
    # without split_series_by_folder the two echoes are one series with repeated positions
    data = spec.model_dump(mode="json")
    data["format"]["options"]["split_series_by_folder"] = False
    data["patient_id"] = {}  # the merged series is named by its UID, which the folder regex cannot match
    merged = parse_spec(data)
    t1 = items_of(merged, tmp_path)["1.2.3.4"]  # two folders: the series is named by its UID
    assert _reason(merged, tmp_path, t1) == "inconsistent_series"


# --- COCO ----------------------------------------------------------------------------------------------------


def _coco_spec() -> DatasetSpec:
    return parse_spec(
        {
            "name": "coco_test", "root": "COCO", "title": "COCO fixture", "citation": "written by this test",
            "licence": "MIT", "access": "open", "homepage": "https://cocodataset.org", "modality": "XR",
            "body_part": "chest",
            "format": {"family": "tables", "options": {
                "images": "imgs/**/*.png", "match": "path", "image_root": "imgs", "grey": True,
                "coco": {"file": "annotations/train.json", "split": "train", "image_labels": True},
            }},
            "labels": [
                {"label": "nodule", "name": "Nodule", "category": "nodule"},
                {"label": "effusion", "name": "Pleural effusion", "category": "effusion"},
            ],
            "intensity": {"kind": "uint8"}, "slicing": {"keep_empty": True},
        }
    )  # fmt: skip


def _uncompressed_rle(mask: np.ndarray) -> list[int]:
    """COCO counts by hand: runs over the column-major flattening, starting with zeros."""
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, current, run = [], 0, 0
    for v in flat:
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = v, 1
    counts.append(run)
    return counts


def test_coco_polygons_rle_boxes_and_negatives(tmp_path):
    h, w = 30, 40
    root = tmp_path / "COCO"
    for name in ("pos/a.png", "pos/b.png", "neg/c.png", "pos/d.png", "pos/e.png"):
        _png(root / "imgs" / name, np.zeros((h, w) if name != "pos/e.png" else (h, w + 1)))
    crowd = np.zeros((h, w), bool)
    crowd[20:25, 2:6] = crowd[20:25, 10:13] = True
    compressed = np.zeros((h, w), bool)
    compressed[1:4, 30:38] = True
    rle = mask_utils.encode(np.asfortranarray(compressed.astype(np.uint8)))
    coco = {
        "categories": [{"id": 1, "name": "nodule", "supercategory": "lesion"}, {"id": 7, "name": "effusion"}],
        "images": [
            {"id": 1, "file_name": "pos/a.png", "width": w, "height": h},
            {"id": 5, "file_name": "pos/b.png", "width": w, "height": h},
            {"id": 601, "file_name": "neg/c.png", "width": w, "height": h},
            {"id": 9, "file_name": "pos/d.png", "width": w, "height": h},
            {"id": 10, "file_name": "pos/e.png", "width": w, "height": h},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [10, 5, 10, 6], "area": 60,
             "segmentation": [[10, 5, 20, 5, 20, 11, 10, 11], [25, 5, 30, 5, 30, 8, 25, 8], [1, 1, 3, 3]]},
            {"id": 2, "image_id": 1, "category_id": 7, "iscrowd": 1, "bbox": [2, 20, 11, 5], "area": 35,
             "segmentation": {"size": [h, w], "counts": _uncompressed_rle(crowd)}},
            {"id": 3, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [30, 1, 8, 3], "area": 24,
             "segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")}},
            {"id": 4, "image_id": 5, "category_id": 7, "iscrowd": 0, "area": 12,
             "bbox": [381.8337097167969 / 20, 12.5, 4.25, 3.0], "width": w, "height": h},
            {"id": 5, "image_id": 5, "category_id": 1, "iscrowd": 0, "bbox": [3, 3, 0, 4], "area": 0},
            {"id": 6, "image_id": 9, "category_id": 3, "iscrowd": 0, "bbox": [1, 1, 2, 2], "area": 4},
        ],
    }  # fmt: skip
    (root / "annotations").mkdir()
    (root / "annotations" / "train.json").write_text(json.dumps(coco))
    _png(root / "imgs" / "pos" / "orphan.png", np.zeros((h, w)))
    spec = _coco_spec()
    items = items_of(spec, tmp_path)
    assert list(items) == ["neg/c", "pos/a", "pos/b", "pos/d", "pos/e", "pos/orphan"]
    assert all(items[c].official_split == "train" for c in ("neg/c", "pos/a", "pos/b"))
    (a,) = frames_of(spec, tmp_path, items["pos/a"])
    polygon = np.zeros((h, w), bool)
    polygon[5:11, 10:20] = polygon[5:8, 25:30] = True  # COCO coordinates: pixel i covers [i, i + 1)
    assert _same_sets(_components(a, "nodule"), regions.connected_instances(polygon | compressed))
    assert _same_sets(_components(a, "effusion"), regions.connected_instances(crowd))
    assert a.image_labels == ["nodule", "effusion"]
    found, drops = _regions(a)
    assert sorted((r.label, r.bbox) for r in found) == [
        ("effusion", (2, 20, 6, 25)), ("effusion", (10, 20, 13, 25)),
        ("nodule", (10, 5, 20, 11)), ("nodule", (25, 5, 30, 8)), ("nodule", (30, 1, 38, 4)),
    ]  # fmt: skip
    assert [(d.label, d.reason) for d in drops] == [("nodule", "invalid_box")]  # the 2-point polygon part
    (b,) = frames_of(spec, tmp_path, items["pos/b"])
    assert [(x.label, x.xyxy) for x in b.boxes] == [
        ("effusion", (381.8337097167969 / 20, 12.5, 381.8337097167969 / 20 + 4.25, 15.5)),
        ("nodule", (3.0, 3.0, 3.0, 7.0)),
    ]
    found, drops = _regions(b)
    assert [r.kind for r in found] == ["box"] and [d.reason for d in drops] == ["invalid_box"]
    (c,) = frames_of(spec, tmp_path, items["neg/c"])
    assert not c.masks and not c.boxes and c.image_labels == []
    assert _reason(spec, tmp_path, items["pos/d"]) == "bad_row"  # category 3 is not listed
    assert _reason(spec, tmp_path, items["pos/e"]) == "shape_mismatch"
    assert _reason(spec, tmp_path, items["pos/orphan"]) == "no_table_row"
    (root / "annotations" / "train.json").write_text('{"images": [')
    with pytest.raises(ReadError) as e:
        items_of(spec, tmp_path)
    assert e.value.reason == "unreadable_table"


def test_tbx11k_spec_reads_its_published_layout(tmp_path):
    root = tmp_path / "TBX11K"
    for name in ("tb/tb0005.png", "health/h0001.png", "test/t0001.png"):
        _png(root / "imgs" / name, np.full((512, 512), 90))
    train = {
        "categories": [
            {"id": 1, "name": "ActiveTuberculosis", "supercategory": "Tuberculosis"},
            {"id": 2, "name": "ObsoletePulmonaryTuberculosis", "supercategory": "Tuberculosis"},
            {"id": 3, "name": "PulmonaryTuberculosis", "supercategory": "Tuberculosis"},
        ],
        "images": [
            {"id": 1, "file_name": "tb/tb0005.png", "width": 512, "height": 512, "license": 1, "coco_url": ""},
            {"id": 601, "file_name": "health/h0001.png", "width": 512, "height": 512, "license": 1},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 1793, "width": 512, "height": 512,
             "bbox": [381.8337097167969, 126.8733901977539, 40.236907958984375, 44.565773010253906]},
        ],
    }  # fmt: skip
    (root / "annotations" / "json").mkdir(parents=True)
    (root / "annotations" / "json" / "TBX11K_train.json").write_text(json.dumps(train))
    (root / "annotations" / "json" / "TBX11K_val.json").write_text(
        json.dumps({"categories": train["categories"], "images": [], "annotations": []})
    )
    spec = resolve_spec("tbx11k")
    items = items_of(spec, tmp_path)
    assert list(items) == ["health/h0001", "tb/tb0005"]  # test/ is not read
    (tb,) = frames_of(spec, tmp_path, items["tb/tb0005"])
    (box,) = tb.boxes
    assert box.label == "ActiveTuberculosis" and tb.image_labels == ["ActiveTuberculosis"]
    assert box.xyxy == pytest.approx((381.8337, 126.8734, 422.0706, 171.4392), abs=1e-3)
    (negative,) = frames_of(spec, tmp_path, items["health/h0001"])
    assert not negative.boxes and items["health/h0001"].official_split == "train"


# --- end to end ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_lidc_and_iu_xray_build_end_to_end(tmp_path, ray_session):
    from medpclip.corpus.build import build_corpus
    from medpclip.corpus.inspect import check_corpus
    from medpclip.warehouse import query

    raw, out = tmp_path / "raw", tmp_path / "corpus"
    case = _lidc_case(raw)
    _iu_xray(raw)
    build_corpus(resolve_specs("lidc_idri,iu_xray"), raw, out, max_side=64)
    assert check_corpus(out).problems == []
    samples = dict(query(out, "SELECT dataset, count(*) FROM samples GROUP BY dataset")[1])
    assert samples == {"lidc_idri": 3, "iu_xray": 3}  # LIDC: the 3 slices with a region; IU: 3 images
    kinds = query(
        out,
        "SELECT s.slice_index, r.kind, r.annotator FROM regions r JOIN samples s USING (key) "
        "WHERE r.dataset = 'lidc_idri' ORDER BY ALL",
    )[1]
    k = case["k_of_z"]  # every region names its reader: masks one per reader and slice, the point its own
    assert kinds == sorted([
        (k[-125.0], "mask", "reader1"), (k[-125.0], "mask", "reader2"), (k[-122.5], "mask", "reader1"),
        (k[-127.5], "point", "reader1"),
    ])  # fmt: skip
    reports = query(out, "SELECT report_text FROM samples WHERE dataset = 'iu_xray' ORDER BY key")[1]
    assert reports[0][0].startswith("FINDINGS: The heart is enlarged.") and reports[2][0].startswith(
        "IMPRESSION:"
    )
    rejects = query(out, "SELECT dataset, stage, reason FROM rejects ORDER BY ALL")[1]
    assert rejects == [
        ("iu_xray", "read", "no_report"), ("iu_xray", "read", "unreadable_annotation"),
        ("lidc_idri", "region", "invalid_box"),
    ]  # fmt: skip
    splits = query(out, "SELECT count(DISTINCT split) FROM samples WHERE key LIKE 'iu_xray_cxr1%'")[1]
    assert splits == [(1,)]  # the two images of report CXR1 share a split
    for path in out.rglob(
        "*"
    ):  # the DICOM PatientID never leaves the raw root (the folder name is the case id)
        if path.is_file():
            assert b"PHI-PATIENT-ID" not in path.read_bytes(), path
