"""MedP-CLIP: an open_clip CLIP whose vision tower also reads region prompts (masks, boxes, points).

Architecture (the paper's code is not public; these are our documented choices, see DESIGN §2 and the
README's "Train and evaluate"):

- **Backbone**: any open_clip ViT CLIP created by name (default ``ViT-B-16``), optionally initialised from a
  LOCAL checkpoint file; never a hub download. ``tiny`` is a small configuration for CPU runs and tests.
- **Feature-level prompt integration**: the ViT blocks before ``prompt_layer`` run once per image (shared
  trunk). From there on each region gets its own copy of the tokens with the prompt encoder's dense
  embedding ADDED TO ITS PATCH TOKENS. That embedding's last layer starts at zero, so at initialisation the
  prompted tokens are exactly the backbone's: a pre-trained CLIP starts unchanged and its image embedding is
  never disturbed. The class token gets no addition: it keeps attending to the whole image (global context).
- **Region pooling**: an attention block whose query (a learned region token plus the prompt's kind) and the
  sparse prompt tokens (box corners, points) attend to the final class + patch tokens, with an attention
  bias that favours patches under the prompt's footprint (learned strength). Its output, projected like
  the image embedding, is the region embedding.
- **One space**: image (class token → ``visual.proj``), region (pooler → its projection, initialised from
  ``visual.proj``) and text (open_clip text tower) embeddings share ``embed_dim``; all are L2-normalised.

Only standard open_clip ViTs (class-token or average pooling, no attentional pooler) are supported; other
towers are refused with a clear message.

**Region modes** (``ModelConfig.region_mode``): the baselines the paper compares against, in the same model
class so that trainer, losses and evaluation are shared. Each starts from the same pixel map of the prompt
(``prompt_encoder.region_maps``) and encodes the region with the WHOLE backbone (image embedding space):

- ``medpclip`` (default): the feature-level integration above;
- ``crop``: the square crop around the region's box (``CROP_MARGIN`` of its side on each side), resized to
  the input size: the region's own pixels and a thin rim, nothing of the rest of the image;
- ``mask-input``: the whole image with every pixel outside the region set to the mean (zero after
  normalisation): the region's pixels at their place in the frame, nothing around them;
- ``alpha``: Alpha-CLIP's fusion, a zero-initialised convolution of the region map (the alpha channel)
  added to the patch embedding; the image embedding is the same tower with alpha = 1 everywhere, so at
  initialisation both equal the backbone's.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torch import nn
from torch.utils.checkpoint import checkpoint

from medpclip.model.prompt_encoder import (
    PromptEncoder,
    RegionPrompts,
    crop_images,
    crop_windows,
    region_maps,
)

# Small configurations of our own, next to open_clip's named ones. ``tiny``: 64 px, 8 px patches (8×8 grid),
# 4 vision blocks and 2 text blocks of width 64, 32 text tokens (~3.6 M parameters, most of them the token
# embedding): ~0.2 s per step of 16 images on one CPU core.
MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 64, "layers": 4, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    },
}
MAX_LOGIT_SCALE = math.log(100.0)
REGION_MODES = ("medpclip", "crop", "mask-input", "alpha")
CROP_MARGIN = 0.1  # of the region's longer side, on each side of the crop


class ModelError(ValueError):
    """The model cannot be built as asked (unknown name, missing checkpoint file, unsupported tower)."""


@dataclass
class ModelConfig:
    """Everything needed to rebuild the model (stored in every checkpoint)."""

    name: str = "ViT-B-16"
    pretrained: str | None = None  # local open_clip checkpoint file for the backbone (never a hub tag)
    image_size: int | None = None  # None: the backbone's own
    prompt_layer: int | None = None  # first ViT block that sees the prompt; None: half the depth
    dense_hidden: int = 64
    max_points: int = 8
    region_mode: str = "medpclip"  # one of REGION_MODES: how a region prompt reaches the image tower

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def create_backbone(
    name: str, pretrained: str | None = None, image_size: int | None = None
) -> tuple[open_clip.CLIP, Any]:
    """An open_clip CLIP and its tokenizer, by name; weights from a local file or random. No downloads."""
    if name in MODEL_CONFIGS:
        cfg = copy.deepcopy(MODEL_CONFIGS[name])
        if image_size:
            cfg["vision_cfg"]["image_size"] = image_size
        clip = open_clip.CLIP(**cfg)
        if pretrained:
            _check_file(pretrained)
            open_clip.load_checkpoint(clip, pretrained)
        tokenizer = open_clip.SimpleTokenizer(context_length=cfg["text_cfg"]["context_length"])
        return clip, tokenizer
    if open_clip.get_model_config(name) is None:
        raise ModelError(f"unknown model '{name}': use 'tiny' or an open_clip model name such as ViT-B-16")
    if pretrained:
        _check_file(pretrained)
    clip = open_clip.create_model(
        name, pretrained=pretrained, force_image_size=image_size, pretrained_text=False
    )
    return clip, open_clip.get_tokenizer(name)


def _check_file(path: str) -> None:
    if not Path(path).is_file():
        raise ModelError(
            f"pretrained weights must be a local checkpoint file, '{path}' is not one (no hub downloads)"
        )


def _num_heads(visual: nn.Module) -> int:
    attn = getattr(visual.transformer.resblocks[0], "attn", None)
    return int(getattr(attn, "num_heads", 0)) or max(1, visual.transformer.width // 64)


class RegionPooler(nn.Module):
    """The attention block that pools the tokens under a prompt into one region embedding."""

    def __init__(self, width: int, heads: int, embed_dim: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.heads = heads
        self.query = nn.Parameter(torch.randn(width) * width**-0.5)
        self.ln_self = nn.LayerNorm(width)
        self.self_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_q = nn.LayerNorm(width)
        self.ln_kv = nn.LayerNorm(width)
        self.cross_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_mlp = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))
        self.ln_out = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.randn(width, embed_dim) * width**-0.5)
        # Attention bias per unit of footprint: patches outside the prompt start e^-5 less likely than inside.
        self.focus = nn.Parameter(torch.tensor(5.0))

    def forward(
        self, tokens: torch.Tensor, footprint: torch.Tensor, sparse: torch.Tensor, absent: torch.Tensor
    ) -> torch.Tensor:
        """tokens (N, 1+L, W) class + patch tokens; footprint (N, L); sparse (N, T, W) with ``absent`` (N, T)
        → (N, embed_dim), not normalised. Runs in float32 even under autocast: it is small, and a float
        attention bias next to bf16 queries is a dtype trap in some kernels."""
        with torch.autocast(device_type=tokens.device.type, enabled=False):
            tokens, footprint, sparse = tokens.float(), footprint.float(), sparse.float()
            n = tokens.shape[0]
            q = torch.cat([(self.query + sparse[:, 0])[:, None], sparse[:, 1:]], dim=1)
            h = self.ln_self(q)
            q = q + self.self_attn(h, h, h, key_padding_mask=absent, need_weights=False)[0]
            kv = self.ln_kv(tokens)
            bias = torch.cat([footprint.new_zeros(n, 1), self.focus * (footprint - 1.0)], dim=1)
            attn_mask = bias[:, None, :].expand(n, q.shape[1], -1).repeat_interleave(self.heads, dim=0)
            h = self.ln_q(q)
            q = q + self.cross_attn(h, kv, kv, attn_mask=attn_mask, need_weights=False)[0]
            q = q + self.mlp(self.ln_mlp(q))
            return self.ln_out(q[:, 0]) @ self.proj


class MedPCLIP(nn.Module):
    """The region-prompt CLIP. Build with :func:`build_model`."""

    def __init__(self, clip: open_clip.CLIP, config: ModelConfig):
        super().__init__()
        visual = clip.visual
        if not isinstance(visual, open_clip.transformer.VisionTransformer):
            raise ModelError(f"model '{config.name}': only open_clip ViT image towers take region prompts")
        if visual.attn_pool is not None or visual.pool_type not in ("tok", "avg"):
            raise ModelError(f"model '{config.name}': attentional-pooling ViTs are not supported")
        self.clip = clip
        self.config = config
        depth = len(visual.transformer.resblocks)
        k = depth // 2 if config.prompt_layer is None else config.prompt_layer
        if not 0 <= k < depth:
            raise ModelError(f"prompt_layer must be in [0, {depth - 1}], got {k}")
        if config.region_mode not in REGION_MODES:
            raise ModelError(
                f"unknown region mode '{config.region_mode}': use one of {', '.join(REGION_MODES)}"
            )
        self.region_mode = config.region_mode
        self.prompt_layer = k
        self.depth = depth
        width = visual.transformer.width
        embed_dim = visual.output_dim
        self.grid = tuple(visual.grid_size)
        self.image_size = tuple(visual.image_size)
        # Only the mode's own modules exist: a checkpoint of one mode does not load as another.
        if self.region_mode == "medpclip":
            self.prompt_encoder = PromptEncoder(
                width, self.grid, hidden=config.dense_hidden, max_points=config.max_points
            )
            self.region_pool = RegionPooler(width, _num_heads(visual), embed_dim)
            with torch.no_grad():  # regions start in the image embedding's space
                self.region_pool.proj.copy_(visual.proj)
                if isinstance(visual.ln_post, nn.LayerNorm):
                    self.region_pool.ln_out.load_state_dict(visual.ln_post.state_dict())
        elif self.region_mode == "alpha":
            conv1 = visual.conv1
            self.alpha_embed = nn.Conv2d(1, conv1.out_channels, conv1.kernel_size, conv1.stride, bias=False)
            nn.init.zeros_(self.alpha_embed.weight)  # Alpha-CLIP's zero init: starts as the backbone
        self.region_logit_scale = nn.Parameter(clip.logit_scale.detach().clone())

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) → the backbone's normalised float input (done on the device: 4× less to copy)."""
        visual = self.clip.visual
        mean = torch.tensor(getattr(visual, "image_mean", None) or OPENAI_DATASET_MEAN, device=images.device)
        std = torch.tensor(getattr(visual, "image_std", None) or OPENAI_DATASET_STD, device=images.device)
        x = images.float().div_(255.0)
        return (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)

    # --- vision ------------------------------------------------------------------------------------------

    def _blocks(self, x: torch.Tensor, start: int, end: int) -> torch.Tensor:
        t = self.clip.visual.transformer
        if not t.batch_first:
            x = x.transpose(0, 1)
        for blk in t.resblocks[start:end]:
            if t.grad_checkpointing and self.training:
                x = checkpoint(blk, x, None, None, None, use_reentrant=False)
            else:
                x = blk(x)
        return x if t.batch_first else x.transpose(0, 1)

    def _embeds(self, images: torch.Tensor, alpha: torch.Tensor | None = None) -> torch.Tensor:
        """open_clip's ``VisionTransformer._embeds``, plus (alpha mode) the alpha channel's patch embedding:
        ``alpha`` (B, H, W) in [0, 1]; None means the whole image (alpha = 1)."""
        visual = self.clip.visual
        if self.region_mode != "alpha":
            return visual._embeds(images)
        if alpha is None:
            alpha = images.new_ones(images.shape[0], *images.shape[-2:])
        # centred like the image channels, so a region and its complement push in opposite directions
        x = visual.conv1(images) + self.alpha_embed((2 * alpha - 1)[:, None].to(images.dtype))
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = visual.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
        return visual.ln_pre(visual.patch_dropout(x))

    def trunk(self, images: torch.Tensor) -> torch.Tensor:
        """Tokens (B, 1+L, W) entering block ``prompt_layer``: computed once per image."""
        return self._blocks(self._embeds(images), 0, self.prompt_layer)

    def image_head(self, x: torch.Tensor) -> torch.Tensor:
        """Trunk tokens → image embedding (not normalised), exactly open_clip's ``encode_image``."""
        visual = self.clip.visual
        pooled, _ = visual._pool(self._blocks(x, self.prompt_layer, self.depth))
        return pooled @ visual.proj if visual.proj is not None else pooled

    def region_tokens(self, x: torch.Tensor, prompts: RegionPrompts, image_index: torch.Tensor):
        """Final tokens (N, 1+L, W) of each region's prompted pass, plus the prompt footprints (N, L)."""
        dense, footprint = self.prompt_encoder.maps(prompts)
        xr = x[image_index]
        add = self.prompt_encoder.dense_embedding(dense.to(xr.dtype)).to(xr.dtype)
        xr = torch.cat([xr[:, :1], xr[:, 1:] + add], dim=1)
        xr = self._blocks(xr, self.prompt_layer, self.depth)
        return xr, footprint.flatten(1)

    def region_head(self, tokens: torch.Tensor, footprint: torch.Tensor, prompts: RegionPrompts):
        sparse, absent = self.prompt_encoder.sparse_tokens(prompts)
        return self.region_pool(self.clip.visual.ln_post(tokens), footprint, sparse, absent)

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        feats = self.image_head(self.trunk(images))
        return F.normalize(feats, dim=-1) if normalize else feats

    def encode_regions(
        self,
        images: torch.Tensor,
        prompts: RegionPrompts,
        image_index: torch.Tensor,
        normalize: bool = True,
        trunk: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Flat prompts (N, …), each on image ``image_index[n]`` of ``images`` → (N, D) region embeddings."""
        if prompts.kinds.shape[0] == 0:
            return images.new_zeros(0, self.clip.visual.output_dim)
        if self.region_mode != "medpclip":
            feats = self._encode_region_inputs(images, prompts, image_index)
            return F.normalize(feats, dim=-1) if normalize else feats
        x = self.trunk(images) if trunk is None else trunk
        tokens, footprint = self.region_tokens(x, prompts, image_index)
        feats = self.region_head(tokens, footprint, prompts)
        return F.normalize(feats, dim=-1) if normalize else feats

    def region_inputs(
        self, images: torch.Tensor, prompts: RegionPrompts, image_index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What the input-side baselines feed the tower for each region: (N, 3, H, W) images and, in alpha
        mode, the (N, H, W) alpha maps (else None)."""
        maps = region_maps(prompts, tuple(images.shape[-2:]))
        x = images[image_index]
        if self.region_mode == "crop":
            return crop_images(x, crop_windows(maps, CROP_MARGIN)), None
        if self.region_mode == "mask-input":
            return x * maps[:, None].to(x.dtype), None
        return x, maps

    def _encode_region_inputs(self, images, prompts, image_index) -> torch.Tensor:
        x, alpha = self.region_inputs(images, prompts, image_index)
        visual = self.clip.visual
        pooled, _ = visual._pool(self._blocks(self._embeds(x, alpha), 0, self.depth))
        return pooled @ visual.proj if visual.proj is not None else pooled

    # --- text --------------------------------------------------------------------------------------------

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.clip.encode_text(tokens, normalize=normalize)

    # --- training forward ----------------------------------------------------------------------------------

    def forward(
        self, images: torch.Tensor, prompts: RegionPrompts, texts: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """One pass for training: images (B, 3, H, W), prompts with (B, R) slots, texts (M, ctx) tokens.

        Returns normalised ``image_features`` (B, D), ``region_features`` (N, D) for the N valid slots in
        row-major order, ``region_index`` (N, 2) [image, slot], ``text_features`` (M, D) and the two logit
        scales (exponentiated, capped at 100)."""
        x = self.trunk(images)
        valid = prompts.valid
        index = valid.nonzero()
        flat = prompts.select(valid)
        out = {
            "image_features": F.normalize(self.image_head(x), dim=-1),
            "region_features": self.encode_regions(images, flat, index[:, 0], trunk=x),
            "region_index": index,
            "logit_scale": self.clip.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp(),
            "region_logit_scale": self.region_logit_scale.clamp(max=MAX_LOGIT_SCALE).exp(),
        }
        if texts is not None:
            out["text_features"] = self.encode_text(texts)
        return out


def build_model(config: ModelConfig) -> tuple[MedPCLIP, Any]:
    """The model and its tokenizer (a callable: list of str → (n, context_length) token tensor)."""
    clip, tokenizer = create_backbone(config.name, config.pretrained, config.image_size)
    return MedPCLIP(clip, config), tokenizer
