"""Writers for fixtures in publishers' layouts, shared by the dataset tests: NIfTI volumes stored in a given
axis order, 2D images and masks, macOS AppleDouble junk files."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

# The header of a macOS ``._name`` AppleDouble file, as the real archives (MSD, WORD) carry next to each file.
APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        "


def save_nifti(
    path: Path, data: np.ndarray, axcodes: str = "RAS", zooms: tuple[float, ...] = (1.0, 1.0, 2.5)
) -> nib.Nifti1Image:
    """Store canonical (RAS+) ``data`` in the axis order ``axcodes`` with the matching affine (as scanners and
    converters do); 4D data keeps its extra axis last."""
    img = nib.Nifti1Image(data, np.diag([*zooms, 1.0]))
    if axcodes != "RAS":
        ornt = nib.orientations.ornt_transform(
            nib.orientations.axcodes2ornt(tuple("RAS")), nib.orientations.axcodes2ornt(tuple(axcodes))
        )
        img = img.as_reoriented(ornt)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return img


def save_image(path: Path, arr: np.ndarray, **kw) -> None:
    """A 2D image or mask written with Pillow (format from the suffix; ``kw`` such as JPEG ``quality``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)


def junk(path: Path) -> None:
    """A macOS AppleDouble ``._`` file (never an image, whatever its name says)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(APPLEDOUBLE)
