"""The ``raster`` format family: ``options.py`` (checked when a spec loads), ``reader.py`` (discover, read;
its docstring documents the layouts and options).

Attributes resolve lazily from those modules (PEP 562): ``medpclip.specs`` imports ``options`` through the
package without importing the reader, which itself imports ``medpclip.specs``.
"""

from medpclip.sources.base import lazy_attributes

__getattr__ = lazy_attributes(__name__, ("options", "reader"))
