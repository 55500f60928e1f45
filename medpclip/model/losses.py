"""Contrastive losses with label-aware targets.

Plain CLIP treats every other pair in the batch as a negative. In a medical corpus that is wrong twice: many
images share one caption ("An axial CT image of the abdomen showing liver, …") and many regions are the
same concept (every slice has an aorta). Both losses here take a LABEL per row and per column; every
column with the row's label is a positive, and the target is the uniform distribution over positives
(multi-positive InfoNCE, as in UniCL / SupCon). With all labels distinct this is exactly CLIP's loss.

- image–caption: label = the caption text (identical captions are not negatives of each other);
- region–text: label = the region's concept (CUI, or the coarse category where no CUI is known), so two
  liver regions in a batch are not pushed apart, whichever of the liver's texts each drew.

Across workers, embeddings and labels are gathered (with gradients, padded to a common length) so the
negatives of every worker count, as open_clip does with ``gather_with_grad``.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.nn.functional as F

IGNORE = -1  # label of padding rows/columns (never a positive, never a negative)


def label_aware_contrastive(
    a: torch.Tensor,
    b: torch.Tensor,
    labels_a: torch.Tensor,
    labels_b: torch.Tensor,
    logit_scale: torch.Tensor,
) -> torch.Tensor:
    """Symmetric multi-positive InfoNCE between rows of ``a`` (n, D) and ``b`` (m, D), both L2-normalised.

    ``labels_*`` are int64; equal labels are positives; rows with label ``IGNORE`` take no part. A row with
    no positive among the columns is left out of its direction's mean. Returns a scalar (0 when empty).
    """
    keep_a, keep_b = labels_a != IGNORE, labels_b != IGNORE
    a, b, labels_a, labels_b = a[keep_a], b[keep_b], labels_a[keep_a], labels_b[keep_b]
    if a.shape[0] == 0 or b.shape[0] == 0:
        return (a.sum() + b.sum()) * 0.0
    with torch.autocast(device_type=a.device.type, enabled=False):  # fp32 logits, also under autocast
        logits = logit_scale.float() * (a.float() @ b.float().t())
    positive = (labels_a[:, None] == labels_b[None, :]).float()
    return 0.5 * (_soft_ce(logits, positive) + _soft_ce(logits.t(), positive.t()))


def _soft_ce(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    n_pos = positive.sum(dim=1)
    rows = n_pos > 0
    if not rows.any():
        return logits.sum() * 0.0
    target = positive[rows] / n_pos[rows, None]
    return -(target * F.log_softmax(logits[rows].float(), dim=1)).sum(dim=1).mean()


def gather_padded(x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All workers' rows (with gradients for this worker's) and labels; a no-op without torch.distributed.

    Workers may hold different numbers of rows: each pads to the largest with label ``IGNORE``."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, labels
    world = dist.get_world_size()
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    longest = int(max(s.item() for s in sizes))
    pad = longest - x.shape[0]
    x = F.pad(x, (0, 0, 0, pad))
    labels = F.pad(labels, (0, pad), value=IGNORE)
    from torch.distributed.nn.functional import all_gather as all_gather_with_grad

    with warnings.catch_warnings():  # deprecated in torch 2.14 for a private API; still the public one
        warnings.simplefilter("ignore", FutureWarning)
        xs = all_gather_with_grad(x)
    ls = [torch.empty_like(labels) for _ in range(world)]
    dist.all_gather(ls, labels)
    return torch.cat(list(xs)), torch.cat(ls)


def medpclip_loss(
    out: dict[str, torch.Tensor],
    caption_labels: torch.Tensor,
    region_labels: torch.Tensor,
    n_captions: int,
    region_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """The pre-training loss from the model's forward output.

    ``out["text_features"]`` holds the B captions first, then one text per valid region (same order as
    ``out["region_features"]``). ``caption_labels`` (B,) label the images and their captions;
    ``region_labels`` (N,) the regions and their texts (concept ids). Returns ``loss`` (total),
    ``image_loss`` and ``region_loss``.
    """
    text = out["text_features"]
    captions, region_texts = text[:n_captions], text[n_captions:]
    img, cap_l = gather_padded(out["image_features"], caption_labels)
    cap, _ = gather_padded(captions, caption_labels)
    image_loss = label_aware_contrastive(img, cap, cap_l, cap_l, out["logit_scale"])
    reg, reg_l = gather_padded(out["region_features"], region_labels)
    rtx, _ = gather_padded(region_texts, region_labels)
    region_loss = label_aware_contrastive(reg, rtx, reg_l, reg_l, out["region_logit_scale"])
    return {
        "loss": image_loss + region_weight * region_loss,
        "image_loss": image_loss.detach(),
        "region_loss": region_loss.detach(),
    }
