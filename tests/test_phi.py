"""PHI (issue 7): DICOM files carrying fake PHI in every PS3.15 Annex E basic-profile attribute a reader could
touch are built with the `dicom` family through `medpclip build`; then EVERY output byte is scanned for every
value: shard members decoded (JSON, caption, PNG chunks), Parquet manifests as tables and as raw bytes,
markers, build.json, the overrides file, the report page and sheets, and the build's log output. None may
appear. Patient and study ids are salted hashes: another salt changes every id and nothing else."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ComputedRadiographyImageStorage, CTImageStorage, ExplicitVRLittleEndian

from medpclip.corpus.build import build_corpus
from medpclip.corpus.encoding import image_member
from medpclip.corpus.shards import iter_samples
from medpclip.specs import load_spec_file
from medpclip.warehouse import query

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent

# Fake PHI: one distinctive value per attribute (made-up words, so a hit is a leak, not a coincidence).
PHI: dict[str, str] = {
    "PatientName": "Zorblatt^Quixandra^Ysolde",
    "PatientID": "PHI-PID-583920",
    "PatientBirthDate": "19230517",
    "PatientBirthTime": "061533",
    "OtherPatientIDs": "PHI-OTHERID-77123",
    "OtherPatientNames": "Vexmoor^Prudencia",
    "PatientBirthName": "Gallowmere^Ermintrude",
    "PatientMotherBirthName": "Thistlewick^Philippa",
    "PatientAddress": "742 Quillbrook Terrace Umberfield",
    "PatientTelephoneNumbers": "555-0199-4471",
    "PatientAge": "097Y",
    "PatientSize": "1.8765",
    "PatientWeight": "88.4321",
    "MilitaryRank": "Brigadier Zorvane",
    "BranchOfService": "Quellmarine Corps",
    "MedicalRecordLocator": "MRL-PHI-3301",
    "Occupation": "Lamplighterx",
    "EthnicGroup": "Ethnozorb",
    "AdditionalPatientHistory": "History: fell off the Umberfield lighthouse",
    "PatientComments": "Comment: allergic to zorbicillin",
    "IssuerOfPatientID": "PHI-ISSUER-ACMEZ",
    "InstitutionName": "St Grimsworth Infirmary",
    "InstitutionAddress": "1 Infirmary Plaza Grimsworth",
    "InstitutionalDepartmentName": "Grimsworth Radiology",
    "ReferringPhysicianName": "Kildrake^Jamesworth",
    "ReferringPhysicianAddress": "99 Kildrake Lane",
    "ReferringPhysicianTelephoneNumbers": "555-0123-9876",
    "PerformingPhysicianName": "Welbrook^Marcellus",
    "OperatorsName": "Hawkmoor^Piercival",
    "PhysiciansOfRecord": "Quennell^Michaelina",
    "NameOfPhysiciansReadingStudy": "Housemere^Gregorian",
    "RequestingPhysician": "Cranleigh^Frasimund",
    "StudyDate": "20210319",
    "SeriesDate": "20210320",
    "AcquisitionDate": "20210321",
    "ContentDate": "20210322",
    "InstanceCreationDate": "20210323",
    "StudyTime": "101530.123456",
    "SeriesTime": "101631.234567",
    "AcquisitionTime": "101732.345678",
    "ContentTime": "101833.456789",
    "InstanceCreationTime": "101934.567890",
    "AcquisitionDateTime": "20210324101732.345678",
    "AccessionNumber": "ACC-PHI-99812",
    "StudyID": "STUDYPHI5521",
    "StationName": "PHISTATION-CT3",
    "DeviceSerialNumber": "SN-PHI-0042-7781",
    "StudyDescription": "Abdomen for Mr Zorblatt",
    "SeriesDescription": "Axial 5mm Zorblatt",
    "ProtocolName": "Protocol Zorblattine",
    "PerformedProcedureStepID": "PPS-PHI-1188",
    "PerformedProcedureStepDescription": "Step Zorblattish",
    "RequestedProcedureDescription": "Requested Zorblattic",
    "ImageComments": "Image comment Zorblattoid",
    "ResponsiblePerson": "Ownerby^Rexford",
    "ResponsibleOrganization": "Zorb Kennel Club",
    "CountryOfResidence": "Phiistan",
    "RegionOfResidence": "Upper Phiregion",
    "AdmissionID": "ADM-PHI-4410",
    "RequestedProcedureID": "RPID-PHI-3",
    "FillerOrderNumberImagingServiceRequest": "FILLER-PHI-77",
    "PlacerOrderNumberImagingServiceRequest": "PLACER-PHI-88",
    "DetectorID": "DET-PHI-5",
    "GantryID": "GANTRY-PHI-9",
    "DerivationDescription": "Derived by Zorblattery",
    "SpecialNeeds": "Needs Zorblattness",
    "PatientState": "State Zorblattia",
    "AdmittingDiagnosesDescription": "Admitted for zorbosis",
}
ROOT = "1.2.826.0.1.3680043.8.498.71001"
STUDY, FOR, CREATOR = f"{ROOT}.1", f"{ROOT}.9", f"{ROOT}.8"
SERIES = {"folder": f"{ROOT}.2", "root": f"{ROOT}.3", "cr": f"{ROOT}.4"}
CR_SOP = f"{ROOT}.4.1"  # the CR file is named by its SOP Instance UID (SIIM style)


def _write(path: Path, series: str, sop: str, pixels: np.ndarray, *, z: float, cr: bool = False) -> None:
    meta = FileMetaDataset()
    sop_class = ComputedRadiographyImageStorage if cr else CTImageStorage
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceCreatorUID = STUDY, series, CREATOR
    for keyword, value in PHI.items():
        setattr(ds, keyword, value)
    ds.Modality = "CR" if cr else "CT"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    if cr:
        ds.WindowCenter, ds.WindowWidth = 500, 1000
    else:
        ds.FrameOfReferenceUID = FOR
        ds.ImagePositionPatient = [-10.0, -20.0, z]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 2.0
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = pixels.astype("<i2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _raw(root: Path) -> Path:
    folder = root / "PHI"
    rng = np.random.default_rng(3)
    for k in range(3):  # a CT series in a folder of its own
        _write(folder / "study1" / "ct" / f"IM{k:04d}.dcm", SERIES["folder"], f"{SERIES['folder']}.{k}",
               rng.integers(900, 1300, (24, 24)), z=2.0 * k)  # fmt: skip
    for k in range(2):  # a CT series directly in the dataset folder: its case id is its Series UID
        _write(folder / f"r{k}.dcm", SERIES["root"], f"{SERIES['root']}.{k}",
               rng.integers(900, 1300, (20, 20)), z=2.0 * k)  # fmt: skip
    _write(folder / f"{CR_SOP}.dcm", SERIES["cr"], CR_SOP, rng.integers(0, 1000, (32, 32)), z=0, cr=True)
    (folder / "empty.dcm").write_bytes(b"")
    return root


SPEC = """name: phi_dicom
root: PHI
title: DICOM with fake PHI in every basic-profile attribute
citation: written by tests/test_phi.py
licence: CC0-1.0
access: open
homepage: https://example.org
modality: CT
body_part: abdomen
format: {family: dicom, options: {}}
labels:
  - {label: liver, name: Liver, category: liver}
