"""Build progress for people: one bar per dataset on a terminal, one plain line per unit elsewhere (CI, logs).

Driven by the build's callbacks (``on_plan``, ``on_unit``); knows nothing about Ray.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn


class BuildProgress:
    def __init__(self, console: Console):
        self.console = console
        self.live = console.is_terminal
        self.total = 0
        self.done = 0
        self.samples: dict[str, int] = {}
        self.started = time.monotonic()
        self.tasks: dict[str, TaskID] = {}
        self.progress = (
            Progress(
                TextColumn("{task.description:<18}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("units  {task.fields[samples]:>8} samples  {task.fields[rate]:>7.1f}/s"),
                TimeRemainingColumn(),
                console=console,
            )
            if self.live
            else None
        )

    def __enter__(self) -> BuildProgress:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def on_plan(self, plan: Any) -> None:
        self.total = len(plan.units)
        self.started = time.monotonic()
        per_dataset: dict[str, int] = {}
        for u in plan.units:
            per_dataset[u.dataset] = per_dataset.get(u.dataset, 0) + 1
        if self.progress is None:
            self.console.print(
                f"planned {self.total} units over {len(per_dataset)} datasets", highlight=False
            )
            return
        for name, n in per_dataset.items():
            self.tasks[name] = self.progress.add_task(name, total=n, samples=0, rate=0.0)

    def on_unit(self, stats: dict[str, Any]) -> None:
        self.done += 1
        name = stats["dataset"]
        self.samples[name] = self.samples.get(name, 0) + stats["n_samples"]
        if self.progress is not None:
            rate = sum(self.samples.values()) / max(time.monotonic() - self.started, 1e-6)
            self.progress.update(self.tasks[name], advance=1, samples=self.samples[name], rate=rate)
            return
        state = "kept" if stats.get("skipped") else f"{stats.get('seconds', 0):.1f}s"
        self.console.print(
            f"[{self.done}/{self.total}] {name} unit {stats['unit']:05d}: {stats['n_samples']} samples, "
            f"{stats['n_regions']} regions, {stats['n_rejects']} rejects ({state})",
            highlight=False,
        )
