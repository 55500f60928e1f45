"""Every reject reason the code can give is documented in docs/RELIABILITY.md, and spec/data mismatches get
named reasons rather than ``unexpected_error`` (which is for bugs only).

The reasons are collected from the package's source with ``ast``, at every construct that names one:

- ``ReadError(reason, detail)`` (readers, ``corpus/unit.py``, discovery);
- ``regions.Drop(label, reason, detail)`` and ``acc.drop(label, reason, detail)`` (region drops);
- ``reject_row(dataset, unit, stage, reason, detail, …)`` (plan and unit rejects);
- ``error=(reason, detail)`` passed to ``make_item`` (or a helper that carries it there): an error found at
  discovery and raised at read by ``_common.raise_item_error``; tables' ``found.error(name, reason, …)``
  stores such a tuple for an image, and ``case.error = (reason, detail)`` sets one on a discovery helper;
- ``DiscoveryNote(reason, …)``: a note a reader's ``discover`` returns, made a plan reject by ``plan.py``.

A reason given by a name is resolved through the enclosing function (assignments, tuple unpacking, ``or``,
conditional expressions, parameters with their defaults and call sites, ``for`` loops over and returns of
package functions). What cannot be resolved fails the test, unless its site is in ``FORWARDED`` with why.
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "medpclip"
DOC = ROOT / "docs" / "RELIABILITY.md"

# Sites whose reason is an expression the collector cannot resolve, and why that is fine: each forwards a
# reason created at another site, which the collector sees there. (file, function, expression) → why.
FORWARDED = {
    ("medpclip/corpus/unit.py", "_run_item", "e.reason"): "a reader's ReadError, made the case's reject row",
    ("medpclip/corpus/unit.py", "_run_item", "error.reason"): "the ReadError _checked_files returns",
    ("medpclip/corpus/unit.py", "_harmonise_case", "d.reason"): "a regions.Drop's reason",
    ("medpclip/corpus/plan.py", "plan_build", "e.reason"): "a ReadError raised by discovery",
    ("medpclip/sources/_common.py", "raise_item_error", "item.meta_dict().get(ERROR_KEY)"): (
        "the error= tuple make_item stored at discovery (every error= is collected)"
    ),
    ("medpclip/sources/raster/reader.py", "discover", "case.error"): "a _Case's error= (collected there)",
    ("medpclip/sources/volumes/reader.py", "discover", "c.error"): "a _Case's error= (collected there)",
    ("medpclip/sources/volumes/reader.py", "_apply_table", "c.error"): "an error set before (`c.error or …`)",
    ("medpclip/sources/reports/reader.py", "_discover_openi", "e.reason"): "a ReadError's reason, kept",
    ("medpclip/sources/tables/reader.py", "discover", "found.errors.get(name)"): (
        "tables' _Found.errors, filled by found.error(name, reason, detail) (collected at those calls)"
    ),
    (
        "medpclip/corpus/plan.py",
        "plan_build",
        "note.reason",
    ): "a DiscoveryNote's reason (collected where it is made)",
    ("medpclip/sources/raster/reader.py", "discover", "e.reason"): "a ReadError's reason, kept as the error",
    ("medpclip/sources/tables/reader.py", "discover", "e.reason"): "a ReadError's reason, kept as the error",
    ("medpclip/sources/raster/reader.py", "_row_label", "e.reason"): (
        "resolve_label's ReadError (a table label not in the spec), kept as the image's error"
    ),
}


class Unresolved(Exception):
    pass


class Source:
    """The package's modules parsed once, with every function by name (names are unique enough here: a
    function of the same name in several modules is looked up in all of them)."""

    def __init__(self, root: Path):
        self.modules: dict[str, ast.Module] = {}
        self.functions: dict[str, list[tuple[str, ast.FunctionDef]]] = {}
        self.parent_function: dict[ast.AST, ast.FunctionDef | None] = {}
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            tree = ast.parse(path.read_text(encoding="utf-8"), rel)
            self.modules[rel] = tree
            self._index(tree, rel, None)

    def _index(self, node: ast.AST, rel: str, func: ast.FunctionDef | None) -> None:
        for child in ast.iter_child_nodes(node):
            self.parent_function[child] = func
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                self.functions.setdefault(child.name, []).append((rel, child))
                self._index(child, rel, child)
            else:
                self._index(child, rel, func)


class Collector:
    def __init__(self, src: Source):
        self.src = src
        self.reasons: dict[str, set[str]] = {}  # reason → sites "file:line"
        self.forwarded: set[tuple[str, str, str]] = set()
        self.unresolved: list[str] = []

    # --- sites ---------------------------------------------------------------------------------------------

    def collect(self) -> None:
        for rel, tree in self.src.modules.items():
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                func = self.src.parent_function.get(node)
                name = _callee(node)
                if name == "ReadError":
                    self._site(rel, func, node, _arg(node, 0, "reason"), elt=None)
                elif name == "Drop" or (
                    name == "drop" and isinstance(node.func, ast.Attribute) and len(node.args) >= 3
                ):
                    self._site(rel, func, node, _arg(node, 1, "reason"), elt=None)
                elif name == "DiscoveryNote":  # a note discover returns: a plan reject row (plan.py)
                    self._site(rel, func, node, _arg(node, 0, "reason"), elt=None)
                elif name == "reject_row":
                    self._site(rel, func, node, _arg(node, 3, "reason"), elt=None)
                elif (
                    name == "error"
                    and isinstance(node.func, ast.Attribute)
                    and ast.unparse(node.func.value) in ("found", "self")
                ):
                    self._site(rel, func, node, _arg(node, 1, "reason"), elt=None)
                for kw in node.keywords:
                    if kw.arg == "error":
                        self._site(rel, func, node, kw.value, elt=0)
            for node in ast.walk(tree):  # case.error = (reason, detail), meta[ERROR_KEY] = (reason, detail)
                if isinstance(node, ast.Assign) and any(
                    (isinstance(t, ast.Attribute) and t.attr == "error")
                    or (isinstance(t, ast.Subscript) and ast.unparse(t.slice) == "ERROR_KEY")
                    for t in node.targets
                ):
                    self._site(rel, self.src.parent_function.get(node), node, node.value, elt=0)

    def _site(self, rel, func, call, expr, elt) -> None:
        where = f"{rel}:{call.lineno}"
        if expr is None:
            self.unresolved.append(f"{where}: no reason argument in {ast.unparse(call)[:80]}")
            return
        try:
            found = (
                self.elt(expr, func, rel, elt, set())
                if elt is not None
                else self.value(expr, func, rel, set())
            )
        except Unresolved as e:
            self.unresolved.append(f"{where}: cannot resolve the reason {e} (add it to FORWARDED with why)")
            return
        for reason in found:
            self.reasons.setdefault(reason, set()).add(where)

    def _forward(self, expr, func, rel) -> set[str]:
        key = (rel, func.name if func else "<module>", ast.unparse(expr))
        if key in FORWARDED:
            self.forwarded.add(key)
            return set()
        raise Unresolved(f"'{key[2]}' in {key[1]}")

    # --- resolution ----------------------------------------------------------------------------------------

    def value(self, expr, func, rel, seen) -> set[str]:
        """The strings ``expr`` can be (None contributes nothing: 'no reason')."""
        if isinstance(expr, ast.Constant):
            if expr.value is None:
                return set()
            if isinstance(expr.value, str):
                return {expr.value}
        if isinstance(expr, ast.IfExp):
            return self.value(expr.body, func, rel, seen) | self.value(expr.orelse, func, rel, seen)
        if isinstance(expr, ast.BoolOp):
            return set().union(*(self.value(v, func, rel, seen) for v in expr.values))
        if isinstance(expr, ast.Call) and _callee(expr) == "str" and len(expr.args) == 1:
            return self.value(expr.args[0], func, rel, seen)
        if isinstance(expr, ast.Name):
            return self._name(expr, func, rel, None, seen)
        return self._forward(expr, func, rel)

    def elt(self, expr, func, rel, idx, seen) -> set[str]:
        """The strings element ``idx`` of the tuple ``expr`` can be."""
        if isinstance(expr, ast.Constant) and expr.value is None:
            return set()
        if isinstance(expr, ast.Tuple):
            return self.value(expr.elts[idx], func, rel, seen)
        if isinstance(expr, ast.IfExp):
            return self.elt(expr.body, func, rel, idx, seen) | self.elt(expr.orelse, func, rel, idx, seen)
        if isinstance(expr, ast.BoolOp):
            return set().union(*(self.elt(v, func, rel, idx, seen) for v in expr.values))
        if isinstance(expr, ast.Name):
            return self._name(expr, func, rel, idx, seen)
        if isinstance(expr, ast.Call) and _callee(expr) == "tuple" and len(expr.args) == 1:
            return self.elt(expr.args[0], func, rel, idx, seen)
        if (
            isinstance(expr, ast.Call)
            and isinstance(expr.func, ast.Name)
            and expr.func.id in self.src.functions
        ):
            out: set[str] = set()
            for frel, f in self.src.functions[expr.func.id]:
                for ret in (n for n in ast.walk(f) if isinstance(n, ast.Return) and n.value is not None):
                    if self.src.parent_function.get(ret) is f:
                        out |= self.elt(ret.value, f, frel, idx, seen)
            return out
        return self._forward(expr, func, rel)

    def _elements(self, expr, func, rel, pos) -> list[tuple[ast.expr, ast.FunctionDef, str]]:
        """The expressions element ``pos`` of the tuple ``expr`` can be, each with its scope."""
        if isinstance(expr, ast.Constant) and expr.value is None:
            return []
        if isinstance(expr, ast.Tuple):
            return [(expr.elts[pos], func, rel)]
        if (
            isinstance(expr, ast.Call)
            and isinstance(expr.func, ast.Name)
            and expr.func.id in self.src.functions
        ):
            return [
                got
                for frel, f in self.src.functions[expr.func.id]
                for ret in ast.walk(f)
                if isinstance(ret, ast.Return)
                and ret.value is not None
                and self.src.parent_function.get(ret) is f
                for got in self._elements(ret.value, f, frel, pos)
            ]
        if isinstance(expr, ast.Name) and func is not None:
            return [
                got
                for n in ast.walk(func)
                if isinstance(n, ast.Assign) and self.src.parent_function.get(n) is func
                for t in n.targets
                if _position(t, expr.id) is None
                for got in self._elements(n.value, func, rel, pos)
            ]
        self._forward(expr, func, rel)
        return []

    def _iter_elt(self, it, func, rel, idx, seen) -> set[str]:
        """Element ``idx`` of the items of iterable ``it``: a package function's yields and appends."""
        if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id in self.src.functions:
            out: set[str] = set()
            for frel, f in self.src.functions[it.func.id]:
                for n in ast.walk(f):
                    if isinstance(n, ast.Yield) and n.value is not None:
                        out |= self.elt(n.value, f, frel, idx, seen)
                    elif isinstance(n, ast.Call) and _callee(n) == "append" and len(n.args) == 1:
                        out |= self.elt(n.args[0], f, frel, idx, seen)
            return out
        return self._forward(it, func, rel)

    def _name(self, name: ast.Name, func, rel, idx, seen) -> set[str]:
        key = (rel, id(func), name.id, idx)
        if key in seen:
            return set()  # `error = error or (...)`: the other assignments say it
        seen = seen | {key}
        if func is None:
            raise Unresolved(f"'{name.id}' at module level")
        out: set[str] = set()
        found = False

        def sub(value, pos):  # element pos of value, then element idx of that
            if pos is None:
                return (
                    self.value(value, func, rel, seen)
                    if idx is None
                    else self.elt(value, func, rel, idx, seen)
                )
            if idx is None:
                return self.elt(value, func, rel, pos, seen)
            got: set[str] = set()
            for inner, ifunc, irel in self._elements(value, func, rel, pos):
                got |= self.elt(inner, ifunc, irel, idx, seen)
            return got

        for n in ast.walk(func):
            if self.src.parent_function.get(n) is not func:
                continue
            if isinstance(n, ast.Assign | ast.AnnAssign) and n.value is not None:
                for target in n.targets if isinstance(n, ast.Assign) else [n.target]:
                    pos = _position(target, name.id)
                    if pos is not False:
                        found = True
                        out |= sub(n.value, pos)
            elif isinstance(n, ast.For):
                pos = _position(n.target, name.id)
                if pos is not False:
                    found = True
                    if pos is None:
                        raise Unresolved(f"'{name.id}' iterates {ast.unparse(n.iter)}")
                    out |= self._iter_elt(n.iter, func, rel, pos, seen) if idx is None else set()
        args = func.args
        params = [*args.posonlyargs, *args.args]
        all_params = [*params, *args.kwonlyargs]
        if any(a.arg == name.id for a in all_params):
            found = True
            out |= self._param(func, rel, name.id, params, idx, seen)
        if not found:
            raise Unresolved(f"'{name.id}' in {func.name} (no assignment found)")
        return out

    def _param(self, func, rel, pname, params, idx, seen) -> set[str]:
        """A parameter: its default and what every call of the function passes for it."""
        args = func.args
        out: set[str] = set()
        pos = next((i for i, a in enumerate(params) if a.arg == pname), None)
        method = bool(params) and params[0].arg in ("self", "cls")
        defaults = dict(
            zip([a.arg for a in params][len(params) - len(args.defaults) :], args.defaults, strict=True)
        )
        defaults |= {
            a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None
        }
        calls = [
            n
            for tree in self.src.modules.values()
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and _callee(n) == func.name
        ]
        if pname not in defaults and not calls:
            raise Unresolved(f"parameter '{pname}' of {func.name}: no default and no call")
        if pname in defaults:
            d = defaults[pname]
            out |= self.value(d, func, rel, seen) if idx is None else self.elt(d, func, rel, idx, seen)
        for call in calls:
            crel = next(r for r, t in self.src.modules.items() if call in set(ast.walk(t)))
            cfunc = self.src.parent_function.get(call)
            shift = 1 if method and isinstance(call.func, ast.Attribute) else 0
            given = _arg(call, pos - shift, pname) if pos is not None else _arg(call, 10**6, pname)
            if given is not None:
                out |= (
                    self.value(given, cfunc, crel, seen)
                    if idx is None
                    else self.elt(given, cfunc, crel, idx, seen)
                )
        return out


