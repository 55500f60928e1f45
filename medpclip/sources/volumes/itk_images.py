"""ITK image files (MetaImage ``.mha``/``.mhd``, NRRD ``.nrrd``/``.nhdr``) read with SimpleITK and handed to the
volumes reader as a ``nib.Nifti1Image``, so that its reorientation, geometry checks and slicing apply unchanged.

- Axis order: SimpleITK's arrays are ``(z, y, x[, c])``; the image here holds ``(x, y, z[, c])``, nibabel's
  order (vector pixels, e.g. RGB, keep their components last; a 4D scalar image keeps its fourth axis last).
- Geometry: ITK physical space is LPS (x → patient's left, y → posterior); the voxel → LPS map is
  ``origin + direction · diag(spacing) · index``. Its first two rows flipped give the RAS affine nibabel uses.
  A 2D image (CAMUS echo frames) becomes one slice ``(x, y, 1)`` with a unit third axis.
- Reading is lazy: the header is read at once (size, pixel type, geometry), the voxels on first use, so the
  reader can check a volume's size against its limit before decoding it (as it does for NIfTI).
- Every failure is ``ReadError("unreadable_image", "<rel>: …")``: a header ITK cannot parse, a detached header
  (``.mhd``, ``.nhdr``) whose data file (``.raw``, ``.zraw``) is missing or shorter than the header says, a
  truncated ``.mha``/``.nrrd``. A ``.raw``/``.zraw`` file is never an image of its own (no geometry).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from medpclip.frame import ReadError
from medpclip.sources.volumes.options import DATA_SUFFIXES  # the data files of detached headers

ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
_DETACHED = (".mhd", ".nhdr")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK would print its warnings to stderr per file


def is_itk(name: str) -> bool:
    return name.lower().endswith(ITK_SUFFIXES)


def is_data_file(name: str) -> bool:
    return name.lower().endswith(DATA_SUFFIXES)


def detached_data_file(header: Path) -> str | None:
    """The data file a detached header names (MetaImage ``ElementDataFile = x.raw``, NRRD ``data file: x.raw``),
    relative to the header's folder; None for an attached header, ``LOCAL``, a file list or pattern, or a
    header that cannot be read as text (the reader then says what is wrong). Discovery lists it beside the
    header, so that it is hashed into the sources manifest and fetched with the case from object storage."""
    if not header.name.lower().endswith(_DETACHED):
        return None
    try:
        text = header.read_bytes()[:65536].decode("latin-1")
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition("=" if header.name.lower().endswith(".mhd") else ":")
        key = key.strip().lower()
        if sep and key in ("elementdatafile", "data file", "datafile"):
            name = value.strip()
            if not name or name.upper() in ("LOCAL", "LIST") or " " in name or "%" in name:
                return None
            return name
    return None


def load_itk(path: Path, rel: str) -> nib.Nifti1Image:
    """The image at ``path`` (``rel``: its name in messages) with voxels ``(x, y, z[, c])`` and its RAS
    affine; voxels are read when first used."""
    if is_data_file(rel):
        raise ReadError(
            "unreadable_image",
            f"{rel}: the data file of a MetaImage/NRRD header, not an image: name the header",
        )
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise ReadError("unreadable_image", f"{rel}: corrupt or unknown header: {_itk_message(e)}") from None
    dim = reader.GetDimension()
    if dim not in (2, 3, 4):
        raise ReadError("unreadable_image", f"{rel}: {dim}D image (2D, 3D or 4D expected)")
    size = tuple(int(s) for s in reader.GetSize())  # x, y, z[, t]
    components = int(reader.GetNumberOfComponents())
    dtype = _dtype_of(reader.GetPixelID(), dim, components)
    shape = size + ((components,) if components > 1 else ())
    # dtype given: nibabel would otherwise refuse int64 voxels (sitkInt64 labels) without an explicit one
    return nib.Nifti1Image(_ItkVoxels(reader, rel, shape, dtype), _ras_affine(reader, dim), dtype=dtype)


def _ras_affine(reader: sitk.ImageFileReader, dim: int) -> np.ndarray:
    """voxel (x, y, z) index → RAS mm, from ITK's spacing, origin and direction (LPS). 2D: unit z; 4D: the
    spatial part (the first three axes)."""
    n = min(dim, 3)
    direction = np.asarray(reader.GetDirection(), dtype=np.float64).reshape(dim, dim)[:n, :n]
    lps = np.eye(4)
    lps[:n, :n] = direction * np.asarray(reader.GetSpacing()[:n], dtype=np.float64)
    lps[:n, 3] = reader.GetOrigin()[:n]
    return _LPS_TO_RAS @ lps


def _dtype_of(pixel_id: int, dim: int, components: int) -> np.dtype:
    """numpy dtype of an ITK pixel type (from an empty image of it; SimpleITK keeps no public table)."""
    probe = sitk.Image([1] * dim, pixel_id, components) if components > 1 else sitk.Image([1] * dim, pixel_id)
    return sitk.GetArrayViewFromImage(probe).dtype


class _ItkVoxels:
    """Array-like voxels of one ITK file, decoded on first use (nibabel calls ``np.asanyarray`` on it)."""

    # not a nibabel proxy: nibabel would read a voxel to learn the dtype, which the header already gives
    is_proxy = False

    def __init__(self, reader: sitk.ImageFileReader, rel: str, shape: tuple[int, ...], dtype: np.dtype):
        self._reader, self._rel = reader, rel
        self.shape, self.dtype = shape, dtype
        self.ndim = len(shape)
        self._data: np.ndarray | None = None

    def _array(self) -> np.ndarray:
        if self._data is None:
            try:
                image = self._reader.Execute()
            except RuntimeError as e:
                what = (
                    "its header reads but its voxel data does not (the data file it names is missing or "
                    "shorter than the header says)"
                    if self._rel.lower().endswith(_DETACHED)
                    else "truncated or corrupt voxel data"
                )
                raise ReadError("unreadable_image", f"{self._rel}: {what}: {_itk_message(e)}") from None
            arr = sitk.GetArrayFromImage(image)  # (z, y, x[, c]) / (t, z, y, x[, c])
            spatial = image.GetDimension()
            order = tuple(reversed(range(spatial))) + tuple(range(spatial, arr.ndim))
            data = np.asarray(arr.transpose(order))
            if data.shape != self.shape:
                raise ReadError(
                    "unreadable_image",
                    f"{self._rel}: voxels {data.shape} differ from the header's {self.shape}",
                )
            self._data = data
        return self._data

    def __array__(self, dtype=None, copy=None):
        data = self._array()
        return data if dtype is None else data.astype(dtype)

    def __getitem__(self, key):
        return self._array()[key]


def _itk_message(e: RuntimeError) -> str:
    """ITK's exception text without its source-file prefix: the ``ITK ERROR``/``sitk::ERROR`` line on."""
    text = " ".join(str(e).split())
    for marker in ("ITK ERROR:", "sitk::ERROR:"):
        at = text.find(marker)
        if at >= 0:
            return text[at:][:300]
    return text[:300]
