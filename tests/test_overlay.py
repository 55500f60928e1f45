"""Overlays carry each label's colour exactly where the region's outline, box and points are."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from medpclip.frame import Box
from medpclip.qa.overlay import draw_regions, label_color, label_colors
from medpclip.regions import encode_rle, extract_regions


def disc(shape, cy, cx, r) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def mask_region(label, mask, name=None, points=(), point_labels=()):
    ys, xs = np.nonzero(mask)
    return {
        "label": label,
        "name": name or label,
        "kind": "mask",
        "bbox": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1],
        "points": [list(p) for p in points],
        "point_labels": list(point_labels),
        "mask_rle": encode_rle(mask),
    }


def upscale(a: np.ndarray, s: int) -> np.ndarray:
    return np.repeat(np.repeat(a, s, axis=0), s, axis=1)


def test_label_color_is_stable_and_distinguishes_labels():
    assert label_color("liver") == label_color("liver")
    color = label_color("liver")
    assert len(color) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in color)
    labels = ["liver", "spleen", "kidney_left", "kidney_right", "aorta", "pancreas", "lung", "heart"]
    assert len({label_color(label) for label in labels}) >= 5  # a palette, not one colour


@pytest.mark.parametrize(
    ("shape", "scale", "expected"),
    [
        ((64, 48), None, (384, 512)),  # (W, H): x8 so the long side reaches 512
        ((300, 200), None, (400, 600)),  # x2
        ((512, 700), None, (700, 512)),  # already large: x1
        ((64, 48), 3, (144, 192)),
    ],
)
def test_output_size(shape, scale, expected):
    img = draw_regions(np.zeros(shape, dtype=np.uint8), [], scale=scale)
    assert img.mode == "RGB" and img.size == expected


def test_without_regions_the_image_is_the_nearest_upscaled_input():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    out = np.asarray(draw_regions(grey, [], scale=4))
    assert np.array_equal(out, upscale(np.stack([grey] * 3, axis=2), 4))
    colour = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(draw_regions(colour, [], scale=2)), upscale(colour, 2))


@pytest.mark.parametrize("channels", [1, 3])
def test_mask_outline_fill_and_box_carry_the_label_colour(channels):
    shape, s = (64, 64), 8
    base = np.full(shape if channels == 1 else (*shape, 3), 90, dtype=np.uint8)
    mask = disc(shape, 36, 32, 10)
    region = mask_region("liver", mask)
    out = np.asarray(draw_regions(base, [region]))
    assert out.shape == (512, 512, 3)
    color = np.array(label_color("liver"))

    big = upscale(mask, s)
    outline = big & ~ndimage.binary_erosion(big, border_value=0)
    assert outline.sum() > 100
    assert (out[outline] == color).all()

    interior = ndimage.binary_erosion(big, iterations=3)
    expected_fill = np.round(90 * 0.6 + color * 0.4).astype(np.uint8)
    assert (out[interior] == expected_fill).all()

    x0, y0, x1, y1 = region["bbox"]
    rect = np.zeros_like(big)
    rect[y0 * s : y1 * s, x0 * s : x1 * s] = True
    rect &= ~ndimage.binary_erosion(rect, border_value=0)
    assert (out[rect] == color).all()

    far = np.ones_like(big)
    far[(y0 - 6) * s : (y1 + 1) * s, (x0 - 1) * s : (x1 + 1) * s] = False  # the region, its name tag above it
    far[:100, :220] = False  # the legend's corner
    assert (out[far] == 90).all()  # nothing else is touched


def test_box_region_rectangle_and_points():
    shape, s = (100, 100), 6
    base = np.full(shape, 128, dtype=np.uint8)
    regions, _ = extract_regions(
        shape, boxes=[Box("nodule", (40, 50, 70, 80))], min_area_px=1, rng_for=np.random.default_rng
    )
    records = [dataclasses.asdict(r) for r in regions]
    out = np.asarray(draw_regions(base, records))
    assert out.shape == (600, 600, 3)
    color = np.array(label_color("nodule"))
    x0, y0, x1, y1 = (v * s for v in (40, 50, 70, 80))
    assert (out[y0, x0:x1] == color).all() and (out[y1 - 1, x0:x1] == color).all()
    assert (out[y0:y1, x0] == color).all() and (out[y0:y1, x1 - 1] == color).all()
    ((px, py),) = records[0]["points"]
    assert (px, py) == (55, 65)
    assert (out[int((py + 0.5) * s), int((px + 0.5) * s)] == color).all()  # positive point: filled dot
    ring = out[(py - 2) * s : (py + 3) * s, (px - 2) * s : (px + 3) * s]
    assert (ring == 255).all(axis=-1).any()  # with a white ring


def test_negative_points_and_missing_masks():
    shape = (64, 64)
    mask = disc(shape, 30, 30, 8)
    region = mask_region("cyst", mask, points=[(30, 30), (50, 50)], point_labels=[1, 0])
    out = np.asarray(draw_regions(np.zeros(shape, dtype=np.uint8), [region], scale=8))
    color = np.array(label_color("cyst"))
    assert (out[50 * 8 + 4, 50 * 8 + 4] == color).all()  # the centre of the ×
    assert (out[30 * 8 + 4, 30 * 8 + 4] == color).all()

    no_mask = dict(region, mask_rle=None)  # a box/point record: nothing filled, box still drawn
    out = np.asarray(draw_regions(np.zeros(shape, dtype=np.uint8), [no_mask], scale=8))
    assert (out[30 * 8 + 20, 30 * 8 + 20] == 0).all()
    x0, y0 = region["bbox"][:2]
    assert (out[y0 * 8, x0 * 8 + 5] == color).all()


def test_each_label_in_its_own_colour():
    shape = (80, 80)
    a, b = disc(shape, 20, 20, 8), disc(shape, 55, 55, 10)
    out = np.asarray(
        draw_regions(np.zeros(shape, dtype=np.uint8), [mask_region("aorta", a), mask_region("spleen", b)])
    )
    for label, m in (("aorta", a), ("spleen", b)):
        big = upscale(m, 7)
        edge = big & ~ndimage.binary_erosion(big, border_value=0)
        assert (out[edge] == np.array(label_color(label))).all()


def test_labels_of_one_image_never_share_a_colour():
    labels = [f"structure_{i}" for i in range(12)]
    colors = label_colors(labels)
    assert len(set(colors.values())) == 12
    assert colors == label_colors(reversed(labels))  # depends on the set of labels, not their order
    first = min(labels)
    assert colors[first] == label_color(first)  # the first label always keeps its own colour
    clash = next(
        (a, b) for i, a in enumerate(labels) for b in labels[i + 1 :] if label_color(a) == label_color(b)
    )  # 12 labels in a 15-colour palette: a clash exists
    a, b = sorted(clash)
    assert label_colors([a, b]) == {a: label_color(a), b: label_colors([a, b])[b]}
    assert label_colors([a, b])[b] != label_color(a)

    shape = (40, 40)
    ma, mb = disc(shape, 10, 10, 5), disc(shape, 28, 28, 6)
    out = np.asarray(
        draw_regions(np.zeros(shape, dtype=np.uint8), [mask_region(b, mb), mask_region(a, ma)], scale=8)
    )
    for label, m in ((a, ma), (b, mb)):
        big = upscale(m, 8)
        edge = big & ~ndimage.binary_erosion(big, border_value=0)
        assert (out[edge] == np.array(label_colors([a, b])[label])).all()


def test_rejects_non_uint8():
    with pytest.raises(ValueError):
        draw_regions(np.zeros((8, 8), dtype=np.float32), [])
    with pytest.raises(ValueError):
        draw_regions(np.zeros((8, 8, 4), dtype=np.uint8), [])
