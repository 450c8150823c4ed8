"""The layer rule, read from the source: imports only point down, no import circles, no private names
imported across modules, no source file over 600 lines.

Layers, lowest first (README "Architecture"):
  0 dmd.base      errors, atomic IO, plotting, progress, units, config
  1 dmd           the engine (everything in dmd but base and cli)
  2 analysis      primitives (cell, symmetry, stats, formfactors, hkl), then observables, then indexing and merging
  3 fitting       objectives, reweighting, force-field fitting, XRD refinement
  4 dmd.cli       the command line
A module may import its own layer or any lower one, never a higher one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dmd", "analysis", "fitting")
MAX_LINES = 600


def layer(module: str) -> int:
    if module == "dmd.base" or module.startswith("dmd.base."):
        return 0
    if module == "dmd.cli" or module.startswith("dmd.cli.") or module == "dmd.__main__":
        return 4
    top = module.split(".")[0]
    return {"dmd": 1, "analysis": 2, "fitting": 3}[top]


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _sources(dirs=PACKAGES):
    for d in dirs:
        yield from sorted((ROOT / d).rglob("*.py"))


def _imports(path: Path, module: str):
    """(imported module, imported names, lineno) for every import in the file, at any depth."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, [a.name for a in node.names], node.lineno


def _ours(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def _resolve(target: str, names: list[str], known: set[str]) -> list[str]:
    """Modules an import statement loads: ``from pkg import mod`` names the submodule."""
    out = []
    for n in names:
        if f"{target}.{n}" in known:
            out.append(f"{target}.{n}")
    if not out or target in known:
        out.append(target)
    return out


def _graph():
    files = {_module_name(p): p for p in _sources()}
    known = set(files)
    edges: dict[str, set[str]] = {m: set() for m in files}
    where: dict[tuple[str, str], int] = {}
    for mod, path in files.items():
        for target, names, lineno in _imports(path, mod):
            if not _ours(target):
                continue
            for dep in _resolve(target, names, known):
                if dep != mod and dep in known:
                    edges[mod].add(dep)
                    where.setdefault((mod, dep), lineno)
    return files, edges, where


def test_imports_only_point_down():
    files, edges, where = _graph()
    bad = []
    for mod, deps in edges.items():
        for dep in deps:
            if layer(dep) > layer(mod):
                bad.append(
                    f"{files[mod].relative_to(ROOT)}:{where[(mod, dep)]} {mod} (layer {layer(mod)}) imports "
                    f"{dep} (layer {layer(dep)})"
                )
    assert not bad, "upward imports:\n" + "\n".join(sorted(bad))


def test_no_import_circles():
    files, edges, _ = _graph()
    # Tarjan's strongly connected components; a package's __init__ re-exporting its own modules is not a circle
    # (the module never imports its package back) unless the module does import the package.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    sccs = []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    import sys

    sys.setrecursionlimit(10_000)
    for v in edges:
        if v not in index:
            strong(v)
    assert not sccs, "import circles:\n" + "\n".join(" <-> ".join(c) for c in sccs)


@pytest.mark.parametrize("dirs", [PACKAGES, ("tests", "benchmarks", "examples")])
def test_no_private_imports_across_modules(dirs):
    known = {_module_name(p) for p in _sources()}
    bad = []
    for path in _sources(dirs):
        mod = _module_name(path) if path.relative_to(ROOT).parts[0] in PACKAGES else str(path.relative_to(ROOT))
        for target, names, lineno in _imports(path, mod if mod in known else "x"):
            if not _ours(target) or target == mod:
                continue
            if any(part.startswith("_") and part != "__main__" for part in target.split(".")):
                bad.append(f"{path.relative_to(ROOT)}:{lineno} imports private module {target}")
            for n in names:
                if n.startswith("_") and f"{target}.{n}" not in known:
                    bad.append(f"{path.relative_to(ROOT)}:{lineno} imports private {target}.{n}")
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


def test_no_source_file_over_600_lines():
    long = []
    for path in _sources(PACKAGES + ("benchmarks", "examples")):
        n = len(path.read_text().splitlines())
        if n > MAX_LINES:
            long.append(f"{path.relative_to(ROOT)}: {n} lines")
    assert not long, f"files over {MAX_LINES} lines:\n" + "\n".join(long)


def test_base_layer_imports_nothing_heavy():
    """The base layer stays importable without jax, OpenMM or gemmi at module level."""
    heavy = {"jax", "jaxlib", "openmm", "gemmi", "mdtraj", "jax_md", "optax"}
    bad = []
    for path in sorted((ROOT / "dmd" / "base").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only: lazy imports inside functions are fine
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            for n in names:
                if n.split(".")[0] in heavy:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {n}")
    assert not bad, "\n".join(bad)


MAX_FUNCTION_LINES = 100


def test_no_long_function_without_a_reason():
    """A function (method, nested function) over 100 lines, ``def`` to its last line, says why in its docstring
    ("Over 100 lines: ..."): usually closures that jit needs as constants, or a command's linear pipeline."""
    long = []
    for path in _sources(PACKAGES + ("benchmarks", "examples")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                doc = ast.get_docstring(node) or ""
                if n > MAX_FUNCTION_LINES and "over 100 lines" not in doc.lower():
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines without a reason in the docstring:\n" + "\n".join(long)


def test_every_package_declares_its_public_api():
    """Each package ``__init__`` lists its public names in ``__all__``, and every listed name exists there."""
    import importlib

    bad = []
    for path in _sources():
        if path.name != "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        targets = [t for n in tree.body if isinstance(n, ast.Assign) for t in n.targets]
        targets += [n.target for n in tree.body if isinstance(n, ast.AnnAssign)]
        declared = [t for t in targets if getattr(t, "id", None) == "__all__"]
        if not declared:
            bad.append(f"{path.relative_to(ROOT)}: no __all__")
            continue
        mod = importlib.import_module(_module_name(path))
        bad += [f"{path.relative_to(ROOT)}: __all__ names missing {n}" for n in mod.__all__ if not hasattr(mod, n)]
    assert not bad, "\n".join(bad)


# Modules without a mirrored test file yet (tests/<package>/test_<module>.py, or test_<module>_<aspect>.py); most
# are covered through other modules' tests. The list only shrinks: a new module comes with its test file, and a
# module that gains one leaves the list (issue 16, "tests mirror the modules").
UNMIRRORED = frozenset(
    {
        "dmd/base/defaults.py",
        "dmd/base/errors.py",
        "dmd/base/plotting.py",
        "dmd/base/progress.py",
        "dmd/cli/commands/crystal.py",
        "dmd/cli/commands/energy.py",
        "dmd/crystal/modeller.py",
        "dmd/crystal/reader.py",
        "dmd/crystal/writer.py",
        "dmd/forces/neighbors.py",
        "dmd/openmm_system/bonded_forces.py",
        "dmd/openmm_system/constraints.py",
        "dmd/openmm_system/nonbonded_forces.py",
        "analysis/indexing/errors.py",
        "analysis/indexing/prior.py",
        "analysis/indexing/reference.py",
        "analysis/indexing/synth.py",
        "analysis/indexing/train_prior.py",
        "analysis/merging/classical.py",
        "analysis/merging/fit.py",
        "analysis/merging/likelihoods.py",
        "analysis/merging/plots.py",
        "analysis/merging/posteriors.py",
        "analysis/merging/priors.py",
        "analysis/merging/quality.py",
        "analysis/merging/reference.py",
        "analysis/merging/scaling.py",
        "analysis/merging/synth.py",
        "analysis/structure_factors/common.py",
        "analysis/structure_factors/trajectory.py",
        "fitting/baselines.py",
        "fitting/forcefield_config.py",
        "fitting/forcefield_sampling.py",
        "fitting/observables.py",
        "fitting/reweight/baselines.py",
        "fitting/reweight/crossval.py",
        "fitting/reweight/data_map.py",
        "fitting/reweight/outputs.py",
        "fitting/reweight/pipeline.py",
        "fitting/reweight/prediction.py",
        "fitting/reweight/problem.py",
        "fitting/reweight/procedure.py",
        "fitting/reweight_io.py",
        "fitting/synthetic.py",
        "fitting/xrd_energy.py",
        "fitting/xrd_landscape.py",
        "fitting/xrd_structures.py",
    }
)


def _mirror_missing(path: Path) -> bool:
    folder = ROOT / "tests" / path.parent.relative_to(ROOT)
    return not (folder / f"test_{path.stem}.py").exists() and not any(folder.glob(f"test_{path.stem}_*.py"))


def test_tests_mirror_the_modules():
    """Every module of dmd, analysis and fitting has tests/<package>/test_<module>.py, except the listed ones."""
    missing = {str(p.relative_to(ROOT)) for p in _sources() if not p.name.startswith("__") and _mirror_missing(p)}
    new = sorted(missing - UNMIRRORED)
    assert not new, "modules without tests/<package>/test_<module>.py (add one):\n" + "\n".join(new)
    gained = sorted(UNMIRRORED - missing)
    assert not gained, "these modules now have a mirrored test (or are gone): drop them from UNMIRRORED:\n" + "\n".join(
        gained
    )
