"""The raster family's ``case_id``, ``table`` and ``split_lists`` options (issue 15), on a generic two-folder
fixture: the checks they get when a spec loads (one-line errors), and what discovery makes of them (case ids
that name the folder, fields, labels and splits from a table, splits from list files, rows and lines that do
not fit). The specs that use them (tn3k, ham10000, kvasir_instrument) are tested with their own layouts in
test_more_2d_datasets.py and test_more_raster_datasets.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from corpus_utils import frames_of, items_of
from layouts import save_image

from medpclip.frame import ReadError
from medpclip.sources import raster
from medpclip.specs import DatasetSpec, SpecError, parse_spec, resolve_spec

H, W = 16, 20
MASK = np.zeros((H, W), np.uint8)
MASK[4:12, 5:15] = 255


def _spec(**options) -> DatasetSpec:
    """A two-label spec over `Set/{a,b}-image/NNNN.png` with masks in `{a,b}-mask/`."""
    data = resolve_spec("kvasir_seg").model_dump(mode="json")
    data.update(name="twofolders", root="Set", labels=[
        {"label": "cyst", "name": "Cyst", "category": "cyst", "aliases": ["c"]},
        {"label": "nodule", "name": "Nodule", "category": "nodule", "aliases": ["n"]},
    ])  # fmt: skip
    data["format"]["options"] = {
        "images": ["a-image/*.png", "b-image/*.png"],
        "name_regex": "^(?P<set>a|b)-image/",
        "masks": [{"pattern": "{set}-mask/{stem}.png", "required": True}],
        "label": "nodule",
        **options,
    }
    data["stats"] = None
    return parse_spec(data)


@pytest.fixture
def raw(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    for part in ("a", "b"):
        for stem in ("0000", "0001"):
            save_image(
                tmp_path / "Set" / f"{part}-image" / f"{stem}.png", rng.integers(0, 255, (H, W), np.uint8)
            )
            save_image(tmp_path / "Set" / f"{part}-mask" / f"{stem}.png", MASK)
    return tmp_path


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"case_id": "{set}-{stm}"}, "case_id '{set}-{stm}' uses unknown fields ['stm']"),
        ({"case_id": "{dir}"}, "needs {stem} or a name_regex group"),
        ({"case_id": "{set}-*{stem}"}, "not a glob"),
        ({"table": {"path": "t.csv"}}, "id_column"),
        ({"table": {"path": "t.csv", "id_column": "id", "label_column": "id"}}, "must be different"),
        (
            {
                "table": {"path": "t.csv", "id_column": "id", "label_column": "dx"},
                "mask_mode": "values",
                "values": {255: 1},
            },
            "label_column applies to mask_mode threshold or instances",
        ),  # fmt: skip
        ({"table": {"path": "t.csv", "id_column": "id", "delimiter": ";;"}}, "delimiter"),
        ({"split_lists": {"holdout": "x.txt"}}, "split_lists"),
        ({"split_lists": {"train": "x.txt", "test": "x.txt"}}, "its own list file"),
    ],
)
def test_bad_options_fail_when_the_spec_loads(change, fragment):
    data = _spec().model_dump(mode="json")
    data["format"]["options"].update(change)
    with pytest.raises(SpecError, match=r"^<spec>: field 'format\.options") as e:
        parse_spec(data)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_without_case_id_two_folders_numbering_alike_collide(raw):
    assert sorted(i.case_id for i in raster.discover(_spec(), raw / "Set")) == [
        "0000",
        "0000",
        "0001",
        "0001",
    ]


def test_case_id_names_the_folder_and_masks_stay_in_their_own_set(raw):
    spec = _spec(case_id="{set}-{stem}")
    items = items_of(spec, raw)
    assert sorted(items) == ["a-0000", "a-0001", "b-0000", "b-0001"]
    item = items["b-0001"]
    assert [f.path for f in item.files] == ["Set/b-image/0001.png", "Set/b-mask/0001.png"]
    assert item.patient_id == "b-0001"
    (frame,) = frames_of(spec, raw, item)
    assert [label for label, _ in frame.masks] == ["nodule"]


def test_case_id_may_use_dir(raw):
    items = items_of(_spec(case_id="{dir}/{stem}"), raw)
    assert sorted(items) == ["a-image/0000", "a-image/0001", "b-image/0000", "b-image/0001"]


def test_table_gives_labels_patients_and_splits(raw):
    (raw / "Set" / "meta.csv").write_text(
        "\ufeffcase;group;dx;part\n"  # BOM, semicolons
        "a-0000;P1;c;training\n"
        "a-0001;P1;n;validation\n"
        "b-0000;P2;C;TEST\n"  # labels match aliases case-insensitively
        "b-0001;P3;nodule;\n"  # no split: falls through to `splits`
        "b-0001;P9;cyst;test\n"  # a second row of an id: the first wins
        "b-0009;P4;c;test\n"  # no image: a rejected case
    )
    table = {"path": "meta.csv", "delimiter": ";", "id_column": "case", "split_column": "part",
             "label_column": "dx"}  # fmt: skip
    data = _spec(case_id="{set}-{stem}", table=table, splits={"b-image/*": "train"}).model_dump(mode="json")
    data["format"]["options"].pop("label")
    data["patient_id"] = {"field": "group"}
    spec = parse_spec(data)
    items = items_of(spec, raw)
    assert sorted(items) == ["a-0000", "a-0001", "b-0000", "b-0001", "b-0009"]
    got = {c: (i.patient_id, i.official_split, dict(i.meta).get("mask_labels")) for c, i in items.items()}
    assert got["a-0000"] == ("P1", "train", ("cyst",))
    assert got["a-0001"] == ("P1", "val", ("nodule",))
    assert got["b-0000"] == ("P2", "test", ("cyst",))
    assert got["b-0001"] == ("P3", "train", ("nodule",))
    (frame,) = frames_of(spec, raw, items["a-0000"])
    assert [label for label, _ in frame.masks] == ["cyst"]
    with pytest.raises(ReadError) as e:
        frames_of(spec, raw, items["b-0009"])
    assert e.value.reason == "missing_file" and "meta.csv" in e.value.detail
    assert [f.role for f in items["b-0009"].files] == ["table"]


@pytest.mark.parametrize(
    "text, reason, fragment",
    [
        ("case,dx,part\na-0000,c,holdout\n", "bad_row", "is not train/val/test"),
        ("case,dx,part\na-0000,,train\n", "bad_row", "empty dx"),
        ("case,dx,part\na-0000,fracture,train\n", "bad_label_value", "'fracture' is not in spec"),
        ("case,dx,part\na-0001,c,train\n", "bad_row", "no row for image 'a-0000'"),
    ],
)
def test_table_rows_that_do_not_fit_reject_the_image(raw, text, reason, fragment):
    (raw / "Set" / "meta.csv").write_text(text)
    table = {"path": "meta.csv", "id_column": "case", "split_column": "part", "label_column": "dx"}
    spec = _spec(case_id="{set}-{stem}", table=table)
    with pytest.raises(ReadError) as e:
        frames_of(spec, raw, items_of(spec, raw)["a-0000"])
    assert e.value.reason == reason and fragment in e.value.detail, e.value.detail


@pytest.mark.parametrize(
    "text, reason, fragment",
    [(None, "missing_file", "meta.csv"), ("id,dx\n", "unreadable_table", "no column 'case'")],
)
def test_a_missing_table_or_column_fails_discovery(raw, text, reason, fragment):
    if text is not None:
        (raw / "Set" / "meta.csv").write_text(text)
    spec = _spec(table={"path": "meta.csv", "id_column": "case"})
    with pytest.raises(ReadError) as e:
        list(raster.discover(spec, raw / "Set"))
    assert e.value.reason == reason and fragment in e.value.detail


def test_table_label_column_needs_no_option_label_but_others_do(raw):
    data = _spec().model_dump(mode="json")
    data["format"]["options"].pop("label")
    with pytest.raises(ReadError) as e:  # two labels, none named: refused once, at discovery
        list(raster.discover(parse_spec(data), raw / "Set"))
    assert e.value.reason == "bad_option" and "needs a label" in e.value.detail


def test_split_lists(raw):
    (raw / "Set" / "train.txt").write_text("a-0000\n  a-0001  \n\nb-0000\n")
    (raw / "Set" / "test.txt").write_text("\ufeffb-0001\r\nb-0000\r\nb-0007\r\n")  # BOM, CRLF
    spec = _spec(case_id="{set}-{stem}", split_lists={"train": "train.txt", "test": "test.txt"})
    items = items_of(spec, raw)
    assert {c: i.official_split for c, i in items.items()} == {
        "a-0000": "train",
        "a-0001": "train",
        "b-0000": None,  # in both lists: rejected
        "b-0001": "test",
        "b-0007": None,  # listed, not on disk: rejected
    }
    for case, reason in (("b-0000", "bad_row"), ("b-0007", "missing_file")):
        with pytest.raises(ReadError) as e:
            frames_of(spec, raw, items[case])
        assert e.value.reason == reason and ".txt" in e.value.detail


def test_a_missing_split_list_fails_discovery(raw):
    spec = _spec(case_id="{set}-{stem}", split_lists={"train": "train.txt"})
    with pytest.raises(ReadError) as e:
        list(raster.discover(spec, raw / "Set"))
    assert e.value.reason == "missing_file" and "train.txt" in e.value.detail
