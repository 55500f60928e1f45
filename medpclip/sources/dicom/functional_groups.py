"""Functional groups of enhanced multi-frame files: a frame's macro, a frame's intensity view."""

from __future__ import annotations

from pydicom.dataset import Dataset


def functional_group(ds: Dataset, frame: int, sequence: str) -> Dataset | None:
    """The first item of a functional group macro for one frame: per-frame first, then shared."""
    per = ds.get("PerFrameFunctionalGroupsSequence")
    if per is not None and frame < len(per) and sequence in per[frame] and per[frame][sequence].value:
        return per[frame][sequence][0]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and sequence in shared[0] and shared[0][sequence].value:
        return shared[0][sequence][0]
    return None


def frame_view(ds: Dataset, frame: int) -> Dataset:
    """A dataset for one frame's intensity: the per-frame Pixel Value Transformation and Frame VOI LUT (which
    ``apply_modality_lut`` on the whole dataset ignores) copied over the top-level values."""
    pvt = functional_group(ds, frame, "PixelValueTransformationSequence")
    voi = functional_group(ds, frame, "FrameVOILUTSequence")
    if pvt is None and voi is None:
        return ds
    view = Dataset()
    for key in (
        "Modality", "PhotometricInterpretation", "BitsStored", "BitsAllocated", "PixelRepresentation",
        "RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth", "VOILUTFunction",
    ):  # fmt: skip
        if key in ds:
            setattr(view, key, ds[key].value)
    for src in (pvt, voi):
        if src is None:
            continue
        for key in ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth", "VOILUTFunction"):
            if key in src:
                setattr(view, key, src[key].value)
    return view