intensity: {kind: ct_window, window: soft_tissue}
slicing: {planes: [ax], keep_empty: true}
patient_id: {field: PatientID}
"""


def _terms() -> list[str]:
    """Every PHI value in every form a leak could take: as written, lower-case, as a key slug, its parts
    (names), dates and times in ISO form; the UIDs as written and slugged."""
    out: set[str] = set()
    for value in [
        *PHI.values(),
        STUDY,
        FOR,
        CREATOR,
        *SERIES.values(),
        CR_SOP,
        *(f"{ROOT}.2.{k}" for k in range(3)),
    ]:
        forms = {value, value.lower(), re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")}
        if "^" in value:  # a person name: each of its parts on its own
            forms |= {p for p in value.split("^") if len(p) >= 5}
        if re.fullmatch(r"\d{8}", value):
            forms.add(f"{value[:4]}-{value[4:6]}-{value[6:]}")
        if re.fullmatch(r"\d{6}\.\d+", value):
            forms.add(f"{value[:2]}:{value[2:4]}:{value[4:6]}")
        out |= {f for f in forms if len(f) >= 4}
    return sorted(out)


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunks.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


def _png_text(data: bytes) -> str:
    """The text a PNG carries outside its pixels (tEXt, zTXt, iTXt chunks), plus the chunk names."""
    parts = []
    for kind, body in _png_chunks(data):
        parts.append(kind.decode("latin-1"))
        if kind == b"tEXt":
            parts.append(body.decode("latin-1"))
        elif kind == b"zTXt":
            parts.append(zlib.decompress(body.split(b"\0", 1)[1][1:]).decode("latin-1"))
        elif kind == b"iTXt":
            parts.append(body.decode("utf-8", "replace"))
    return " ".join(parts)


def _texts(out: Path) -> dict[str, str]:
    """Every output file as text: decoded where it is a container (tar, Parquet, PNG), raw otherwise."""
    texts: dict[str, str] = {}
    for p in sorted(out.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(out).as_posix()
        raw = p.read_bytes()
        texts[rel + " (bytes)"] = raw.decode("latin-1")
        if p.suffix == ".tar":
            for key, members in iter_samples(p):
                texts[f"{rel}:{key}"] = key + " ".join(
                    _png_text(v) if ext == "png" else v.decode("utf-8") for ext, v in members.items()
                )
                ext, image = image_member(members)
                assert ext == "png"  # DICOM radiographs: grey, lossless
                kinds = {k for k, _ in _png_chunks(image)}
                assert kinds <= {b"IHDR", b"IDAT", b"IEND"}, kinds  # no text chunks at all
        elif p.suffix == ".parquet":
            texts[rel] = json.dumps(pq.read_table(p).to_pylist(), default=str, ensure_ascii=False)
        elif p.suffix == ".png":
            texts[rel] = _png_text(raw)
        elif p.suffix in (".json", ".html", ".sql", ".txt"):
            texts[rel] = raw.decode("utf-8")
    return texts


def _leaks(texts: dict[str, str]) -> list[tuple[str, str]]:
    terms = _terms()
    return [(where, t) for where, text in texts.items() for t in terms if t.lower() in text.lower()]


def _samples(out: Path) -> dict[str, tuple[dict, bytes]]:
    found = {}
    for shard in sorted((out / "shards").rglob("*.tar")):
        for key, members in iter_samples(shard):
            found[key] = (json.loads(members["json"]), image_member(members)[1])
    return found


@pytest.fixture(scope="module")
def phi_build(tmp_path_factory):
    base = tmp_path_factory.mktemp("phi")
    raw, out = _raw(base / "raw"), base / "corpus"
    spec = base / "phi_dicom.yaml"
    spec.write_text(SPEC)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "MEDPCLIP_"))}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", MEDPCLIP_ID_SALT="salt-one")
    cmd = [str(BIN / "medpclip"), "build", "--spec", str(spec), "--raw-root", str(raw), "--out", str(out),
           "--max-side", "64", "--num-cpus", "1"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return raw, out, spec, proc.stdout + proc.stderr


def test_no_phi_value_reaches_any_output_byte_or_the_log(phi_build):
    _, out, _, log = phi_build
    samples = _samples(out)
    assert len(samples) == 6  # 3 + 2 CT slices and the CR image; the empty file is rejected
    rejects = query(out, "SELECT reason, path FROM rejects")[1]
    assert rejects == [("empty_file", "PHI/empty.dcm")]
    texts = _texts(out)
    texts["build log"] = log
    assert any(k.endswith(".tar (bytes)") for k in texts) and any(k.endswith(".parquet") for k in texts)
    assert any(k.startswith("report/") for k in texts) and "manifests/split_overrides.json" in texts
    assert _leaks(texts) == []
    # the keys of the UID-named cases carry a pseudonym, not the UID
    assert sum("_uid-" in k for k in samples) == 3
    paths = {f["path"] for rec, _ in samples.values() for f in rec["source"]["files"]}
    assert "PHI/study1/ct/IM0000.dcm" in paths and any(p.startswith("PHI/uid-") for p in paths)


def test_a_sanity_check_of_the_scanner_itself(phi_build):
    raw, _, _, _ = phi_build
    leaky = {"x.dcm (bytes)": (raw / "PHI" / "study1" / "ct" / "IM0000.dcm").read_bytes().decode("latin-1")}
    found = {t for _, t in _leaks(leaky)}
    assert {PHI["PatientName"], PHI["StudyDate"], STUDY, PHI["InstitutionName"]} <= found


def test_another_salt_changes_every_id_and_nothing_else(phi_build, ray_session, tmp_path):
    raw, out, spec, _ = phi_build
    other = tmp_path / "salt-two"
    build_corpus([load_spec_file(spec)], raw, other, max_side=64, id_salt="salt-two")
    a, b = _samples(out), _samples(other)
    assert sorted(a) == sorted(b)
    ids_a = {rec[f] for rec, _ in a.values() for f in ("patient_id", "study_id")}
    ids_b = {rec[f] for rec, _ in b.values() for f in ("patient_id", "study_id")}
    assert ids_a and not ids_a & ids_b and None not in ids_a
    for key, (rec, png) in a.items():
        rec_b, png_b = b[key]
        assert png == png_b
        assert rec["patient_id"] != rec_b["patient_id"] and rec["study_id"] != rec_b["study_id"]
        strip = {"patient_id", "study_id"}
        assert {k: v for k, v in rec.items() if k not in strip} == {
            k: v for k, v in rec_b.items() if k not in strip
        }
    # the salt itself is never written, only a fingerprint of it
    assert "salt-one" not in (out / "build.json").read_text() and "salt-two" not in json.dumps(_texts(other))