def _callee(call: ast.Call) -> str | None:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None


def _arg(call: ast.Call, pos: int, keyword: str):
    for kw in call.keywords:
        if kw.arg == keyword:
            return kw.value
    if pos < len(call.args) and not any(isinstance(a, ast.Starred) for a in call.args[: pos + 1]):
        return call.args[pos]
    return None


def _position(target, name: str):
    """None when ``target`` is the name itself, its index when it is an element of a tuple target, else
    False."""
    if isinstance(target, ast.Name):
        return None if target.id == name else False
    if isinstance(target, ast.Tuple | ast.List):
        for i, t in enumerate(target.elts):
            if isinstance(t, ast.Name) and t.id == name:
                return i
    return False


@pytest.fixture(scope="module")
def collected() -> Collector:
    c = Collector(Source(PACKAGE))
    c.collect()
    return c


def test_every_reason_site_is_resolved(collected):
    assert not collected.unresolved, "\n".join(collected.unresolved)
    stale = set(FORWARDED) - collected.forwarded
    assert not stale, f"FORWARDED entries no longer in the code: {sorted(stale)}"
    # the collector sees every kind of site (a refactor that renames one must update the collector)
    for reason in (
        "empty_file",
        "missing_root",
        "below_min_area",
        "symlink_loop",
        "no_frames",
        "bad_patient_id",
    ):
        assert reason in collected.reasons, reason


