"""No import circle runs through the training program or the modules around it (imports inside functions included:
a circle there works only as long as nobody moves an import to the top of a file)."""

import ast
from pathlib import Path

import mome

PACKAGE = Path(mome.__file__).parent
OURS = {"mome.train", "mome.training.loop", "mome.training.checkpointing", "mome.training.finetune", "mome.distributed", "mome.checkpoint",
        "mome.eval.harness", "mome.export.onnx", "mome.export.runtime"}


def _graph() -> dict[str, set[str]]:
    files = {}
    for f in PACKAGE.rglob("*.py"):
        parts = ("mome", *f.relative_to(PACKAGE).with_suffix("").parts)
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph = {}
    for name, f in files.items():
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            # A package's own __init__ is imported by its submodules anyway: not an edge worth reporting.
            deps |= {t for t in targets if t in files and t != name and not name.startswith(t + ".")}
        graph[name] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, done = [], set()

    def visit(node, path):
        for dep in sorted(graph[node]):
            if dep in path:
                found.append(path[path.index(dep):] + [dep])
            elif dep not in done:
                visit(dep, path + [dep])
        done.add(node)

    for node in sorted(graph):
        if node not in done:
            visit(node, [node])
    return found


def test_the_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_through_the_training_program():
    graph = _graph()
    assert OURS <= set(graph), OURS - set(graph)
    circles = [c for c in _cycles(graph) if OURS & set(c)]
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)
