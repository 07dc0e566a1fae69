"""ARCHITECTURE.md's first sentence, checked: imports run downwards. Every module's imports of vitbench modules
(at the top or inside functions) form no circle, and none reaches a floor above its own."""

from __future__ import annotations

import ast

from tests.conftest import REPO

PACKAGE = REPO / "vitbench"


# The floors, top first (ARCHITECTURE.md's table). A module may import its own floor and those below.
FLOORS = [
    {"warm_server", "__main__"},  # the warm process runs commands through the CLI
    {"cli"},
    {"warm", "suite", "sweep", "bench", "report", "inspect_run", "flags", "bench_rows", "study"},  # warm: the caller's side
    {"cells", "launcher", "verdicts", "report_plots", "report_profile", "report_runs", "stats"},  # what commands share
    {"runner", "recipes", "options"},
    {"loop"},
    {"train", "evaluation", "budget"},
    {"tracking", "liveness", "distributed", "data", "timing", "checkpoints", "compute", "profiling"},
    {"images", "mlflow_ui", "outbox", "plots", "progress", "__init__"},
    {"wall", "models", "peers"},
    {"config", "splits", "yamlfile", "gpus", "serving", "secrets", "names", "errors", "conditions"},
]


def floor_of(module: str) -> int:
    top = module.split(".")[0]
    return next(i for i, f in enumerate(FLOORS) if top in f)


def imports() -> dict[str, set[str]]:
    """module (relative to vitbench, dotted) -> the vitbench modules it imports anywhere in its file."""
    out: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        found = set()
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and getattr(block.test, "id", "") == "TYPE_CHECKING" for n in ast.walk(block)}
        for node in ast.walk(tree):
            if id(node) in typing_only:  # annotations only: never run
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vitbench"):
                base = node.module.removeprefix("vitbench").lstrip(".")
                for alias in node.names:
                    full = f"{base}.{alias.name}".lstrip(".")
                    found.add(full if (PACKAGE / (full.replace(".", "/") + ".py")).exists() else base or "__init__")
            elif isinstance(node, ast.Import):
                found |= {a.name.removeprefix("vitbench.") for a in node.names if a.name.startswith("vitbench.")}
        out[name] = {m for m in found if m and m != name}
    return out



def test_every_module_has_a_floor():
    assert all(floor_of(m) is not None for m in imports())



def test_imports_only_run_downwards():
    upward = [f"{m} imports {t}" for m, targets in imports().items() for t in targets
              if floor_of(t) < floor_of(m)]
    assert upward == [], upward



def test_no_import_circle():
    graph = imports()

    def reaches(a: str, b: str, seen: set[str]) -> bool:
        return any(t == b or (t not in seen and reaches(t, b, seen | {t})) for t in graph.get(a, ()))

    circles = sorted({tuple(sorted((a, b))) for a in graph for b in graph[a] if reaches(b, a, {b})})
    assert circles == [], circles



def test_no_function_is_longer_than_sixty_lines():
    """Signature, docstring and body: a longer function is split where it does two things."""
    long = [f"{path.relative_to(PACKAGE)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in PACKAGE.rglob("*.py") for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > 60]
    assert long == [], long



MAX_FILE_LINES, MAX_CLASS_LINES = 450, 150  # a room a reader takes in at one sitting


def test_no_room_outgrows_a_sitting():
    """No module in vitbench/ over MAX_FILE_LINES lines, no class over MAX_CLASS_LINES."""
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if (n := len(text.splitlines())) > MAX_FILE_LINES:
            too_long.append(f"{path.relative_to(REPO)}: {n} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and (n := node.end_lineno - node.lineno + 1) > MAX_CLASS_LINES:
                too_long.append(f"{path.relative_to(REPO)}: class {node.name}, {n} lines")
    assert too_long == [], too_long
