"""Imports run one way: a module never imports a higher floor, lazily or not, and task families never import each other.

The floors (docs/ARCHITECTURE.md, "Floors"); modules on one floor may import each other:

    0 core
    1 data, models, render      (render: HTML fragments, plots, report-sample helpers that tasks and the report use)
    2 tasks (root: base, metrics, recipes, export_graphs, …)
    3 tasks/<family>/           (vision, text, seq2seq, speech, embeddings; never one another)
    4 training, artifacts
    5 explain
    6 report                    (the report writer: loads artifacts, calls explain's gallery)
    7 serve
    8 api
    9 cli, commands, tuning, video_annotate, benchmarks_runner (the command-line side)

Modules of one floor may import each other, but the module graph has no circle. From floor 4 up no module imports a
task family (tasks are reached through the registry's import by name and the Task interface).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "modelforge"

FAMILIES = ("vision", "text", "seq2seq", "speech", "embeddings", "multimodal")

# Every module from floor 4 up (training, artifacts, explain, report, serve, api and the command line) works for any
# task through the Task interface and its declared capabilities (input_kind, explain_kind, capabilities,
# call_options, frames_per_prediction …), so adding a task never means editing them. The one way up to a family is
# the task registry's import by name (tasks.get_task / catalog), which is no `import` statement of these modules.
KNOWS_NO_TASK_FROM_FLOOR = 4

# The floor of each top-level package or module of modelforge (the key is the first dotted part below modelforge).
FLOORS: dict[str, int] = {
    "core": 0,
    "data": 1,
    "models": 1,
    "render": 1,
    "tasks": 2,  # the tasks root; tasks.<family> is floor 3 (see floor_of)
    "training": 4,
    "artifacts": 4,
    "explain": 5,
    "report": 6,
    "serve": 7,
    "api": 8,
    "cli": 9,
    "commands": 9,
    "tuning": 9,  # modelforge tune: trains through api.train
    "video_annotate": 9,
    "benchmarks_runner": 9,
    "__main__": 9,
    "__init__": 9,  # modelforge/__init__.py re-exports the API lazily
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def floor_of(module: str) -> int | None:
    """The floor of a `modelforge.…` module, or None for modules outside the package."""
    parts = module.split(".")
    if parts[0] != "modelforge":
        return None
    if len(parts) == 1:
        return FLOORS["__init__"]
    if parts[1] == "tasks" and len(parts) > 2 and parts[2] in FAMILIES:
        return 3
    if parts[1] not in FLOORS:
        raise AssertionError(f"{module}: no floor assigned (add it to FLOORS and docs/ARCHITECTURE.md)")
    return FLOORS[parts[1]]


def family_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) > 2 and parts[1] == "tasks" and parts[2] in FAMILIES:
        return parts[2]
    return None


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every module `path` imports — at the top, inside functions, under TYPE_CHECKING — with its line number."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from modelforge.tasks import vision` names a subpackage: check it too.
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names if alias.name != "*"]
        elif isinstance(node, ast.Call) and _is_import_module_call(node):
            found.append((node.lineno, node.args[0].value))
    return found


def _is_import_module_call(node: ast.Call) -> bool:
    func = node.func
    named = (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id == "import_module"
    )
    return named and bool(node.args) and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)


def _known(module: str) -> bool:
    """True for a module that exists in the tree (filters `from pkg import function` names)."""
    rel = Path(*module.split(".")[1:])
    return (SRC / rel).with_suffix(".py").exists() or (SRC / rel / "__init__.py").exists()


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        here = module_name(path)
        graph[here] = {t for _, t in imports_of(path) if t.startswith("modelforge") and _known(t) and t != here}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every circle through the graph (one per strongly connected component of more than one module)."""
    import networkx as nx

    g = nx.DiGraph([(a, b) for a, targets in graph.items() for b in targets])
    return [sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1]


def violations() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        here = module_name(path)
        here_floor, here_family = floor_of(here), family_of(here)
        for line, target in imports_of(path):
            if not target.startswith("modelforge") or not _known(target):
                continue
            where = f"{path.relative_to(SRC.parent)}:{line}: {here} imports {target}"
            target_floor, target_family = floor_of(target), family_of(target)
            if target_floor is not None and here_floor is not None and target_floor > here_floor:
                found.append(f"{where} (floor {here_floor} → {target_floor})")
            elif here_family and target_family and here_family != target_family:
                found.append(f"{where} (task family {here_family} → {target_family})")
            elif target_family and here_floor is not None and here_floor >= KNOWS_NO_TASK_FROM_FLOOR:
                found.append(f"{where} (floor {here_floor} reads declared Task capabilities, never a task family)")
    return found


def test_no_import_runs_up_a_floor_or_across_task_families():
    assert violations() == []


def test_no_module_circle():
    # a package's __init__ importing its own submodules (which import the package's siblings) is not a circle here:
    # only module-to-module edges between files are walked.
    assert cycles(import_graph()) == []


def test_every_task_module_sits_in_a_family_or_is_a_shared_helper():
    shared = {"__init__", "base", "metrics", "recipes", "export_graphs", "catalog", "baselines", "own_data",
              "sampling"}
    loose = [p.name for p in (SRC / "tasks").glob("*.py") if p.stem not in shared]
    assert loose == [], "task modules belong in tasks/<family>/"


@pytest.mark.parametrize(
    "source, expected",
    [
        ("def f():\n    from modelforge.api import load\n", "modelforge.api"),
        ("import importlib\nimportlib.import_module('modelforge.serve.app')\n", "modelforge.serve.app"),
        ("from ..seq2seq import decoding\n", "modelforge.tasks.seq2seq.decoding"),
    ],
)
def test_the_walk_sees_lazy_relative_and_dynamic_imports(tmp_path, source, expected, monkeypatch):
    # A module placed at tasks/text/probe.py (path only; it is parsed, never imported).
    fake_src = tmp_path / "modelforge"
    probe = fake_src / "tasks" / "text" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text(source)
    monkeypatch.setattr(__import__(__name__), "SRC", fake_src, raising=False)
    monkeypatch.setitem(globals(), "SRC", fake_src)
    assert expected in [target for _, target in imports_of(probe)]


def test_the_floor_rules_catch_an_upward_and_a_sideways_import():
    assert floor_of("modelforge.tasks.base") < floor_of("modelforge.tasks.vision.detection")
    assert floor_of("modelforge.tasks.vision.detection") < floor_of("modelforge.artifacts.predictor")
    assert floor_of("modelforge.render.plots") < floor_of("modelforge.tasks.vision.detection")
    assert floor_of("modelforge.report.writer") > floor_of("modelforge.explain.gallery")
    assert family_of("modelforge.tasks.text.generation") != family_of("modelforge.tasks.seq2seq.translation")


def test_the_api_and_the_command_line_may_not_import_a_task_family(tmp_path, monkeypatch):
    fake_src = tmp_path / "modelforge"
    for name, source in [("api.py", "from modelforge.tasks.vision.detection import Detection\n"),
                         ("cli.py", "from modelforge.tasks.sampling import SamplingConfig\n"),
                         ("tasks/vision/detection.py", ""), ("tasks/sampling.py", "")]:
        (fake_src / name).parent.mkdir(parents=True, exist_ok=True)
        (fake_src / name).write_text(source)
    monkeypatch.setitem(globals(), "SRC", fake_src)
    found = violations()
    assert len(found) == 1 and "modelforge.api imports modelforge.tasks.vision.detection" in found[0]
