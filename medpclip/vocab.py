"""Closed vocabularies shared by specs and reader options (a leaf module: it imports nothing of medpclip, so
both can use it without importing each other)."""

from __future__ import annotations

from typing import Literal

Modality = Literal[
    "CT", "MR", "PET", "US", "XR", "endoscopy", "dermoscopy", "fundus", "pathology", "OCT", "other"
]
Split = Literal["train", "val", "test"]
SPLITS: tuple[str, ...] = ("train", "val", "test")
