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
