"""Helpers shared by tests that compare corpora."""

from __future__ import annotations

import hashlib
from pathlib import Path

DEMO_SPECS = ["demo_ct", "demo_polyp", "demo_cxr"]
NON_DETERMINISTIC = {"report/index.html"}  # its timings section; everything else must be byte-identical


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` by relative path (except the report page's timings)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).as_posix() not in NON_DETERMINISTIC
    }
