"""Score the report linker on real radiology reports: IU X-ray (OpenI) against NLM's MeSH indexing.

The reports come from the copy torchxrayvision ships (``torchxrayvision/data/NLMCXR_reports.tgz`` inside its
wheel, which ``make setup`` downloads into ``.cache/wheels`` without installing it). Reports are split by
their numeric id: ids up to :data:`DEV_MAX_ID` are the development set, which tests and tuning use; the
reports above it are a hold-out that decides whether the linker generalises, and nothing in this project
reads them unless asked for by name (``split="holdout"``).

The text scored is what the corpus keeps (``reports.reader.openi_sections`` → FINDINGS then IMPRESSION).
The truth is each report's ``MeSH/major`` terms through ``bench/iu_xray_mesh_findings.yaml`` (which
term means which finding, and which KB concepts count as finding it). A report predicts a finding when the
linker finds one of the finding's concepts with ``assertion == "positive"``.
"""

from __future__ import annotations

import io
import re
import tarfile
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from medpclip.sources.reports.reader import keep_sections, openi_sections

ROOT = Path(__file__).resolve().parent.parent
FINDINGS_MAP = ROOT / "bench" / "iu_xray_mesh_findings.yaml"
WHEELS = ROOT / ".cache" / "wheels"
REPORTS_MEMBER = "torchxrayvision/data/NLMCXR_reports.tgz"
DEV_MAX_ID = 2000
NORMAL = "normal"


@dataclass(frozen=True)
class IuReport:
    report_id: int
    text: str | None  # FINDINGS + IMPRESSION as the corpus keeps them; None when the report has neither
    majors: tuple[str, ...]  # MeSH/major terms as written


@dataclass(frozen=True)
class MeshRule:
    head: str
    qualifier: tuple[str, ...] = ()

    def matches(self, term: str) -> bool:
        parts = [p.strip() for p in term.split("/")]
        if parts[0].lower() != self.head.lower():
            return False
        return not self.qualifier or any(p.lower() in self.qualifier for p in parts[1:])


@dataclass(frozen=True)
class Finding:
    name: str
    rules: tuple[MeshRule, ...]
    concepts: frozenset[str] = frozenset()
    category: str | None = None  # every concept of this KB category counts (devices)
    descendants: bool = False  # the concepts' KB descendants count too (rib fracture for fracture)

    def in_mesh(self, majors: tuple[str, ...]) -> bool:
        return any(r.matches(t) for t in majors for r in self.rules)

    def in_mentions(self, mentions, kb=None) -> bool:
        for m in mentions:
            if m.assertion != "positive":
                continue
            if m.concept_id in self.concepts or (self.category and m.category == self.category):
                return True
            if self.descendants and kb is not None and m.concept_id in kb.by_id:
                if any(a.concept_id in self.concepts for a in kb.ancestors(m.concept_id)):
                    return True
        return False


def load_findings(path: Path = FINDINGS_MAP) -> list[Finding]:
    doc = yaml.safe_load(path.read_text())
    out = []
    for f in doc["findings"]:
        rules = tuple(
            MeshRule(r["head"], tuple(q.lower() for q in r.get("qualifier", ()))) for r in f["mesh"]
        )
        out.append(
            Finding(
                f["name"],
                rules,
                frozenset(f.get("concepts", ())),
                f.get("category"),
                bool(f.get("descendants", False)),
            )
        )
    return out


def reports_wheel(wheels: Path = WHEELS) -> Path:
    found = sorted(wheels.glob("torchxrayvision-*.whl"))
    if not found:
        raise FileNotFoundError(
            f"no torchxrayvision wheel in {wheels}: run `make setup` (it downloads the wheel, never installs it)"
        )
    return found[-1]


