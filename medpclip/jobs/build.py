"""``ray job submit -- /path/to/.venv/bin/python -m medpclip.jobs.build --spec … --raw-root … --out …``

The job's driver runs ``medpclip build`` with the same arguments; Ray sets ``RAY_ADDRESS`` for a job, so the
build runs on the cluster the job was submitted to. Use the venv's absolute python path: job entrypoints run
with the raylet's PATH. ``--raw-root`` and ``--out`` may be object-storage URLs (``s3://bucket/prefix``): then
the nodes need no shared disk at all, only the package and the ``AWS_*`` environment.
"""

from __future__ import annotations

import sys

from medpclip.cli import app


def main(argv: list[str] | None = None) -> None:
    app(["build", *(sys.argv[1:] if argv is None else argv)], prog_name="medpclip.jobs.build")


if __name__ == "__main__":
    main()
