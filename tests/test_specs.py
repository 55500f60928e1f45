"""Specs: valid ones load, bad ones are refused with one line naming the file, the field and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from corpus_utils import MINIMAL_SPEC

from medpclip.specs import SpecError, available_specs, load_spec_file, resolve_spec, resolve_specs


def _write(tmp_path: Path, data, name="tiny.yaml") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return p


def test_shipped_specs_all_validate():
    names = available_specs()
    assert {"demo_ct", "demo_polyp", "demo_cxr"} <= set(names)
    for n in names:
        assert resolve_spec(n).name == n


def test_minimal_spec_defaults(tmp_path):
    s = load_spec_file(_write(tmp_path, MINIMAL_SPEC))
    assert s.split.rule == "hash" and s.split.ratios == {"train": 0.8, "val": 0.1, "test": 0.1}
    assert s.regions.min_pixels == 16 and s.regions.min_fraction == 0.0005
    assert s.slicing.planes == ("ax",) and not s.slicing.keep_empty
    assert s.label_by_value()[1].cui == "C0023884"


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"colour": "red"}, "field 'colour': unknown field"),
        ({"access": "public"}, "field 'access'"),
        ({"name": "Bad.Name"}, "field 'name'"),
        ({"root": "../escape"}, "field 'root'"),
        ({"intensity": {"kind": "ct_window", "window": "kidney"}}, "unknown CT window 'kidney'"),
        (
            {"labels": [{"value": 1, "label": "liver", "name": "Liver", "category": "liver", "cui": "C12"}]},
            "is not a UMLS CUI",
        ),
        (
            {
                "labels": [
                    {"value": 1, "label": "a", "name": "A", "category": "a"},
                    {"value": 1, "label": "b", "name": "B", "category": "b"},
                ]
            },
            "label value 1 appears twice",
        ),
        ({"split": {"ratios": {"train": 0.9, "test": 0.2}}}, "sum to 1"),
        ({"patient_id": {"regex": "^(\\d+)$"}}, "named group (?P<pid>"),
        ({"labels": []}, "field 'labels'"),
    ],
)
def test_bad_spec_is_one_clear_line(tmp_path, change, fragment):
    with pytest.raises(SpecError) as e:
        load_spec_file(_write(tmp_path, {**MINIMAL_SPEC, **change}))
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "tiny.yaml") in msg and fragment in msg


def test_python_yaml_tags_are_refused(tmp_path):
    p = _write(tmp_path, "name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec_file(p)


def test_unknown_spec_name_lists_known():
    with pytest.raises(SpecError, match="unknown spec 'nope'.*demo_ct"):
        resolve_spec("nope")


def test_resolve_specs_refuses_duplicates_and_empty():
    with pytest.raises(SpecError, match="given twice"):
        resolve_specs("demo_ct,demo_ct")
    with pytest.raises(SpecError, match="no spec given"):
        resolve_specs(" , ")


def test_patient_rules():
    s = resolve_spec("demo_ct")
    assert s.patient_of("democt_19") == "19"
    cxr = resolve_spec("demo_cxr")
    assert cxr.patient_of("00000003_001", {"Patient ID": "3"}) == "3"
    with pytest.raises(ValueError, match="no field 'Patient ID'"):
        cxr.patient_of("00000003_001", {})


def test_yaml_aliases_are_refused(tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b]\n"
    with pytest.raises(SpecError, match="aliases .* are not allowed") as e:
        load_spec_file(_write(tmp_path, bomb))
    assert "\n" not in str(e.value)


# --- format options are checked when a spec loads (issue 13) ----------------------------------------------


def _shipped_with(tmp_path: Path, name: str, edit) -> Path:
    data = yaml.safe_load((Path(__file__).parent.parent / "dataset_specs" / f"{name}.yaml").read_text())
    edit(data["format"]["options"])
    return _write(tmp_path, data, f"{name}.yaml")


@pytest.mark.parametrize(
    "name, edit, fragment",
    [
        # a misspelt option: once accepted by `specs validate`, then a build-time reject of the whole dataset
        (
            "msd_spleen",
            lambda o: o.update(layuot=o.pop("layout")),
            "field 'format.options.layuot': unknown field",
        ),
        # a malformed regex: once a bare re.error traceback from planning
        (
            "brats2021",
            lambda o: o.update(case_regex="(?P<case>["),
            "field 'format.options.case_regex': Value error, invalid regex",
        ),
        # a wrong type deep inside a family's options (tables: one box table's column list)
        (
            "vindr_cxr",
            lambda o: o["boxes_table"][1].update(box_format="cxcywh"),
            "format.options.boxes_table",
        ),
        # options of another family (dicom's `voi` on a volumes spec)
        ("msd_liver", lambda o: o.update(voi=True), "field 'format.options.voi': unknown field"),
        # a field of another layout of the same family: one model per layout, so it is refused by name
        (
            "msd_liver",
            lambda o: o.update(images="imagesTr/*.nii.gz"),
            "field 'format.options.images': unknown field for layout 'msd'",
        ),
        ("iu_xray", lambda o: o.update(layout="xml"), "field 'format.options.layout': layout must be one of"),
        # globs: refused at load, not when discovery first runs them (pathlib's NotImplementedError)
        ("kvasir_seg", lambda o: o.update(images="/data/Kvasir-SEG/*.jpg"), "is absolute"),
        ("kvasir_seg", lambda o: o.update(images="images/**.jpg"), "'**' must be a whole path component"),
        ("iu_xray", lambda o: o.update(images=["NLMCXR_png/*.png", "../*.png"]), "leaves the dataset folder"),
    ],
)
def test_format_option_errors_are_one_line_at_load(tmp_path, name, edit, fragment):
    path = _shipped_with(tmp_path, name, edit)
    with pytest.raises(SpecError) as e:
        load_spec_file(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and fragment in msg and "\n" not in msg


def test_loaded_options_are_the_family_model_with_its_defaults():
    from medpclip.sources.volumes.options import MsdVolumes

    spec = resolve_spec("msd_spleen")
    assert isinstance(spec.format.options, MsdVolumes)  # the model of its layout
    assert spec.format.options.layout == "msd" and spec.format.options.index == "dataset.json"
    assert spec.format.options.max_pixels == 1 << 30
    with pytest.raises(SpecError, match=r"field 'format.family': Input tag 'pictures' found"):
        from medpclip.specs import parse_spec

        parse_spec({**resolve_spec("msd_spleen").model_dump(mode="json"), "format": {"family": "pictures"}})