def iu_reports(split: str = "dev", wheel: Path | None = None) -> Iterator[IuReport]:
    """The IU X-ray reports of one split, in id order: ``dev`` (id ≤ 2000) or ``holdout`` (id > 2000).

    The split is decided from the member's file name before its bytes are read, so a development run
    never parses a hold-out report.
    """
    if split not in ("dev", "holdout"):
        raise ValueError(f"split must be 'dev' or 'holdout' (got {split!r})")
    with zipfile.ZipFile(wheel or reports_wheel()) as z:
        tgz = z.read(REPORTS_MEMBER)
    chosen: list[tuple[int, bytes]] = []
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        for member in tar:
            m = re.fullmatch(r"ecgen-radiology/(\d+)\.xml", member.name)
            if m is None:
                continue
            rid = int(m.group(1))
            if (rid <= DEV_MAX_ID) != (split == "dev"):
                continue
            chosen.append((rid, tar.extractfile(member).read()))
    for rid, data in sorted(chosen):
        xml = ET.fromstring(data)
        text = keep_sections(openi_sections(xml), ["FINDINGS", "IMPRESSION"])
        majors = tuple((t.text or "").strip() for t in xml.iter("major") if (t.text or "").strip())
        yield IuReport(rid, text, majors)


@dataclass
class Tally:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    fp_ids: list[int] = field(default_factory=list)
    fn_ids: list[int] = field(default_factory=list)

    @property
    def support(self) -> int:
        return self.tp + self.fn

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")


@dataclass
class Score:
    per_finding: dict[str, Tally]
    micro: Tally
    normal_reports: int
    normal_clean: int  # normal reports with no positive finding at all
    normal_offenders: list[tuple[int, str]]  # (report id, the positive mention)
    reports: int

    @property
    def normal_rate(self) -> float:
        return self.normal_clean / self.normal_reports if self.normal_reports else float("nan")


def is_normal(majors: tuple[str, ...]) -> bool:
    return bool(majors) and all(t.split("/")[0].strip().lower() == NORMAL for t in majors)


FINDING_CATEGORIES = ("finding", "lesion", "injury", "device")


def score(reports: list[IuReport], linked: list, findings: list[Finding], kb=None) -> Score:
    """Per-finding and micro-averaged counts of positive findings against the MeSH truth.

    Reports without text and reports indexed 'No Indexing' are left out (nothing to find, or no truth).
    """
    per = {f.name: Tally() for f in findings}
    micro = Tally()
    normals = clean = 0
    offenders: list[tuple[int, str]] = []
    n = 0
    for rep, lt in zip(reports, linked, strict=True):
        if rep.text is None or any(t.lower().startswith("no indexing") for t in rep.majors):
            continue
        n += 1
        for f in findings:
            truth, pred = f.in_mesh(rep.majors), f.in_mentions(lt.mentions, kb)
            t = per[f.name]
            if truth and pred:
                t.tp += 1
                micro.tp += 1
            elif pred:
                t.fp += 1
                micro.fp += 1
                t.fp_ids.append(rep.report_id)
            elif truth:
                t.fn += 1
                micro.fn += 1
                t.fn_ids.append(rep.report_id)
        if is_normal(rep.majors):
            normals += 1
            positive = [
                m for m in lt.mentions if m.assertion == "positive" and m.category in FINDING_CATEGORIES
            ]
            if positive:
                offenders.append((rep.report_id, positive[0].text))
            else:
                clean += 1
    return Score(per, micro, normals, clean, offenders, n)


def markdown_table(s: Score, findings: list[Finding]) -> str:
    lines = [
        "| finding | MeSH major terms | reports | precision | recall |",
        "|---|---|---:|---:|---:|",
    ]
    for f in sorted(findings, key=lambda f: -s.per_finding[f.name].support):
        t = s.per_finding[f.name]
        mesh = "; ".join(r.head + (f"/{'|'.join(r.qualifier)}" if r.qualifier else "") for r in f.rules)
        lines.append(f"| {f.name} | {mesh} | {t.support} | {_fmt(t.precision)} | {_fmt(t.recall)} |")
    m = s.micro
    lines.append(f"| **all (micro)** | | {m.support} | **{_fmt(m.precision)}** | **{_fmt(m.recall)}** |")
    return "\n".join(lines)


def _fmt(x: float) -> str:
    return "—" if x != x else f"{x:.3f}"
