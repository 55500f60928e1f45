"""Region invariants (DESIGN §4) checked against independent pixel computations on seeded synthetic masks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from scipy import ndimage

from medpclip.frame import Box, Point
from medpclip.regions import (
    Drop,
    Region,
    connected_instances,
    decode_rle,
    encode_rle,
    extract_regions,
    min_area,
    sample_points,
    tight_box,
)

EIGHT = np.ones((3, 3), dtype=bool)


def rng_factory(seed: int = 0, calls: list[str] | None = None):
    def rng_for(region_id: str) -> np.random.Generator:
        if calls is not None:
            calls.append(region_id)
        return np.random.default_rng([seed, *region_id.encode()])

    return rng_for


def disc(shape, cy, cx, r) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def blob_mask(seed: int, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Irregular blobs: thresholded smoothed noise, with holes, several components, some at the border."""
    rng = np.random.default_rng(seed)
    h, w = shape or tuple(int(v) for v in rng.integers(8, 97, size=2))
    noise = ndimage.gaussian_filter(rng.standard_normal((h, w)), sigma=float(rng.uniform(1.0, 4.0)))
    return noise > np.quantile(noise, rng.uniform(0.5, 0.95))


def numpy_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def uncompressed_counts(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE, from numpy: run lengths of the column-major flattening, starting with zeros."""
    flat = mask.ravel(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    return [0, *counts] if flat[0] else counts


def border_edt(mask: np.ndarray) -> np.ndarray:
    """Distance to the nearest background pixel on the FULL image, outside the image counting as background."""
    return ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]


def check_mask_region(region: Region, shape, n_pos=3, n_neg=2) -> np.ndarray:
    h, w = shape
    assert region.kind == "mask"
    m = decode_rle(region.mask_rle)
    assert m.dtype == bool and m.shape == (h, w)
    assert region.mask_rle["size"] == [h, w] and isinstance(region.mask_rle["counts"], str)
    assert region.area_px == int(m.sum()) > 0
    assert region.bbox == numpy_box(m)
    assert ndimage.label(m, structure=EIGHT)[1] == 1  # one instance = one 8-connected component

    pts, pls = region.points, region.point_labels
    assert len(pts) == len(pls)
    pos = [p for p, lab in zip(pts, pls, strict=True) if lab == 1]
    neg = [p for p, lab in zip(pts, pls, strict=True) if lab == 0]
    assert list(pls) == [1] * len(pos) + [0] * len(neg)  # positives first
    assert len(set(pts)) == len(pts)
    dist = border_edt(m)
    first_y, first_x = np.unravel_index(np.argmax(dist), dist.shape)  # argmax = first maximum, row-major
    assert pos[0] == (first_x, first_y)
    median = np.median(dist[m])
    for x, y in pos:
        assert m[y, x]
    for x, y in pos[1:]:
        assert dist[y, x] >= median
    central = int((dist >= median).sum())
    assert len(pos) == min(n_pos, central)

    x0, y0, x1, y1 = region.bbox
    my, mx = int(np.ceil(0.25 * (y1 - y0))), int(np.ceil(0.25 * (x1 - x0)))
    grown = np.zeros((h, w), dtype=bool)
    grown[max(y0 - my, 0) : y1 + my, max(x0 - mx, 0) : x1 + mx] = True
    for x, y in neg:
        assert 0 <= x < w and 0 <= y < h
        assert not m[y, x] and grown[y, x]
    assert len(neg) == min(n_neg, int((grown & ~m).sum()))
    return m


# --- invariants on random blobs -----------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", range(4))
def test_invariants_on_random_blob_masks(chunk):
    for seed in range(chunk * 50, chunk * 50 + 50):
        mask = blob_mask(seed)
        shape = mask.shape
        regions, drops = extract_regions(
            shape, masks=[("blob", mask)], min_area_px=1, rng_for=rng_factory(seed)
        )
        assert drops == []
        _, n = ndimage.label(mask, structure=EIGHT)
        assert len(regions) == n
        assert [r.instance for r in regions] == list(range(n))
        union = np.zeros(shape, dtype=bool)
        for r in regions:
            m = check_mask_region(r, shape)
            assert not (union & m).any()  # instances are disjoint
            union |= m
        assert np.array_equal(union, mask)  # and cover the mask
        tops = [(r.bbox[1], r.bbox[0]) for r in regions]
        assert tops == sorted(tops)  # ordered by (top row, left column)


def test_label_map_blobs_per_label_invariants():
    for seed in range(20):
        lm = np.zeros((64, 80), dtype=np.uint16)
        for v in (3, 1, 12):  # later values overwrite earlier ones, so labels touch and split each other
            lm[blob_mask(1000 + seed * 3 + v, shape=lm.shape)] = v
        names = {1: "liver", 3: "kidney", 12: "spleen"}
        regions, drops = extract_regions(
            lm.shape, label_map=lm, label_values=names, min_area_px=1, rng_for=rng_factory(seed)
        )
        assert drops == []
        present = [names[v] for v in sorted(names) if (lm == v).any()]
        assert list(dict.fromkeys(r.label for r in regions)) == present  # label order = value order
        for v, name in names.items():
            got = [r for r in regions if r.label == name]
            assert len(got) == ndimage.label(lm == v, structure=EIGHT)[1]
            union = np.zeros(lm.shape, dtype=bool)
            for r in got:
                union |= check_mask_region(r, lm.shape)
            assert np.array_equal(union, lm == v)


# --- instances ----------------------------------------------------------------------------------------------


def separated_discs(rng, shape, k, r_range=(3, 9)):
    """k discs whose gaps are at least 2 px, so 8-connectivity cannot join them."""
    placed: list[tuple[int, int, int]] = []
    while len(placed) < k:
        r = int(rng.integers(*r_range))
        cy, cx = (int(v) for v in rng.integers(r, np.array(shape) - r))
        if all((cy - y) ** 2 + (cx - x) ** 2 > (r + q + 3) ** 2 for y, x, q in placed):
            placed.append((cy, cx, r))
    return placed


def test_instance_count_equals_discs_drawn():
    rng = np.random.default_rng(11)
    shape = (128, 160)
    for k in (1, 2, 5, 9):
        discs = separated_discs(rng, shape, k)
        lm = np.zeros(shape, dtype=np.uint8)
        for cy, cx, r in discs:
            lm[disc(shape, cy, cx, r)] = 4
        regions, drops = extract_regions(
            shape, label_map=lm, label_values={4: "lesion"}, min_area_px=1, rng_for=rng_factory()
        )
        assert drops == [] and len(regions) == k
        expected = sorted(((cy - r, cx - r) for cy, cx, r in discs))  # top row, left column of each disc
        assert [(r.bbox[1], r.bbox[0]) for r in regions] == expected
        for reg, (cy, cx, r) in zip(
            regions, sorted(discs, key=lambda d: (d[0] - d[2], d[1] - d[2])), strict=True
        ):
            assert np.array_equal(decode_rle(reg.mask_rle), disc(shape, cy, cx, r))
            assert reg.bbox == (cx - r, cy - r, cx + r + 1, cy + r + 1)
            assert reg.points[0] == (cx, cy)  # a disc's most interior pixel is its centre


def test_connected_instances_uses_eight_connectivity_and_order():
    m = np.zeros((6, 6), dtype=bool)
    m[0, 4] = m[1, 5] = True  # diagonal neighbours: one instance
    m[2, 0] = m[3, 1] = True  # starts on a lower row but further left: second
    m[4:6, 3:5] = True
    parts = connected_instances(m)
    assert [int(p.sum()) for p in parts] == [2, 2, 4]
    assert [tight_box(p) for p in parts] == [(4, 0, 6, 2), (0, 2, 2, 4), (3, 4, 5, 6)]
    assert connected_instances(np.zeros((3, 3), dtype=bool)) == []


def test_instance_order_uses_the_box_left_column_not_the_first_pixel():
    m = np.zeros((10, 12), dtype=bool)
    m[2, 4:6] = True  # B: first pixel (row 2, col 4) in raster order
    m[2, 8] = True  # A: first pixel (row 2, col 8), but it reaches column 1 lower down
    m[3, 7:9] = True
    m[4:7, 1:9] = True
    parts = connected_instances(m)
    assert [tight_box(p) for p in parts] == [(1, 2, 9, 7), (4, 2, 6, 3)]


# --- area filter --------------------------------------------------------------------------------------------


def test_min_area():
    assert min_area(512, 512, 0.0005, 16) == 132  # ceil(131.072)
    assert min_area(64, 64, 0.0005, 16) == 16
    assert min_area(100, 100, 0.01, 0) == 100


def test_below_min_area_dropped_with_reason_and_numbering_kept():
    shape = (64, 64)
    lm = np.zeros(shape, dtype=np.uint8)
    lm[2:5, 30:33] = 1  # 9 px, topmost: component 0
    lm[disc(shape, 40, 30, 8)] = 1
    regions, drops = extract_regions(
        shape, label_map=lm, label_values={1: "cyst"}, min_area_px=16, rng_for=rng_factory()
    )
    assert drops == [Drop("cyst", "below_min_area", "9 px < 16 px")]
    assert len(regions) == 1
    assert regions[0].instance == 1  # the dropped component keeps its number
    assert regions[0].area_px == int(disc(shape, 40, 30, 8).sum())


def test_min_area_is_inclusive():
    m = np.zeros((20, 20), dtype=bool)
    m[5:9, 5:9] = True
    regions, drops = extract_regions(m.shape, masks=[("x", m)], min_area_px=16, rng_for=rng_factory())
    assert len(regions) == 1 and drops == []


# --- label map ----------------------------------------------------------------------------------------------


def test_unknown_label_value_and_background():
    lm = np.zeros((32, 32), dtype=np.int32)
    lm[2:10, 2:10] = 1
    lm[20:25, 20:30] = 5
    regions, drops = extract_regions(
        lm.shape,
        label_map=lm,
        label_values={0: "background", 1: "liver"},
        min_area_px=1,
        rng_for=rng_factory(),
    )
    assert [r.label for r in regions] == ["liver"]
    assert drops == [Drop("5", "unknown_label_value", "value 5: 50 px")]


def test_values_sharing_a_name_form_one_mask():
    lm = np.zeros((20, 20), dtype=np.uint8)
    lm[2:6, 2:6] = 1
    lm[6:9, 2:6] = 2  # touches value 1: one instance of the shared name
    lm[15:18, 15:18] = 2
    regions, _ = extract_regions(
        lm.shape, label_map=lm, label_values={1: "kidney", 2: "kidney"}, min_area_px=1, rng_for=rng_factory()
    )
    assert [(r.label, r.instance, r.area_px) for r in regions] == [("kidney", 0, 28), ("kidney", 1, 9)]


def test_float_and_large_value_label_maps():
    lm = np.zeros((16, 16), dtype=np.float32)
    lm[3:8, 3:8] = 2.0
    regions, _ = extract_regions(
        lm.shape, label_map=lm, label_values={2: "a"}, min_area_px=1, rng_for=rng_factory()
    )
    assert regions[0].area_px == 25
    regions, drops = extract_regions(
        lm.shape, label_map=lm + 0.5, label_values={2: "a"}, min_area_px=1, rng_for=rng_factory()
    )
    assert regions == [] and [d.reason for d in drops] == ["non_integer_label_map"]

    big = np.zeros((16, 16), dtype=np.int64)
    big[1:4, 1:4] = 1_000_000  # sparse huge values take the np.unique path
    big[10:12, 10:15] = 7
    regions, _ = extract_regions(
        big.shape, label_map=big, label_values={7: "b", 1_000_000: "c"}, min_area_px=1, rng_for=rng_factory()
    )
    assert [(r.label, r.area_px, r.bbox) for r in regions] == [
        ("b", 10, (10, 10, 15, 12)),
        ("c", 9, (1, 1, 4, 4)),
    ]


def test_shape_mismatch_is_a_drop():
    regions, drops = extract_regions(
        (10, 10), masks=[("a", np.ones((5, 10), dtype=bool))], label_map=np.ones((10, 12), dtype=np.uint8),
        label_values={1: "b"}, min_area_px=1, rng_for=rng_factory(),
    )  # fmt: skip
    assert regions == []
    assert [d.reason for d in drops] == ["mask_shape_mismatch", "mask_shape_mismatch"]


# --- boxes and points ---------------------------------------------------------------------------------------


def test_box_clipped_floored_and_ceiled():
    shape = (100, 200)  # h, w
    regions, drops = extract_regions(
        shape,
        boxes=[Box("nodule", (-5.5, 2.2, 10.7, 300.0), annotator="r1")],
        min_area_px=16,
        rng_for=rng_factory(),
    )
    assert drops == []
    assert regions == [
        Region("nodule", "box", 0, 11 * 98, (0, 2, 11, 100), ((5, 51),), (1,), None, annotator="r1"),
    ]


def test_box_drops():
    shape = (50, 60)
    boxes = [
        Box("a", (10, 10, 10, 20)),  # zero width
        Box("a", (30, 10, 20, 20)),  # x1 < x0
        Box("a", (float("nan"), 1, 5, 5)),
        Box("a", (70, 10, 90, 20)),  # right of the image
        Box("a", (-20, -20, -1, -1)),  # above-left of it
        Box("a", (1, 1, 3, 3)),  # 4 px < min_drawn_pixels 5
        Box("a", (0, 0, 60, 50)),
    ]
    regions, drops = extract_regions(
        shape, boxes=boxes, min_area_px=16, min_drawn_px=5, rng_for=rng_factory()
    )
    assert [d.reason for d in drops] == [
        "invalid_box", "invalid_box", "invalid_box", "box_outside_image", "box_outside_image",
        "degenerate_annotation",
    ]  # fmt: skip
    assert drops[-1].detail == "drawn region of 4 px < 5 px (min_drawn_pixels)"
    assert [(r.instance, r.bbox, r.area_px, r.points) for r in regions] == [
        (6, (0, 0, 60, 50), 3000, ((30, 25),))
    ]


def test_points():
    shape = (20, 30)
    pts = [Point("tip", (3.7, 2.2), annotator="x"), Point("tip", (30.0, 5.0)), Point("tip", (29.99, 19.5))]
    regions, drops = extract_regions(shape, points=pts, min_area_px=16, rng_for=rng_factory())
    assert drops == [Drop("tip", "point_outside_image", "xy (30, 5) outside 30x20")]
    assert regions == [
        Region("tip", "point", 0, 1, (3, 2, 4, 3), ((3, 2),), (1,), None, annotator="x"),
        Region("tip", "point", 2, 1, (29, 19, 30, 20), ((29, 19),), (1,), None),
    ]


def test_output_order_and_instance_numbering_across_sources():
    shape = (40, 40)
    lm = np.zeros(shape, dtype=np.uint8)
    lm[20:30, 20:30] = 2
    lm[2:8, 2:8] = 1
    m1 = np.zeros(shape, dtype=bool)
    m1[30:36, 2:8] = True
    m2 = np.zeros(shape, dtype=bool)
    m2[10:16, 30:36] = True
    regions, _ = extract_regions(
        shape,
        label_map=lm,
        label_values={1: "b", 2: "a"},
        masks=[("c", m1), ("a", m2)],
        boxes=[Box("d", (0, 0, 10, 10)), Box("c", (0, 0, 10, 10))],
        points=[Point("b", (1, 1))],
        min_area_px=16,
        rng_for=rng_factory(),
    )
    assert [(r.label, r.kind, r.instance) for r in regions] == [
        ("b", "mask", 0), ("b", "point", 1),
        ("a", "mask", 0), ("a", "mask", 1),
        ("c", "mask", 0), ("c", "box", 1),
        ("d", "box", 0),
    ]  # fmt: skip


def test_mask_annotators_go_to_every_instance_of_their_mask():
    """Each instance of a mask carries the mask's annotator, also past a mask dropped before it; label-map
    regions and masks without annotators carry None."""
    shape = (40, 40)
    lm = np.zeros(shape, dtype=np.uint8)
    lm[30:38, 30:38] = 1
    r1 = np.zeros(shape, dtype=bool)
    r1[2:8, 2:8] = r1[2:8, 20:26] = True  # two instances
    r1[15, 15] = True  # a third, under the minimum area: dropped, numbered all the same
    r2 = np.zeros(shape, dtype=bool)
    r2[4:12, 4:12] = True  # overlaps r1's first: a separate annotation
    masks = [("nodule", r1), ("nodule", np.ones((3, 3), bool)), ("nodule", r2)]
    kw = dict(label_map=lm, label_values={1: "organ"}, masks=masks, min_area_px=16, rng_for=rng_factory())
    found, drops = extract_regions(shape, mask_annotators=["reader1", "reader9", "reader2"], **kw)
    assert [d.reason for d in drops] == ["below_min_area", "mask_shape_mismatch"]
    assert [(r.label, r.instance, r.annotator) for r in found] == [
        ("organ", 0, None),
        ("nodule", 0, "reader1"), ("nodule", 1, "reader1"), ("nodule", 3, "reader2"),
    ]  # fmt: skip
    plain, _ = extract_regions(shape, **kw)  # no annotators: the same regions, none carries one
    assert [r.annotator for r in plain] == [None] * 4
    assert [dataclasses.replace(r, annotator=None) for r in found] == plain
    partial, _ = extract_regions(shape, mask_annotators=[None, None, "reader2"], **kw)
    assert [r.annotator for r in partial] == [None, None, None, "reader2"]
    with pytest.raises(ValueError):  # annotators that do not pair with the masks are never guessed at
        extract_regions(shape, mask_annotators=["reader1", "reader2"], **kw)


# --- points ---------------------------------------------------------------------------------------------------


def test_determinism_and_seeding_per_region_key():
    shape = (96, 96)
    lm = np.zeros(shape, dtype=np.uint8)
    lm[disc(shape, 30, 30, 20)] = 1
    lm[disc(shape, 75, 70, 12)] = 1
    calls: list[str] = []
    a, _ = extract_regions(
        shape, label_map=lm, label_values={1: "organ"}, min_area_px=1, rng_for=rng_factory(3, calls)
    )
    b, _ = extract_regions(
        shape, label_map=lm, label_values={1: "organ"}, min_area_px=1, rng_for=rng_factory(3)
    )
    c, _ = extract_regions(
        shape, label_map=lm, label_values={1: "organ"}, min_area_px=1, rng_for=rng_factory(4)
    )
    assert calls == ["organ/0", "organ/1"]
    assert a == b
    assert [r.points for r in a] != [r.points for r in c]
    assert [r.points[0] for r in a] == [
        r.points[0] for r in c
    ]  # the interior point does not depend on the seed

    m = disc(shape, 40, 40, 15)
    assert sample_points(m, np.random.default_rng(9)) == sample_points(m, np.random.default_rng(9))


def test_first_positive_tie_break_and_border_counts_as_boundary():
    m = np.zeros((10, 10), dtype=bool)
    m[2:4, 2:8] = True  # every pixel is 1 px from the background: first pixel row-major wins
    (pts, labels) = sample_points(m, np.random.default_rng(0), n_pos=1, n_neg=0)
    assert pts == ((2, 2),) and labels == (1,)

    m = np.zeros((10, 20), dtype=bool)
    m[:, :12] = True  # touches the left, top, bottom borders: the centre is at distance 5, not at column 0
    (pts, _) = sample_points(m, np.random.default_rng(0), n_pos=1, n_neg=0)
    x, y = pts[0]
    assert border_edt(m)[y, x] == border_edt(m).max() == 5.0
    assert (x, y) == (4, 4)


def test_few_pixels_give_fewer_points():
    m = np.zeros((8, 8), dtype=bool)
    m[3, 3] = True
    pts, labels = sample_points(m, np.random.default_rng(0))
    assert pts[0] == (3, 3) and labels == (
        1,
        0,
        0,
    )  # one pixel: one positive, two negatives from its 3x3 ring
    assert all(max(abs(x - 3), abs(y - 3)) == 1 for x, y in pts[1:])

    full = np.ones((4, 4), dtype=bool)
    pts, labels = sample_points(full, np.random.default_rng(0))
    assert labels == (1, 1, 1)  # nothing lies outside the whole image
    assert sample_points(np.zeros((4, 4), dtype=bool), np.random.default_rng(0)) == ((), ())


def test_sample_points_on_random_masks_match_region_rules():
    for seed in range(30):
        mask = blob_mask(500 + seed)
        x0, y0, x1, y1 = tight_box(mask)
        rng = np.random.default_rng(seed)
        pts, labels = sample_points(mask, rng, n_pos=4, n_neg=3)
        dist = border_edt(mask)
        pos = [p for p, lab in zip(pts, labels, strict=True) if lab]
        neg = [p for p, lab in zip(pts, labels, strict=True) if not lab]
        assert dist[pos[0][1], pos[0][0]] == dist.max()
        assert all(mask[y, x] and dist[y, x] >= np.median(dist[mask]) for x, y in pos)
        assert all(not mask[y, x] for x, y in neg)
        assert len(neg) == 3


# --- RLE ------------------------------------------------------------------------------------------------------


def test_rle_round_trip_through_pycocotools():
    for seed in range(40):
        m = blob_mask(2000 + seed)
        h, w = m.shape
        rle = encode_rle(m)
        assert rle["size"] == [h, w] and isinstance(rle["counts"], str)
        assert np.array_equal(decode_rle(rle), m)
        coco = mask_utils.frPyObjects({"size": [h, w], "counts": uncompressed_counts(m)}, h, w)
        assert coco["counts"].decode("ascii") == rle["counts"]
        assert int(mask_utils.area(coco)) == int(m.sum())
        assert [int(v) for v in mask_utils.toBbox(coco)] == [
            numpy_box(m)[0], numpy_box(m)[1], numpy_box(m)[2] - numpy_box(m)[0], numpy_box(m)[3] - numpy_box(m)[1],
        ]  # fmt: skip


def test_tight_box():
    m = np.zeros((7, 9), dtype=bool)
    assert tight_box(m) == (0, 0, 0, 0)
    m[2, 3] = m[5, 7] = True
    assert tight_box(m) == (3, 2, 8, 6)
    m[:] = True
    assert tight_box(m) == (0, 0, 9, 7)


def test_drawn_boxes_and_outlines_are_kept_under_the_area_rule_that_drops_mask_slivers():
    """VinDr-CXR: a radiologist's 16 x 18 px nodule box on a 1024 px image is under the area rule (0.05 % of
    the image = 525 px), which exists for slivers of sliced 3D masks and specks of lossy masks; drawn boxes
    and outlines are kept down to min_drawn_pixels (1 px by default), mask-derived instances are not."""
    shape = (1024, 1024)
    smallest = min_area(1024, 1024, 0.0005, 16)
    assert smallest == 525
    box = Box("Nodule/Mass", (400.0, 300.0, 416.0, 318.0), annotator="R8")
    nodule = np.zeros(shape, bool)
    nodule[300:318, 400:416] = True  # the same 288 px, as a mask
    regions, drops = extract_regions(
        shape, boxes=[box], masks=[("Nodule/Mass", nodule)], min_area_px=smallest, rng_for=rng_factory()
    )
    assert [(r.kind, r.bbox, r.area_px, r.annotator) for r in regions] == [
        ("box", (400, 300, 416, 318), 288, "R8")
    ]
    assert drops == [Drop("Nodule/Mass", "below_min_area", "288 px < 525 px")]  # the mask instance
    # the same mask drawn as an outline on this image (LIDC, ImageScope, COCO polygons): an annotation
    regions, drops = extract_regions(
        shape, masks=[("Nodule/Mass", nodule)], min_area_px=smallest, outlined=True, rng_for=rng_factory()
    )
    assert [(r.kind, r.area_px) for r in regions] == [("mask", 288)] and drops == []
    # min_drawn_pixels is the spec's say on how small a drawn region may be
    regions, drops = extract_regions(
        shape, boxes=[box], min_area_px=smallest, min_drawn_px=300, rng_for=rng_factory()
    )
    assert regions == [] and [d.reason for d in drops] == ["degenerate_annotation"]
