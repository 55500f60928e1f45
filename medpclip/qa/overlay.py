"""Draw a sample's regions on its image, for eyes: ``medpclip show``, contact sheets, the QA report.

Input is the image as stored (grey or RGB uint8) and the sample record's region dicts (DESIGN §4). Each label
has its own colour from a fixed palette, picked by a stable hash of the label, so a label looks the same on
every sample of every build; only where two labels of one image hash to the same colour does one of them move
to the next free colour (:func:`label_colors`). Masks are filled semi-transparently and outlined in the full colour; boxes are
rectangles; positive points are filled dots with a white ring, negatives an ×; each region's name sits by its
box and a legend lists the labels. Small images are upscaled by an integer factor (nearest) so that text is
readable and a pixel stays a square block.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from medpclip.regions import decode_rle, tight_box

# Trubetskoy's distinct colours without white, black and grey, the two palest (lost on bright X-rays) and the
# two darkest (lost on CT background and on the black name tags).
_PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (170, 255, 195),
    (128, 128, 0),
)
_FILL_ALPHA = 0.4
_MIN_LONG_SIDE = 512


def label_color(label: str) -> tuple[int, int, int]:
    """The label's own colour, the same in every process and build."""
    return _PALETTE[_palette_index(label)]


def label_colors(labels: Iterable[str]) -> dict[str, tuple[int, int, int]]:
    """Colours for the labels of one image: each label's own colour unless a label before it (alphabetically)
    took that colour, then the next free one in the palette. A hashed palette collides often (5 labels in 15
    colours: one in two images), and two structures in one colour defeat the overlay."""
    taken: set[tuple[int, int, int]] = set()
    out = {}
    for label in sorted(set(labels)):
        start = _palette_index(label)
        candidates = (_PALETTE[(start + k) % len(_PALETTE)] for k in range(len(_PALETTE)))
        color = next((c for c in candidates if c not in taken), _PALETTE[start])  # more labels than colours
        taken.add(color)
        out[label] = color
    return out


def _palette_index(label: str) -> int:
    # crc32, not hash(): Python salts str hashes per process.
    return zlib.crc32(label.encode("utf-8")) % len(_PALETTE)


def draw_regions(image: np.ndarray, regions: Sequence[dict], *, scale: int | None = None) -> Image.Image:
    """RGB image ``scale`` times the input size (default: smallest integer making the long side ≥ 512)."""
    rgb = _as_rgb(image)
    h, w = rgb.shape[:2]
    s = int(scale) if scale is not None else max(1, math.ceil(_MIN_LONG_SIDE / max(h, w, 1)))
    if s < 1:
        raise ValueError(f"scale must be ≥ 1, got {scale}")
    canvas = np.repeat(np.repeat(rgb, s, axis=0), s, axis=1)
    colors = label_colors(r["label"] for r in regions)

    outlines = []
    for region in regions:
        mask = _region_mask(region, (h, w))
        if mask is None:
            continue
        color = np.array(colors[region["label"]], dtype=np.float32)
        x0, y0, x1, y1 = tight_box(mask)
        # Work on the scaled crop plus a one-pixel ring, so erosion sees background around the mask.
        cy0, cx0 = max(y0 * s - 1, 0), max(x0 * s - 1, 0)
        cy1, cx1 = min(y1 * s + 1, h * s), min(x1 * s + 1, w * s)
        crop = np.zeros((cy1 - cy0, cx1 - cx0), dtype=bool)
        crop[y0 * s - cy0 : y1 * s - cy0, x0 * s - cx0 : x1 * s - cx0] = np.repeat(
            np.repeat(mask[y0:y1, x0:x1], s, axis=0), s, axis=1
        )
        view = canvas[cy0:cy1, cx0:cx1]
        view[crop] = (view[crop] * (1 - _FILL_ALPHA) + color * _FILL_ALPHA).round().astype(np.uint8)
        outlines.append(((cy0, cx0), crop & ~ndimage.binary_erosion(crop, border_value=0), color))
    # Outlines after every fill, so a later region's fill never tints an earlier region's outline.
    for (cy0, cx0), edge, color in outlines:
        view = canvas[cy0 : cy0 + edge.shape[0], cx0 : cx0 + edge.shape[1]]
        view[edge] = color.astype(np.uint8)

    img = Image.fromarray(canvas, "RGB")
    draw = ImageDraw.Draw(img, "RGBA")  # RGBA fills blend onto the RGB image
    font = _font(max(11, round(max(h, w) * s / 48)))
    radius = max(3, round(max(h, w) * s / 170))
    name_boxes = []
    for region in regions:
        color = colors[region["label"]]
        bbox = region.get("bbox")
        if bbox is not None:
            x0, y0, x1, y1 = (int(v) for v in bbox)
            if x1 > x0 and y1 > y0:
                width = 2 if region.get("kind") == "box" else 1
                draw.rectangle([x0 * s, y0 * s, x1 * s - 1, y1 * s - 1], outline=color, width=width)
                name_boxes.append((region, (x0 * s, y0 * s, x1 * s, y1 * s)))
        for (px, py), positive in zip(
            region.get("points") or (), region.get("point_labels") or (), strict=False
        ):
            cx, cy = (px + 0.5) * s, (py + 0.5) * s
            if positive:
                draw.ellipse(
                    [cx - radius, cy - radius, cx + radius, cy + radius], fill=color, outline="white"
                )
            else:
                draw.line([cx - radius, cy - radius, cx + radius, cy + radius], fill=color, width=2)
                draw.line([cx - radius, cy + radius, cx + radius, cy - radius], fill=color, width=2)
    for region, box in name_boxes:
        _draw_name(draw, font, _display_name(region), box, colors[region["label"]], img.size)
    _draw_legend(draw, font, regions, colors, img.size, [b for _, b in name_boxes])
    return img


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 3:
        return np.array(image)  # a copy: we draw into it
    raise ValueError(f"expected (H, W) or (H, W, 3), got {image.shape}")


