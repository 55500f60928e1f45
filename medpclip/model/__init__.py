"""MedP-CLIP, the library part: region prompt encoder, the region-prompt CLIP on an open_clip backbone, losses.

No I/O and no training policy here: ``medpclip.train`` and ``medpclip.evaluate`` are the applications.
"""

from medpclip.model.losses import label_aware_contrastive, medpclip_loss
from medpclip.model.medpclip import MODEL_CONFIGS, MedPCLIP, ModelConfig, ModelError, build_model
from medpclip.model.prompt_encoder import KINDS, PromptEncoder, RegionPrompts

__all__ = [
    "KINDS",
    "MODEL_CONFIGS",
    "MedPCLIP",
    "ModelConfig",
    "ModelError",
    "PromptEncoder",
    "RegionPrompts",
    "build_model",
    "label_aware_contrastive",
    "medpclip_loss",
]