def test_every_reason_is_in_the_catalogue(collected):
    doc = DOC.read_text(encoding="utf-8")
    documented = set(re.findall(r"`([a-z][a-z0-9_]*)`", doc))
    missing = {r: sorted(sites) for r, sites in sorted(collected.reasons.items()) if r not in documented}
    assert not missing, f"reasons the code gives that docs/RELIABILITY.md does not name: {missing}"


# --- a folder mixing CT (HU) and 8-bit images under one intensity rule ------------------------------------


@pytest.mark.parametrize("kind", ["percentile", "uint8"])
def test_ct_image_under_a_non_ct_intensity_rule_is_an_intensity_mismatch(tmp_path, kind):
    import pydicom.data
    from PIL import Image

    from medpclip.corpus.plan import BuildParams, plan_build
    from medpclip.corpus.unit import run_unit
    from medpclip.specs import DatasetSpec

    folder = tmp_path / "raw" / "Mixed"
    folder.mkdir(parents=True)
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) % 251).astype(np.uint8)).save(folder / "a.png")
    shutil.copy(pydicom.data.get_testdata_file("CT_small.dcm"), folder / "b.dcm")
    (folder / "index.csv").write_text("image,patient\na.png,p1\nb.dcm,p2\n")
    spec = DatasetSpec.model_validate(
        {
            "name": "mixed",
            "root": "Mixed",
            "title": "t",
            "citation": "c",
            "licence": "CC-BY-4.0",
            "access": "open",
            "homepage": "https://example.org",
            "modality": "XR",
            "body_part": "chest",
            "format": {
                "family": "tables",
                "options": {
                    "images": ["*.png", "*.dcm"],
                    "image_table": {"file": "index.csv", "image_column": "image"},
                },
            },
            "labels": [{"label": "x", "name": "X", "category": "x", "cui": None}],
            "intensity": {"kind": kind},
            "slicing": {"keep_empty": True},
            "split": {"rule": "hash", "salt": "s", "ratios": {"train": 1.0}},
            "patient_id": {"field": "patient"},
        }
    )
    out = tmp_path / "out"
    plan = plan_build([spec], tmp_path / "raw", out, BuildParams())
    assert plan.rejects == {"mixed": []}
    stats = [run_unit(u) for u in plan.units]  # in-process: the per-unit function a Ray task runs
    assert sum(s["n_samples"] for s in stats) == 1  # the PNG
    rejects = [
        r
        for p in sorted((out / "manifests" / "rejects" / "mixed").glob("*.parquet"))
        for r in pq.read_table(p).to_pylist()
    ]
    assert [(r["stage"], r["reason"], r["path"]) for r in rejects] == [
        ("read", "intensity_mismatch", "Mixed/b.dcm")
    ]
    assert rejects[0]["detail"] == (
        f"Mixed/b.dcm: the image is CT in Hounsfield units but spec 'mixed' has intensity.kind {kind}; "
        "set intensity.kind: ct_window (and intensity.window) or split the folder into two specs"
    )
