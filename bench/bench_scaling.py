"""Corpus build on a local Ray: scaling from 1 to 2 workers, and peak memory at 1× and 10× the data.

Data: generated 512×512×100 abdominal CT cases (``bench/volumes.py``, BTCV's 13 labels, MSD layout), one
case per work unit, cached under ``bench/data/scaling/``. Every build runs in a fresh child process (this
module with ``--child``) that runs ``build_corpus``'s public steps in its order and times each: plan
(``prepare_build``, ``force=True``, fresh output folder), ray start (``ray_session``: ``ray.init`` of a local
Ray with ``num_cpus`` = K), units (``run_units``: one Ray task per unit), dedup (``settle_splits``),
ray stop (leaving ``ray_session``), finish (``finish_build``) and report (``write_report``).
``build_corpus`` itself keeps these timings only in the report's HTML, and a fresh process per build keeps
one build's memory high-water marks out of the next one's.

1. **Scaling** (goal: ≥ 1.7× with 2 workers). The same ``scaling_units`` cases built with K = 1 and K = 2,
   interleaved over ``rounds`` rounds (the order flips every round, so drift in the machine's load hits
   both alike; raw files are read once beforehand so that no run pays for a cold page cache). The number
   that matters is the wall time of the **units** phase: it is the part that grows with the data and that
   more workers share. The rest is a fixed cost per build that workers cannot share: starting Ray (GCS,
   raylet, agents, dashboard head, monitor, prestarted workers: seconds), stopping it, and the driver-side
   finish (DuckDB dedup check, indexes, build.json, the HTML report with its contact sheets). The units
   phase has a fixed part of its own, reported as **start-up**: before the first task starts (a worker
   takes the task's title, seen by the sampler below within 0.15 s) the first worker imports medpclip and
   reads its case (until issue 8's change, Ray Data also started two actors of its own here: 1.4–3.2 s);
   **after** (first task started → last unit's row in the driver) is the part that 2 workers can halve. End-to-end times show how much of a
   small build the fixed costs are. Reported: medians over rounds and the medians of the per-round ratios
   t(K=1)/t(K=2) for units, after and end-to-end. 16 units on 2 workers reach 2× only if the units take
   equally long and 2 cores are free: on a machine with exactly 2 cores the driver, Ray's services and
   whatever else runs there need CPU too, so the units phase also records where the CPU went (average
   cores, from ``/proc`` CPU times at the phase's first and last moment): the task workers, the driver, Ray
   Data's actors, Ray's services, this harness, every other process on the machine, the hypervisor's steal
   and idle; plus the 1-minute load average before and after each build, the seconds each unit took inside
   its worker (longer with 2 workers than with 1: contended cores, not Ray), the task workers' CPU seconds
   per unit and the mean unit concurrency (sum of unit seconds / phase wall time).

2. **Memory** (goal: the 10× build peaks at ≤ 1.2× the 1× peak). ``cases`` and 10 × ``cases`` units with
   K = ``memory_cpus`` (``cases`` ≥ K, so that every task worker runs at 1× too). A thread of this process
   samples the child's whole process tree every 0.15 s (the driver and everything ``ray.init`` starts: GCS,
   raylet, agents, monitor, dashboard head, log monitor, workers, actors — all its descendants):
   (a) the largest simultaneous sum of RSS over the tree; (b) the sum over processes of each one's own
   high-water mark (``VmHWM`` in ``/proc/<pid>/status``), an upper bound since the peaks need not coincide.
   Both count shared pages (libraries, the object store) once per process that maps them, so they overstate
   what the machine spends, alike at 1× and 10×. Also reported, to show where the memory goes: the driver's
   own high-water mark, the largest task worker's, and the sums over Ray actors and Ray's services.

Usage: ``python -m bench.bench_scaling [cases [scaling_units [rounds [memory_cpus]]]]`` (defaults 3 16 3 2).
16 units, not 8: at 0.8 s a unit, the phase's 0.6 s start-up and an 8-unit tail hid the scaling (1.57× with
8 units, 1.77× with 16, both on 2026-12-08, quiet 2-core machines).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from bench.common import save_result
from bench.volumes import FOLDER, write_ct_dataset

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data" / "scaling"
SAMPLE_EVERY_S = 0.15
MIB = 2**20
CORES_ORDER = (
    "workers",
    "driver",
    "ray actors",
    "ray services",
    "harness",
    "other processes",
    "steal",
    "idle",
)


# --- processes ---------------------------------------------------------------------------------------------


def _describe(p: psutil.Process, driver_pid: int) -> tuple[str, str]:
    """(label, kind) of a process of a local Ray. Labels: ``gcs_server``, ``raylet``, a ``ray::…`` title
    (workers: ``ray::IDLE``, ``ray::run_unit_json``…, actors, agents) or the script a Python service runs
    (``monitor.py``, ``dashboard.py``, ``log_monitor.py``). A worker or agent shows its script until it sets
    its title, so the kind comes from either."""
    if p.pid == driver_pid:
        return "driver", "driver"
    name = p.name()
    if name in ("gcs_server", "raylet"):
        return name, "ray services"
    cmd = p.cmdline()
    if cmd and cmd[0].startswith("ray::"):
        if cmd[0].endswith("Agent"):
            return cmd[0], "ray services"
        # Ray's internal actors (Ray Data's _StatsActor, …; none in a build since issue 8) are workers too.
        return cmd[0], "ray actors" if cmd[0].startswith("ray::_") else "worker"
    script = next((Path(a).name for a in cmd[1:] if a.endswith(".py")), name)
    return script, "worker" if script == "default_worker.py" else "ray services"


def _vm_hwm(pid: int) -> int:
    """The process's peak resident set so far, in bytes (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class TreeSampler:
    """Samples the memory and CPU time of a process and all its descendants in a background thread."""

    def __init__(self, root_pid: int, every_s: float = SAMPLE_EVERY_S) -> None:
        self.root = psutil.Process(root_pid)
        self.every_s = every_s
        self.procs: dict[int, dict[str, Any]] = {}
        self.handles: dict[int, psutil.Process] = {}
        self.peak_sum_rss = 0
        self.peak_by_kind: dict[str, int] = {}  # the tree's RSS by kind at the moment of the peak sum
        self.n_samples = 0
        self.first_task_at: float | None = None  # time.monotonic() when a worker first showed a task title
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tree-sampler", daemon=True)

    def start(self) -> TreeSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.every_s)

    def _sample(self) -> None:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:  # the child has exited; its last samples are in
            return
        total = 0
        by_kind: dict[str, int] = {}
        for p in procs:
            try:
                rss = p.memory_info().rss
                cpu = p.cpu_times()
                label, kind = _describe(p, self.root.pid)
            except psutil.Error:  # exited between the listing and the read
                continue
            rec = self.procs.get(p.pid)
            if rec is None:
                rec = self.procs[p.pid] = {"labels": [], "kind": kind, "max_rss": 0, "hwm": 0}
                self.handles[p.pid] = p
            if rec["kind"] != "ray actors":  # an actor's worker shows ray::IDLE before its title
                rec["kind"] = kind
            if label not in rec["labels"]:
                rec["labels"].append(label)
            if (
                self.first_task_at is None
                and kind == "worker"
                and label not in ("ray::IDLE", "default_worker.py")
            ):
                self.first_task_at = time.monotonic()
            rec["max_rss"] = max(rec["max_rss"], rss)
            rec["hwm"] = max(rec["hwm"], _vm_hwm(p.pid), rss)
            rec["cpu_s"] = cpu.user + cpu.system
            total += rss
            by_kind[rec["kind"]] = by_kind.get(rec["kind"], 0) + rss
        self.n_samples += 1
        if total > self.peak_sum_rss:
            self.peak_sum_rss, self.peak_by_kind = total, by_kind

    def summary(self) -> dict[str, Any]:
        procs = self.procs.values()

        def hwm(kind: str) -> list[int]:
            return [r["hwm"] for r in procs if r["kind"] == kind] or [0]

        return {
            "sampler_samples": self.n_samples,
            "processes": len(self.procs),
            "peak_sum_rss_mib": round(self.peak_sum_rss / MIB, 1),
            "peak_sum_rss_by_kind_mib": {k: round(v / MIB, 1) for k, v in sorted(self.peak_by_kind.items())},
            "sum_hwm_mib": round(sum(r["hwm"] for r in procs) / MIB, 1),
            "driver_hwm_mib": round(max(hwm("driver")) / MIB, 1),
            "largest_worker_hwm_mib": round(max(hwm("worker")) / MIB, 1),
            "workers": sum(1 for r in procs if r["kind"] == "worker"),
            "ray_services_sum_hwm_mib": round(sum(hwm("ray services")) / MIB, 1),
            "ray_actors_sum_hwm_mib": round(sum(hwm("ray actors")) / MIB, 1),
            "per_process": [
                {
                    "labels": r["labels"],
                    "kind": r["kind"],
                    "hwm_mib": round(r["hwm"] / MIB, 1),
                    "max_rss_mib": round(r["max_rss"] / MIB, 1),
                    "cpu_s": round(r.get("cpu_s", 0.0), 2),
                }
                for r in sorted(procs, key=lambda r: -r["hwm"])
            ],
        }

    def still_running(self) -> list[str]:
        """Processes of the tree that outlived the child (a Ray that did not shut down)."""
        alive = []
        for pid, p in self.handles.items():
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{pid} {self.procs[pid]['labels'][-1]}")
            except psutil.Error:
                pass
        return alive


