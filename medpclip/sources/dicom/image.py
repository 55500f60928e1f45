"""One single-frame DICOM file as a display-correct 2D image (for the image-table families)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medpclip.frame import ReadError
from medpclip.sources.base import DEFAULT_MAX_PIXELS, LoadedImage
from medpclip.sources.dicom.files import decode_pixels, read_dataset
from medpclip.sources.dicom.geometry import pixel_spacing
from medpclip.sources.dicom.intensity import frame_images


def read_dicom_image(
    path: Path, rel: str, *, voi: bool = True, grey: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS
) -> LoadedImage:
    """One single-frame DICOM file → display-correct 2D image with its intensity meaning and pixel spacing.

    CT → ``hu``; other grey images → ``uint8`` through the file's VOI LUT/window (``voi``) or when stored in 8
    bits, else ``raw`` values (modality LUT applied); MONOCHROME1 inverted in either case. Colour → RGB
    ``uint8`` (``grey`` → luminance). A multi-frame file is ``bad_dimensions`` here (no single 2D image)."""
    if not path.is_file():
        raise ReadError("missing_file", rel)
    ds = read_dataset(path, rel)
    stored = decode_pixels(ds, rel, max_pixels)
    if int(ds.get("NumberOfFrames") or 1) > 1:
        raise ReadError("bad_dimensions", f"{rel}: {int(ds.NumberOfFrames)} frames, expected one 2D image")
    ((array, intensity),) = list(frame_images(ds, stored, voi))
    if array.ndim == 3 and grey:
        from PIL import Image

        if array.dtype == np.uint8:
            array = np.asarray(Image.fromarray(array).convert("L"))
        else:
            array = array.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return LoadedImage(np.ascontiguousarray(array), intensity, pixel_spacing(ds))
