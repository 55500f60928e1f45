"""Region prompts (masks, boxes, positive/negative points) → a dense prompt map at patch resolution plus
sparse prompt tokens.

A batch of images carries up to R regions each; every region is prompted in ONE way, its ``kind``:

- ``mask``: a binary mask at image resolution;
- ``box``: ``[x0, y0, x1, y1]`` normalised to [0, 1] (exclusive max, like the corpus's pixel boxes);
- ``point``: up to P points ``[x, y]`` normalised to [0, 1] with labels 1 (inside the region), 0 (outside),
  -1 (padding).

The encoder turns each prompt into

- a **dense map** on the ViT's patch grid with four channels: mask coverage (fraction of each patch inside
  the mask), box coverage (fraction inside the box, computed exactly from the coordinates), positive and
  negative point hits; a small conv net embeds it into the ViT width, and its last layer starts at ZERO, so
  adding it to the patch tokens leaves an initialised CLIP unchanged until training moves it;
- a **footprint** in [0, 1] per patch (where the prompt says the region is: mask or box coverage, a point
  spread to its neighbours), the attention bias of the region pooling block;
- **sparse tokens**: one kind token, two box-corner tokens and one token per point, each a learned type
  embedding plus a random-Fourier encoding of its coordinates (as in SAM's prompt encoder).

Pure torch, no I/O; coordinates are always normalised, so the same prompt works at any image size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

KINDS = ("mask", "box", "point")
KIND_INDEX = {k: i for i, k in enumerate(KINDS)}
NO_REGION = -1  # kind of a padding slot
DENSE_CHANNELS = 4  # mask coverage, box coverage, positive points, negative points


@dataclass
class RegionPrompts:
    """Prompts of a batch: B images × R region slots (slots with ``kinds == -1`` are padding).

    ``masks`` is (B, R, H, W) at image resolution (uint8/bool/float; zeros unless the kind is mask),
    ``boxes`` (B, R, 4) normalised xyxy, ``points`` (B, R, P, 2) normalised xy, ``point_labels`` (B, R, P)
    with 1 positive, 0 negative, -1 padding. The same fields with the leading (B, R) flattened to (N,) hold
    the prompts of N regions (see :meth:`select`).
    """

    kinds: torch.Tensor
    masks: torch.Tensor
    boxes: torch.Tensor
    points: torch.Tensor
    point_labels: torch.Tensor

    @property
    def valid(self) -> torch.Tensor:
        return self.kinds >= 0

    def to(self, device, non_blocking: bool = False) -> RegionPrompts:
        return RegionPrompts(
            **{f.name: getattr(self, f.name).to(device, non_blocking=non_blocking) for f in fields(self)}
        )

    def select(self, index: torch.Tensor) -> RegionPrompts:
        """Regions picked by a boolean (B, R) mask or by (N, 2) [image, slot] indices → flat (N, …) prompts."""
        if index.dtype == torch.bool:
            return RegionPrompts(**{f.name: getattr(self, f.name)[index] for f in fields(self)})
        b, r = index[:, 0], index[:, 1]
        return RegionPrompts(**{f.name: getattr(self, f.name)[b, r] for f in fields(self)})

    def permuted(self, order: torch.Tensor) -> RegionPrompts:
        """Flat prompts reordered (the 'shuffled prompts' control of the evaluation)."""
        return RegionPrompts(**{f.name: getattr(self, f.name)[order] for f in fields(self)})


def box_coverage(boxes: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(N, 4) normalised xyxy → (N, gh, gw): the exact fraction of each patch the box covers."""
    gh, gw = grid
    x0, y0, x1, y1 = boxes.float().unbind(-1)
    cols = torch.arange(gw, device=boxes.device, dtype=torch.float32)
    rows = torch.arange(gh, device=boxes.device, dtype=torch.float32)
    cx = (torch.minimum(x1[:, None], (cols + 1) / gw) - torch.maximum(x0[:, None], cols / gw)).clamp(
        min=0
    ) * gw
    cy = (torch.minimum(y1[:, None], (rows + 1) / gh) - torch.maximum(y0[:, None], rows / gh)).clamp(
        min=0
    ) * gh
    return cy[:, :, None] * cx[:, None, :]


