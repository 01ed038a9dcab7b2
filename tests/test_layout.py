"""The package layout follows the data flow: which room may import which, read from the source itself
(every import statement, those inside functions included), and no import cycle anywhere."""

import ast
from pathlib import Path

from . import REPO

# A room's modules may import job modules only from these rooms (data_prep and libraries are not listed).
ALLOWED = {
    "job.errors": set(),
    "job.engine": {"job.engine"},
    "job.deploy": {"job.deploy", "job.errors"},
    "job.kmeans": {"job.engine", "job.kmeans"},
    "job.evaluation": {"job.engine", "job.evaluation"},
    "job.report": set(),
    "job.dataset": {"job.errors"},
    # The top-level modules, each a room of its own, in the order the data flows through them.
    "job.phases": set(),
    "job.config": {"job.deploy", "job.errors", "job.kmeans"},
    "job.checkpoint": {"job.config", "job.dataset", "job.errors"},
    "job.run_folder": {"job.checkpoint", "job.errors"},
    "job.generate": {"job.deploy", "job.errors"},
    "job.model": {"job.errors"},
    "job.predict": {"job.model", "job.dataset", "job.engine", "job.errors"},
    "job.pipeline": {
        "job.engine",
        "job.kmeans",
        "job.deploy",
        "job.evaluation",
        "job.report",
        "job.dataset",
        "job.errors",
        "job.phases",
        "job.config",
        "job.checkpoint",
        "job.run_folder",
        "job.model",
    },
    "job.cli": {"job.pipeline", "job.config", "job.deploy", "job.errors"},
    "job.__main__": {"job.cli"},
}


def _modules() -> dict[str, Path]:
    found = {}
    for package in ("job", "data_prep"):
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of ours that `name` imports (a package's __init__ counts as the package)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            candidates = [module] + [f"{module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        targets.update(c for c in candidates if c in modules and c != name)
    return targets


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _room(module: str) -> str | None:
    return next((room for room in ALLOWED if module == room or module.startswith(room + ".")), None)


def test_data_prep_depends_on_nothing_in_job():
    offending = {
        name: sorted(t for t in targets if t.split(".")[0] == "job")
        for name, targets in _graph().items()
        if name.startswith("data_prep")
    }
    assert {name: t for name, t in offending.items() if t} == {}


def test_each_room_imports_only_the_rooms_below_it():
    wrong = {}
    for name, targets in _graph().items():
        room = _room(name)
        if room is None:
            continue
        bad = sorted(
            t
            for t in targets
            if t.startswith("job") and _room(t) not in ALLOWED[room] | {room} and t != "job"
        )
        if bad:
            wrong[name] = bad
    assert wrong == {}


def test_every_module_of_job_has_a_room():
    """A new module is placed in the rules above before it lands (the package's own __init__ aside)."""
    assert sorted(name for name in _graph() if name.startswith("job.") and _room(name) is None) == []


def test_no_import_cycles_between_modules_or_rooms():
    graph = _graph()
    # Modules: a depth-first search for a back edge.
    state: dict[str, int] = {}
    cycles = []

    def visit(node, trail):
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if target in ("job", "data_prep"):  # the packages' own __init__: lazy exports only
                continue
            if state.get(target) == 1:
                cycles.append([*trail[trail.index(target) :], target] if target in trail else [node, target])
            elif target not in state:
                visit(target, [*trail, target])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []
    # Rooms (engine, kmeans, deploy, ...): no two import each other.
    rooms = {}
    for name, targets in graph.items():
        for target in targets:
            a, b = _room(name) or name, _room(target) or target
            if a != b:
                rooms.setdefault(a, set()).add(b)
    assert [(a, b) for a in rooms for b in rooms[a] if a in rooms.get(b, ())] == []


def test_the_layout_check_sees_a_forbidden_import(tmp_path):
    """The checks above read real import statements: a lower room importing a higher one is caught."""
    path = tmp_path / "kernels.py"
    path.write_text("def f():\n    from job.pipeline import run_job\n")
    modules = {"job.engine.kernels": path, "job.pipeline": path}
    assert _imports("job.engine.kernels", path, modules) == {"job.pipeline"}
    assert _room("job.pipeline") not in ALLOWED["job.engine"]
