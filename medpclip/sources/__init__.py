"""Readers, one package per format family (DESIGN §2, §3); ``registry.FAMILIES`` is the list of them.

Each family package has ``options.py`` (pydantic models, validated when a spec loads) and ``reader.py`` with
``discover(spec, root) -> Iterator[SourceItem]`` (``root`` is the dataset's folder under the raw root; items
sorted by case id, junk files skipped, paths relative to the raw root) and ``read(spec, raw_root, item) ->
Iterator[Frame]`` (raises ``ReadError`` for input it cannot read). Readers know formats and nothing else: no
windowing, resizing or region extraction. Shared I/O lives in ``_common`` and ``_shapes``.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): ``medpclip.specs`` imports family options through this package before any reader.
    if name in ("READERS", "FAMILIES", "get_reader"):
        from medpclip.sources import registry

        return registry.FAMILIES if name == "READERS" else getattr(registry, name)
    raise AttributeError(f"module 'medpclip.sources' has no attribute '{name}'")