# --- child: one build ---------------------------------------------------------------------------------------


def _cpu_snapshot() -> dict[str, Any]:
    """CPU seconds so far: this process's tree by kind (per pid), the harness (our parent), the machine."""
    me = psutil.Process()
    per_pid: dict[int, tuple[str, float]] = {}
    for p in [me, *me.children(recursive=True)]:
        try:
            c = p.cpu_times()
            per_pid[p.pid] = (_describe(p, me.pid)[1], c.user + c.system)
        except psutil.Error:
            pass
    h = psutil.Process(os.getppid()).cpu_times()
    return {
        "t": time.perf_counter(),
        # CLOCK_MONOTONIC on Linux: one clock for every process, so the harness's samples line up with it
        "mono": time.monotonic(),
        "load": os.getloadavg(),
        "per_pid": per_pid,
        "harness": h.user + h.system,
        "machine": psutil.cpu_times()._asdict(),
    }


def _cores(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    """Average cores used between two snapshots, by whom. ``other processes`` is the machine's busy time
    less this tree and the harness: everyone else's work on the shared machine."""
    wall = b["t"] - a["t"]
    used: dict[str, float] = {"workers": 0.0, "driver": 0.0, "ray actors": 0.0, "ray services": 0.0}
    for pid, (kind, cpu) in b["per_pid"].items():
        used["workers" if kind == "worker" else kind] += cpu - a["per_pid"].get(pid, (kind, 0.0))[1]
    used["harness"] = b["harness"] - a["harness"]
    d = {k: b["machine"][k] - a["machine"][k] for k in b["machine"]}
    busy = d["user"] + d["nice"] + d["system"] + d.get("irq", 0) + d.get("softirq", 0)
    used["other processes"] = max(busy - sum(used.values()), 0.0)
    used["steal"] = d.get("steal", 0.0)
    used["idle"] = d["idle"] + d.get("iowait", 0.0)
    return {k: round(v / wall, 3) for k, v in used.items()}


def child(spec_path: str, raw_root: str, out: str, num_cpus: str, report: str) -> None:
    """One build, step by step in ``build_corpus``'s order (which books Ray's shutdown under "finish"; here
    it is "ray stop"); writes the timings and the units phase's CPU accounting to ``report``."""
    from medpclip.corpus.build import finish_build, prepare_build, run_units, settle_splits
    from medpclip.qa.report import write_report
    from medpclip.raysession import ray_session
    from medpclip.specs import load_spec_file

    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[step] = now - clock
        clock = now

    plan = prepare_build(
        [load_spec_file(Path(spec_path))], Path(raw_root), Path(out), max_side=512, force=True
    )
    lap("plan")
    units: list[dict[str, Any]] = []
    with ray_session(None, int(num_cpus)):
        lap("ray start")
        before = _cpu_snapshot()
        for stats in run_units(plan.units):
            units.append(
                {
                    "done_s": time.perf_counter() - before["t"],
                    "seconds": stats["seconds"],
                    "samples": stats["n_samples"],
                }
            )
        after = _cpu_snapshot()
        lap("units")
        plan, again = settle_splits(plan)
        lap("dedup")
    lap("ray stop")
    build = finish_build(plan)
    lap("finish")
    write_report(plan.out, build, timings)
    lap("report")
    wall = after["t"] - before["t"]
    cores = _cores(before, after)
    result = {
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "units": len(units),
        "units_rerun_by_dedup": len(again),
        "samples": build["totals"]["samples"],
        "unit_seconds": [round(u["seconds"], 3) for u in units],
        # When the driver got each unit's stats (ray.wait returns as a task ends); unit start times come
        # from the harness's samples instead.
        "unit_done_s": [round(u["done_s"], 3) for u in units],
        "units_phase_wall_s": round(wall, 3),
        "units_phase_start_monotonic": before["mono"],
        "mean_unit_concurrency": round(sum(u["seconds"] for u in units) / wall, 3),
        "worker_cpu_s_per_unit": round(cores["workers"] * wall / len(units), 3),
        "units_phase_cores": cores,
        "units_phase_load": {"start": before["load"], "end": after["load"]},
    }
    Path(report).write_text(json.dumps(result, indent=2) + "\n")


# --- parent ------------------------------------------------------------------------------------------------


def _dataset(name: str, n_cases: int) -> tuple[Path, Path]:
    raw = DATA / name
    return write_ct_dataset(raw, n_cases), raw


def _warm_page_cache(raw: Path) -> None:
    for p in sorted((raw / FOLDER).rglob("*.nii.gz")):
        with open(p, "rb") as f:
            while f.read(1 << 24):
                pass


def run_build(spec: Path, raw: Path, name: str, num_cpus: int) -> dict[str, Any]:
    """One build in a fresh child process, its process tree sampled from here."""
    out = DATA / "out" / name
    shutil.rmtree(out, ignore_errors=True)
    report, log = DATA / "out" / f"{name}.json", DATA / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    report.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for k, v in (("RAY_AUTH_MODE", "disabled"), ("RAY_USAGE_STATS_ENABLED", "0"), ("PYTHONHASHSEED", "0")):
        env.setdefault(k, v)
    cmd = [
        sys.executable,
        "-m",
        "bench.bench_scaling",
        "--child",
        *map(str, (spec, raw, out, num_cpus, report)),
    ]
    load_before = os.getloadavg()
    started = time.perf_counter()
    with open(log, "wb") as f:
        # cwd = the repository root: local Ray workers put the driver's cwd on sys.path
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
        sampler = TreeSampler(proc.pid).start()
        try:
            rc = proc.wait()
        except BaseException:  # interrupted: take the build down with us (Ray's processes share its fate)
            proc.terminate()
            proc.wait()
            raise
        finally:
            sampler.stop()
    process_wall = time.perf_counter() - started
    load_after = os.getloadavg()
    if rc != 0:
        raise RuntimeError(f"build {name} (num_cpus={num_cpus}) failed with exit {rc}; see {log}")
    result = json.loads(report.read_text())
    if sampler.first_task_at is None:
        raise RuntimeError(f"build {name}: no worker was ever seen running a task")
    # Before the first unit starts: the first task's worker imports medpclip.
    started = sampler.first_task_at - result["units_phase_start_monotonic"]
    result.update(
        first_unit_started_s=round(started, 3),
        units_after_start_s=round(result["units_phase_wall_s"] - started, 3),
    )
    result.update(
        name=name,
        num_cpus=num_cpus,
        end_to_end_s=round(sum(result["timings_s"].values()), 3),
        process_wall_s=round(process_wall, 3),
        load_before=[round(x, 2) for x in load_before],
        load_after=[round(x, 2) for x in load_after],
        memory=sampler.summary(),
        left_running=sampler.still_running(),
    )
    shutil.rmtree(out, ignore_errors=True)
    os.sync()  # the build's writes hit the disk now, not during the next build
    return result


def _med(runs: list[dict[str, Any]], get) -> float:
    return statistics.median(get(r) for r in runs)


def main(cases: int = 3, scaling_units: int = 16, rounds: int = 3, memory_cpus: int = 2) -> dict:
    scale_spec, scale_raw = _dataset(f"units{scaling_units}", scaling_units)
    x1_spec, x1_raw = _dataset("x1", cases)
    x10_spec, x10_raw = _dataset("x10", 10 * cases)

    _warm_page_cache(scale_raw)
    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    for r in range(rounds):
        for k in (1, 2) if r % 2 == 0 else (2, 1):
            runs[k].append(run_build(scale_spec, scale_raw, f"scale-k{k}-r{r}", k))
            print(f"  scaling round {r} K={k}: units {runs[k][-1]['timings_s']['units']:.1f} s", flush=True)
    memory = {}
    for name, spec, raw in (("1x", x1_spec, x1_raw), ("10x", x10_spec, x10_raw)):
        _warm_page_cache(raw)
        memory[name] = run_build(spec, raw, f"memory-{name}", memory_cpus)
        print(
            f"  memory {name}: peak sum RSS {memory[name]['memory']['peak_sum_rss_mib']:.0f} MiB", flush=True
        )
    params = {
        "case": "512x512x100 CT, 13 labels, 1 case per unit",
        "cases": cases,
        "scaling_units": scaling_units,
        "rounds": rounds,
        "memory_cpus": memory_cpus,
        "max_side": 512,
        "sample_every_s": SAMPLE_EVERY_S,
    }
    result = summarize(params, runs, memory)
    _print(result)
    save_result("scaling", result)
    return result


def summarize(params: dict[str, Any], runs: dict[int, list[dict]], memory: dict[str, dict]) -> dict[str, Any]:
    """The result document: medians, ratios, and every raw number they come from."""
    phases = {
        "units": lambda r: r["timings_s"]["units"],
        "units_after_start": lambda r: r["units_after_start_s"],
        "end_to_end": lambda r: r["end_to_end_s"],
    }
    speedups = {
        phase: [get(a) / get(b) for a, b in zip(runs[1], runs[2], strict=True)]
        for phase, get in phases.items()
    }
    scaling = {}
    for k, rs in runs.items():
        samples = rs[0]["samples"]
        units_s = _med(rs, lambda r: r["timings_s"]["units"])
        e2e_s = _med(rs, lambda r: r["end_to_end_s"])
        scaling[f"K={k}"] = {
            "units_s": round(units_s, 2),
            "units_samples_per_s": round(samples / units_s, 1),
            "first_unit_started_s": round(_med(rs, lambda r: r["first_unit_started_s"]), 2),
            "units_after_start_s": round(_med(rs, lambda r: r["units_after_start_s"]), 2),
            "end_to_end_s": round(e2e_s, 2),
            "end_to_end_samples_per_s": round(samples / e2e_s, 1),
            "median_step_s": {
                step: round(_med(rs, lambda r, s=step: r["timings_s"][s]), 2) for step in rs[0]["timings_s"]
            },
            "median_unit_seconds": round(statistics.median(s for r in rs for s in r["unit_seconds"]), 2),
            "mean_unit_concurrency": round(_med(rs, lambda r: r["mean_unit_concurrency"]), 2),
            "worker_cpu_s_per_unit": round(_med(rs, lambda r: r["worker_cpu_s_per_unit"]), 2),
            "load_1min_before": [r["load_before"][0] for r in rs],
            "other_processes_cores": [r["units_phase_cores"]["other processes"] for r in rs],
            "units_phase_cores": {
                who: round(_med(rs, lambda r, w=who: r["units_phase_cores"][w]), 2)
                for who in rs[0]["units_phase_cores"]
            },
        }
    m1, m10 = memory["1x"]["memory"], memory["10x"]["memory"]
    return {
        "bench": "scaling",
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
        },
        "params": params,
        "scaling": {
            "samples": runs[1][0]["samples"],
            **scaling,
            **{f"speedup_{p}_median": round(statistics.median(v), 3) for p, v in speedups.items()},
            **{f"speedup_{p}_per_round": [round(x, 3) for x in v] for p, v in speedups.items()},
            "goal_speedup": 1.7,
        },
        "memory": {
            "1x": {"units": memory["1x"]["units"], "samples": memory["1x"]["samples"], **_brief(m1)},
            "10x": {"units": memory["10x"]["units"], "samples": memory["10x"]["samples"], **_brief(m10)},
            "ratio_peak_sum_rss": round(m10["peak_sum_rss_mib"] / m1["peak_sum_rss_mib"], 3),
            "ratio_sum_hwm": round(m10["sum_hwm_mib"] / m1["sum_hwm_mib"], 3),
            "goal_ratio": 1.2,
        },
        "runs": {"scaling": runs[1] + runs[2], "memory": [memory["1x"], memory["10x"]]},
    }