def _region_mask(region: dict, shape: tuple[int, int]) -> np.ndarray | None:
    rle = region.get("mask_rle")
    if not rle:
        return None
    if tuple(rle["size"]) != shape:  # a record whose mask does not fit its image: show the rest of it
        return None
    mask = decode_rle(rle)
    return mask if mask.any() else None


def _display_name(region: dict) -> str:
    return str(region.get("name") or region["label"])


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _draw_name(draw, font, text, box, color, size) -> None:
    x0, y0, x1, y1 = box
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    tw, th = right - left, bottom - top
    pad = 2
    y = y0 - th - 2 * pad - 1  # above the box, clear of its outline
    if y < 0:
        y = y1 + 1 if y1 + 1 + th + 2 * pad <= size[1] else y0 + 1
    x = min(max(x0, 0), max(size[0] - tw - 2 * pad, 0))
    draw.rectangle([x, y, x + tw + 2 * pad - 1, y + th + 2 * pad - 1], fill=(0, 0, 0, 160))
    draw.text((x + pad - left, y + pad - top), text, font=font, fill=color)


def _draw_legend(draw, font, regions, colors, size, boxes) -> None:
    entries: dict[str, str] = {}
    for region in regions:
        entries.setdefault(region["label"], _display_name(region))
    if not entries:
        return
    lines = [(label, name if _same(name, label) else f"{name} ({label})") for label, name in entries.items()]
    sizes = [draw.textbbox((0, 0), text, font=font) for _, text in lines]
    line_h = max(b[3] - b[1] for b in sizes)
    swatch, pad, gap = line_h, 4, 2
    lw = pad * 2 + swatch + pad + max(b[2] - b[0] for b in sizes)
    lh = pad * 2 + len(lines) * line_h + (len(lines) - 1) * gap
    W, H = size
    corners = [(0, 0), (W - lw, 0), (0, H - lh), (W - lw, H - lh)]
    # The corner that hides the least of the annotated boxes; ties keep the top-left.
    x, y = min(corners, key=lambda c: sum(_overlap((c[0], c[1], c[0] + lw, c[1] + lh), b) for b in boxes))
    x, y = max(x, 0), max(y, 0)
    draw.rectangle([x, y, x + lw - 1, y + lh - 1], fill=(0, 0, 0, 170))
    for i, ((label, text), tb) in enumerate(zip(lines, sizes, strict=True)):
        ty = y + pad + i * (line_h + gap)
        draw.rectangle([x + pad, ty, x + pad + swatch - 1, ty + swatch - 1], fill=colors[label])
        draw.text((x + pad * 2 + swatch - tb[0], ty - tb[1]), text, font=font, fill=(255, 255, 255))


def _same(name: str, label: str) -> bool:
    return name.casefold() == label.replace("_", " ").casefold()


def _overlap(a, b) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
