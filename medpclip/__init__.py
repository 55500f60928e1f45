"""medpclip: build the region-level medical image–text corpus behind MedP-CLIP, then train and evaluate on it."""

__version__ = "0.1.0"