def _brief(m: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in m.items() if k != "per_process"}


def _print(result: dict[str, Any]) -> None:
    s = result["scaling"]
    print(
        f"scaling: {result['params']['scaling_units']} units, {s['samples']} samples, medians over rounds (s)"
    )
    head = ("workers", "units", "start-up", "after", "samples/s", "e2e", "samples/s", "ray on", "ray off")
    print(f"{head[0]:7s}" + "".join(f" {h:>9s}" for h in head[1:]))
    for k in (1, 2):
        r = s[f"K={k}"]
        step = r["median_step_s"]
        cells = (
            r["units_s"],
            r["first_unit_started_s"],
            r["units_after_start_s"],
            r["units_samples_per_s"],
            r["end_to_end_s"],
            r["end_to_end_samples_per_s"],
            step["ray start"],
            step["ray stop"],
        )
        print(f"{k:<7d}" + "".join(f" {c:9.1f}" for c in cells))
    print(
        f"speed-up 2 vs 1 (median of per-round ratios): units {s['speedup_units_median']:.2f}x, after start-up "
        f"{s['speedup_units_after_start_median']:.2f}x, end-to-end {s['speedup_end_to_end_median']:.2f}x"
        f" (goal >= {s['goal_speedup']}); units per round {s['speedup_units_per_round']}"
    )
    print("units phase, average cores used (median over rounds):")
    for k in (1, 2):
        r = s[f"K={k}"]
        cores = r["units_phase_cores"]
        print(f"  K={k}: " + ", ".join(f"{who} {cores[who]:.2f}" for who in CORES_ORDER))
        print(
            f"       unit {r['median_unit_seconds']:.2f} s wall in the worker, {r['worker_cpu_s_per_unit']:.2f} s"
            f" worker CPU per unit, concurrency {r['mean_unit_concurrency']:.2f},"
            f" 1-min load before each build {r['load_1min_before']},"
            f" other processes' cores each build {r['other_processes_cores']}"
        )
    m = result["memory"]
    print(f"memory (num_cpus={result['params']['memory_cpus']}), MiB")
    head = ("data", "units", "sum RSS", "sum HWM", "driver", "worker", "actors", "ray svc")
    print(f"{head[0]:5s}" + "".join(f" {h:>8s}" for h in head[1:]))
    for name in ("1x", "10x"):
        r = m[name]
        cells = (
            r["peak_sum_rss_mib"],
            r["sum_hwm_mib"],
            r["driver_hwm_mib"],
            r["largest_worker_hwm_mib"],
            r["ray_actors_sum_hwm_mib"],
            r["ray_services_sum_hwm_mib"],
        )
        print(f"{name:5s} {r['units']:8d}" + "".join(f" {c:8.0f}" for c in cells))
    print(
        f"10x/1x: peak sum RSS {m['ratio_peak_sum_rss']:.2f}, sum of HWM {m['ratio_sum_hwm']:.2f}"
        f" (goal <= {m['goal_ratio']})"
    )
    print("-> bench/results/scaling.json")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(*sys.argv[2:7])
    else:
        main(*(int(a) for a in sys.argv[1:5]))
