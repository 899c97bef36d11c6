"""The shape of the code: no import circles, a report builder that names no family, every metric declared once,
families found by discovery, benchmarks that only parametrize, record and assert."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from diffbench.families import Family, Measurements, all_options, discover
from diffbench.metrics import registry

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "diffbench"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, modules: set[str], package: str) -> set[str]:
    """diffbench modules imported anywhere in ``tree`` (module level and inside functions), except under
    ``if TYPE_CHECKING``; ``from pkg import name`` counts as ``pkg.name`` when that is a module."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            for alias in node.names:
                target = f"{base}.{alias.name}"
                if target in modules:
                    found.add(target)
                elif base in modules:
                    found.add(base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    graph = {}
    for path in paths:
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = _imports(ast.parse(path.read_text()), modules, package) - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_cycle_finder_finds_a_planted_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_two_library_modules_import_each_other():
    graph = import_graph()
    assert "diffbench.report.build" in graph and graph["diffbench.report.size_factors"], "the walker sees imports"
    assert cycles(graph) == []


def test_library_is_free_of_pytest_outside_its_plugin():
    for path in PACKAGE.rglob("*.py"):
        if path.name == "pytest_plugin.py":
            continue
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not any(name == "pytest" or name.startswith("pytest.") for name in names), path


def test_report_build_imports_no_family_module():
    code = (
        "import sys, json, diffbench.report.build; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('diffbench.families') "
        "or m in ('diffbench.report.size_factors', 'diffbench.report.batch_configs'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []


def test_build_names_no_family():
    text = (PACKAGE / "report" / "build.py").read_text()
    for name in discover():
        assert name not in text, f"report/build.py names the family {name!r}"


def test_families_are_discovered_with_their_options():
    families = discover()
    assert {"batch_configs", "size_factors", "metrics"} <= set(families)
    assert all(isinstance(f, Family) and f.question for f in families.values())
    flags = [o.flag for o in all_options()]
    assert {"--size-factors", "--size-range", "--fid-weights"} <= set(flags)
    assert len(flags) == len(set(flags))


def test_bench_modules_only_parametrize_record_and_assert():
    """A bench module defines tests and pytest_generate_tests only: no helpers, no classes, no library logic."""
    for path in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                assert node.name.startswith("test_") or node.name == "pytest_generate_tests", (path, node.name)
            assert not isinstance(node, ast.ClassDef), (path, node.name)


def test_every_recorded_metric_of_the_baseline_is_declared():
    from diffbench.report.baseline import find_baseline_file, read_baseline
    from diffbench.results import read_rows

    directory = ROOT / "reports" / "baseline"
    found = find_baseline_file(directory)  # the seed-spread format; else rows in the old results.jsonl
    if found is not None:
        metrics = {metric for _, _, metric in read_baseline(found).entries}
    else:
        metrics = {row["metric"] for row in read_rows([directory / "results.jsonl"])}
    assert len(metrics) > 50  # the whole smoke matrix's vocabulary, not an empty file
    registry.load_declarations()
    assert sorted(m for m in metrics if m not in registry.METRICS) == []


def test_an_undeclared_metric_is_refused_with_the_fix_named():
    with pytest.raises(KeyError, match="not declared; declare it"):
        registry.get("no_such_metric_anywhere")


def test_declaring_a_name_twice_with_another_meaning_fails():
    registry.declare(registry.Metric("_test_metric_once", registry.LOWER, registry.QUALITY, "x"))
    registry.declare(registry.Metric("_test_metric_once", registry.LOWER, registry.QUALITY, "x"))  # same: fine
    with pytest.raises(ValueError, match="declared twice"):
        registry.declare(registry.Metric("_test_metric_once", registry.HIGHER, registry.QUALITY, "x"))
    del registry.METRICS["_test_metric_once"]


def test_timing_metrics_are_one_sided_and_loose():
    registry.load_declarations()
    timing = registry.by_kind(registry.TIMING)
    assert {"epoch_seconds", "sampling_seconds_per_image", "fid_seconds"} <= set(timing)
    with pytest.raises(ValueError, match="timing metric"):
        registry.Metric("x_seconds", registry.NEITHER, registry.TIMING, "x", tolerance="timing")


def test_measurements_keep_series_and_scalars_apart():
    m = Measurements({"model": "a"})
    m.add("eps_mse", 0.5, t=10)
    m.add("eps_mse", 0.25, t=20)
    m.add("eps_mse_mean", 0.375, context={"note": "x"})
    assert m["eps_mse_mean"] == 0.375 and m.series("eps_mse") == [0.5, 0.25]
    with pytest.raises(KeyError, match="no scalar 'eps_mse'"):
        m["eps_mse"]
    assert [params for _, _, params, _ in m][0] == {"model": "a", "t": 10}
