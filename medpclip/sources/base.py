"""What a reader family is (DESIGN §3): its options model, its unit size, ``discover`` and ``read``.

This module is the bottom of the reader layer: it imports nothing of the readers or of ``medpclip.specs``,
so ``specs`` can build its ``format`` union from the families' option models (``sources/registry.py``) and
every option error is caught when a spec loads, not when a build reaches the dataset.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any, Protocol, Union

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag

from medpclip.frame import Intensity, ReadError

if TYPE_CHECKING:
    from medpclip.frame import Frame, SourceItem
    from medpclip.specs import DatasetSpec


class Options(BaseModel):
    """Base of each family's options: unknown keys are refused, so a typo in a spec fails loudly."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# Pixels (voxels) one image or volume may have, checked against the HEADER before anything is allocated:
# 2^30 is a 1024 × 1024 × 1024 volume (2 GiB as int16), above the largest public CT (512 × 512 × ~1500).
DEFAULT_MAX_PIXELS = 1 << 30


class ReaderOptions(Options):
    """Options every family takes. ``max_pixels``: an image or volume whose header claims more pixels (voxels,
    × frames × samples per pixel) is refused as ``too_large`` before its data is read."""

    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=1)


@dataclass
class LoadedImage:
    """One decoded 2D image as every reader gets it from ``_common.read_image``: display-correct pixels,
    what their values mean, and the (row, col) pixel spacing in mm when the file states it (DICOM)."""

    array: np.ndarray
    intensity: Intensity
    spacing_mm: tuple[float, float] | None = None
    source_jpeg: bytes | None = None  # the file's bytes when it is an RGB JPEG decoded without conversion


def check_pixels(shape: Iterable[int], rel: str, max_pixels: int, what: str = "image") -> None:
    """Refuse a header's claimed size before anything of that size is allocated: ``bad_dimensions`` for a
    dimension below 1, ``too_large`` above ``max_pixels`` (format option, default 2^30)."""
    dims = [int(d) for d in shape]
    if any(d < 1 for d in dims):
        raise ReadError("bad_dimensions", f"{rel}: {what} shape {tuple(dims)} has a dimension below 1")
    n = int(np.prod(dims, dtype=object))
    if n > max_pixels:
        raise ReadError(
            "too_large",
            f"{rel}: the header claims a {' x '.join(map(str, dims))} {what} ({n:,} pixels), over the limit "
            f"of {max_pixels:,} (format.options.max_pixels); not read",
        )


def compile_regex(pattern: str, groups: tuple[str, ...] = ()) -> re.Pattern[str]:
    """``pattern`` compiled, or a ``ValueError`` pydantic reports on the field: ``re.error`` is not a
    ``ValueError``, so a validator that let it through would crash spec loading with a bare traceback."""
    try:
        compiled = re.compile(pattern)
    except re.error as e:
        raise ValueError(f"invalid regex: {e}") from None
    for group in groups:
        if group not in compiled.groupindex:
            raise ValueError(f"regex needs a named group (?P<{group}>...)")
    return compiled


def regex_with(*groups: str) -> Any:
    """A ``str`` option type that must compile and hold the named ``groups``."""

    def check(v: str) -> str:
        compile_regex(v, groups)
        return v

    return Annotated[str, AfterValidator(check)]


Regex = regex_with()


def layout_union(layouts: dict[str, type[ReaderOptions]], default: str | None = None) -> Any:
    """One family's options as a union of per-layout models tagged by ``layout`` (``default`` when a spec
    leaves it out). Pydantic names the layout taken in an error's location (``format.options.msd.x``);
    ``medpclip.specs`` drops that tag, as it drops the family's."""
    names = ", ".join(f"'{name}'" for name in layouts)

    def layout_of(value: Any) -> str | None:
        layout = value.get("layout", default) if isinstance(value, dict) else getattr(value, "layout", None)
        return layout if isinstance(layout, str) else None

    members = tuple(Annotated[model, Tag(name)] for name, model in layouts.items())
    return Annotated[
        Union[members],  # noqa: UP007 — a runtime tuple of members
        Discriminator(
            layout_of,
            custom_error_type="invalid_layout",
            custom_error_message=f"layout must be one of {names}",
        ),
    ]


def check_glob(pattern: str) -> str:
    """A glob relative to the dataset folder, checked when the spec loads: pathlib refuses a bad one only
    when discovery first runs it (``NotImplementedError`` for an absolute one, ``ValueError`` for ``a**``)."""
    path = PurePosixPath(pattern)
    if not pattern.strip():
        raise ValueError("a glob must not be empty")
    if path.is_absolute() or re.match(r"^[A-Za-z]:[\\/]", pattern):
        raise ValueError(f"glob '{pattern}' is absolute: give it relative to the dataset folder")
    if ".." in path.parts:
        raise ValueError(f"glob '{pattern}' leaves the dataset folder ('..')")
    if any("**" in part and part != "**" for part in path.parts):
        raise ValueError(f"glob '{pattern}': '**' must be a whole path component (e.g. '**/*.png')")
    return pattern


def check_globs(patterns: str | list[str]) -> str | list[str]:
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        check_glob(pattern)
    return patterns


Glob = Annotated[str, AfterValidator(check_glob)]
# one glob, or several whose matches are joined; checked as a whole so an error names the field, not the
# branch of a ``str | list`` union pydantic tried
Globs = Annotated[str | list[str], AfterValidator(check_globs)]


class Reader(Protocol):
    """A format family. ``discover(spec, root)`` lists the cases under the dataset folder ``root`` (sorted by
    case id, junk skipped, paths relative to the raw root) and may return, as its generator's value, notes
    on the dataset as a whole (``frame.DiscoveryNote``: plan-stage rejects with a summary line);
    ``read(spec, raw_root, item)`` turns one case into Frames and raises ``ReadError`` for input it cannot
    read. Readers know formats and nothing else."""

    family: str
    options: Any  # a ReaderOptions model, or a union of them tagged by ``layout`` (``layout_union``)
    unit_items: int  # cases per work unit by default: a few volumes or a few hundred 2D images

    def discover(self, spec: DatasetSpec, root: Path) -> Iterator[SourceItem]: ...

    def read(self, spec: DatasetSpec, raw_root: Path, item: SourceItem) -> Iterator[Frame]: ...


def lazy_attributes(package: str, modules: tuple[str, ...]) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) for a family package: ``volumes.discover`` and
    ``from medpclip.sources.volumes import VolumeOptions`` resolve from its submodules on first use, so
    importing the package (as ``specs`` does for ``options``) does not import the reader."""

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        for sub in modules:
            module = importlib.import_module(f"{package}.{sub}")
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(f"module '{package}' has no attribute '{name}'")

    return __getattr__
