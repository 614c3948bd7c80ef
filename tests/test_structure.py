"""The shape of the code: no module of fidfast imports one that imports it back (function-level imports
included), and README's Layout names every module that exists and none that does not."""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, Set

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fidfast"


def import_graph() -> Dict[str, Set[str]]:
    """Module → the fidfast modules it imports anywhere in its body (``fidfast`` is the package itself;
    importing a submodule's parent package implicitly is not counted)."""
    modules = {p.stem for p in PACKAGE.glob("*.py")} | {"_C"}
    graph: Dict[str, Set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        name = "fidfast" if path.stem == "__init__" else f"fidfast.{path.stem}"
        edges = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name.startswith("fidfast.")}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == "fidfast":
                    edges |= {f"fidfast.{a.name}" if a.name in modules else "fidfast" for a in node.names}
                elif node.module.startswith("fidfast."):
                    edges.add(node.module)
        edges.discard(name)
    return graph


def test_no_module_imports_one_that_imports_it_back():
    graph = import_graph()
    cycles = []

    def visit(node: str, path: list) -> None:
        if node in path:
            cycles.append(path[path.index(node):] + [node])
            return
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, path + [node])

    for start in sorted(graph):
        visit(start, [])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles[:5])


def test_the_graph_sees_function_level_imports(tmp_path):
    assert "fidfast.cli" in import_graph()["fidfast.demo"]  # demo imports the CLI inside main()


def test_readme_layout_matches_the_tree():
    readme = (ROOT / "README.md").read_text()
    layout = re.search(r"## Layout\n.*?```\n(.*?)```", readme, re.S).group(1)
    named = set(re.findall(r"\b([a-z_][a-z0-9_]*\.py)\b", layout))
    modules = {p.name for p in PACKAGE.glob("*.py")} - {"__main__.py"}
    assert modules - named == set(), "modules missing from README's Layout"
    elsewhere = {p.name for folder in ("benchmarks", "tests") for p in (ROOT / folder).glob("*.py")}
    assert named - modules - elsewhere == set(), "named in README's Layout but absent"