def point_hits(points: torch.Tensor, labels: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(N, P, 2), (N, P) → (N, 2, gh, gw): positive and negative points counted in the patch holding them
    (clipped to 1)."""
    gh, gw = grid
    n = points.shape[0]
    col = (points[..., 0].float() * gw).floor().clamp(0, gw - 1).long()
    row = (points[..., 1].float() * gh).floor().clamp(0, gh - 1).long()
    cell = row * gw + col
    out = torch.zeros(n, 2, gh * gw, device=points.device)
    for channel, label in ((0, 1), (1, 0)):
        out[:, channel].scatter_add_(1, cell, (labels == label).float())
    return out.clamp_(max=1.0).view(n, 2, gh, gw)


_SPREAD = torch.tensor([[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]])


class PromptEncoder(nn.Module):
    """Dense prompt map (zero-initialised embedding added to patch tokens), footprint and sparse tokens."""

    def __init__(self, width: int, grid: tuple[int, int], hidden: int = 64, max_points: int = 8):
        super().__init__()
        self.grid = tuple(grid)
        self.width = width
        self.max_points = max_points
        self.dense = nn.Sequential(
            nn.Conv2d(DENSE_CHANNELS, hidden, kernel_size=3, padding=1),
            nn.GELU(),
            nn.Conv2d(hidden, width, kernel_size=1),
        )
        nn.init.zeros_(self.dense[-1].weight)  # the zero-initialised integration: CLIP starts unchanged
        nn.init.zeros_(self.dense[-1].bias)
        # Random Fourier features of (x, y), fixed (a buffer) and seeded here: same encoding in every process.
        gen = torch.Generator().manual_seed(0)
        self.register_buffer("fourier", torch.randn(2, width // 2, generator=gen), persistent=True)
        self.kind_embed = nn.Embedding(len(KINDS), width)
        self.corner_embed = nn.Embedding(2, width)  # box top-left, bottom-right
        self.point_embed = nn.Embedding(2, width)  # negative, positive
        for emb in (self.kind_embed, self.corner_embed, self.point_embed):
            nn.init.normal_(emb.weight, std=width**-0.5)
        self.register_buffer("spread", _SPREAD.view(1, 1, 3, 3).clone(), persistent=False)

    def _coords(self, xy: torch.Tensor) -> torch.Tensor:
        """(…, 2) in [0, 1] → (…, width) random Fourier features."""
        proj = (2 * xy.float() - 1) @ self.fourier.to(torch.float32) * (2 * math.pi)
        return torch.cat([proj.sin(), proj.cos()], dim=-1)

    def maps(self, prompts: RegionPrompts) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat (N, …) prompts → dense maps (N, 4, gh, gw) and footprints (N, gh, gw) in [0, 1]."""
        kinds = prompts.kinds
        n = kinds.shape[0]
        gh, gw = self.grid
        device = kinds.device
        if n == 0:
            return torch.zeros(0, DENSE_CHANNELS, gh, gw, device=device), torch.zeros(
                0, gh, gw, device=device
            )
        is_mask = (kinds == KIND_INDEX["mask"]).float()[:, None, None]
        is_box = (kinds == KIND_INDEX["box"]).float()[:, None, None]
        is_point = (kinds == KIND_INDEX["point"]).float()[:, None, None, None]
        mask_cov = F.adaptive_avg_pool2d(prompts.masks.float()[:, None], (gh, gw))[:, 0] * is_mask
        box_cov = box_coverage(prompts.boxes, (gh, gw)) * is_box
        hits = point_hits(prompts.points, prompts.point_labels, (gh, gw)) * is_point
        dense = torch.stack([mask_cov, box_cov, hits[:, 0], hits[:, 1]], dim=1)
        spread = F.conv2d(hits[:, :1], self.spread.to(hits.dtype), padding=1)[:, 0]
        footprint = (mask_cov + box_cov + spread).clamp(0, 1)
        peak = footprint.flatten(1).amax(dim=1).clamp(min=1e-6)[:, None, None]
        return dense, footprint / peak

    def dense_embedding(self, dense: torch.Tensor) -> torch.Tensor:
        """(N, 4, gh, gw) → (N, gh·gw, width), the addition to the patch tokens (zero at init)."""
        return self.dense(dense).flatten(2).transpose(1, 2)

    def sparse_tokens(self, prompts: RegionPrompts) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat prompts → tokens (N, 3 + P, width) and a padding mask (N, 3 + P), True where a token is absent.

        Token 0 is the kind, 1–2 the box corners (present for boxes), 3… the points (present for points)."""
        kinds = prompts.kinds.clamp(min=0)
        n = kinds.shape[0]
        kind_tok = self.kind_embed(kinds)[:, None]
        corners = prompts.boxes.view(n, 2, 2)
        corner_tok = self._coords(corners) + self.corner_embed.weight[None]
        labels = prompts.point_labels
        point_tok = self._coords(prompts.points) + self.point_embed(labels.clamp(min=0))
        tokens = torch.cat([kind_tok.to(corner_tok.dtype), corner_tok, point_tok], dim=1)
        is_box = prompts.kinds == KIND_INDEX["box"]
        is_point = prompts.kinds == KIND_INDEX["point"]
        absent = torch.cat(
            [
                torch.zeros(n, 1, dtype=torch.bool, device=kinds.device),
                (~is_box)[:, None].expand(n, 2),
                (labels < 0) | (~is_point)[:, None],
            ],
            dim=1,
        )
        return tokens, absent


# --- the prompt as pixels: what the input-side baselines (crop, mask-input, alpha) see -----------------------

POINT_RADIUS = 1 / 16  # half the side of the square a point stands for, as a fraction of the image side
MIN_CROP = 1 / 16  # smallest crop window side (fraction of the image): a few-pixel region is not blown up


def region_maps(prompts: RegionPrompts, size: tuple[int, int]) -> torch.Tensor:
    """Flat (N, …) prompts → (N, H, W) float {0, 1}: where the prompt says the region is, at image resolution.

    A mask is itself; a box is the pixels whose centres lie inside it; points are squares of side
    ``2 · POINT_RADIUS`` (of the image side) around the POSITIVE points (negative points say where the region
    is not, which a pixel map cannot hold). The baselines that change the input (``crop``, ``mask-input``,
    ``alpha``) all start from this map, so one prompt means the same region to every method."""
    h, w = size
    kinds = prompts.kinds
    n = kinds.shape[0]
    device = kinds.device
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
    x0, y0, x1, y1 = prompts.boxes.float().unbind(-1)
    inside_box = ((ys >= y0[:, None]) & (ys < y1[:, None]))[:, :, None] & (
        (xs >= x0[:, None]) & (xs < x1[:, None])
    )[:, None, :]
    px, py = prompts.points[..., 0].float(), prompts.points[..., 1].float()  # (N, P)
    positive = (prompts.point_labels == 1)[:, :, None]
    near_x = (xs[None, None, :] - px[:, :, None]).abs() <= POINT_RADIUS  # (N, P, W)
    near_y = (ys[None, None, :] - py[:, :, None]).abs() <= POINT_RADIUS  # (N, P, H)
    near_points = ((near_y & positive)[:, :, :, None] & near_x[:, :, None, :]).any(dim=1)
    masks = prompts.masks
    if n and masks.shape[-2:] != (h, w):
        masks = F.interpolate(masks.float()[:, None], size=(h, w), mode="nearest")[:, 0]
    masks = masks.bool()
    is_mask = (kinds == KIND_INDEX["mask"])[:, None, None]
    is_box = (kinds == KIND_INDEX["box"])[:, None, None]
    is_point = (kinds == KIND_INDEX["point"])[:, None, None]
    out = (masks & is_mask) | (inside_box & is_box) | (near_points & is_point)
    return out.float()


def crop_windows(maps: torch.Tensor, margin: float) -> torch.Tensor:
    """(N, H, W) region maps → (N, 4) square windows ``[cx, cy, side, side]`` in normalised image units: the
    map's tight box grown by ``margin`` of its longer side on every side, made square (the crop keeps the
    region's shape; the encoder's input is square) and at least ``MIN_CROP`` wide. An empty map gives the
    whole image. Windows may reach past the image border (that part reads as the normalised mean, zero)."""
    n, h, w = maps.shape
    rows, cols = maps.amax(dim=2) > 0, maps.amax(dim=1) > 0  # (N, H), (N, W)
    empty = ~rows.any(dim=1)

    def extent(hit: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.arange(length, device=maps.device)
        first = torch.where(hit, idx, length).amin(dim=1)
        last = torch.where(hit, idx, -1).amax(dim=1) + 1
        return first / length, last / length

    y0, y1 = extent(rows, h)
    x0, x1 = extent(cols, w)
    side = torch.maximum(x1 - x0, y1 - y0)
    side = (side * (1 + 2 * margin)).clamp(min=MIN_CROP)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    whole = torch.tensor([0.5, 0.5, 1.0, 1.0], device=maps.device)
    windows = torch.stack([cx, cy, side, side], dim=1)
    return torch.where(empty[:, None], whole, windows)


def crop_images(images: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
    """Bilinear crops of (N, C, H, W) images to windows (N, 4) ``[cx, cy, w, h]`` (normalised), resized to the
    input size; outside the image reads zero (the mean, for normalised inputs)."""
    n = images.shape[0]
    cx, cy, cw, ch = windows.unbind(-1)
    theta = torch.zeros(n, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0] = cw.to(images.dtype)
    theta[:, 0, 2] = (2 * cx - 1).to(images.dtype)
    theta[:, 1, 1] = ch.to(images.dtype)
    theta[:, 1, 2] = (2 * cy - 1).to(images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
