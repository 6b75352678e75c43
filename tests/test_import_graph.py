"""The package's layering: read from the source (every import statement, at module level or inside a function),
not from what happens to be imported at run time."""
import ast
from pathlib import Path

import cldiff_bench

PACKAGE = Path(cldiff_bench.__file__).parent


def _modules() -> dict[str, tuple[Path, bool]]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["cldiff_bench", *path.relative_to(PACKAGE).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def _imported(module: str, is_package: bool, node, modules) -> list[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[:len(base) - node.level + 1] if node.level else []
        target = ".".join(base + ([node.module] if node.module else []))
        names = [f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names]
    found = []
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name and name != module:
            found.append(name)
    return found


def _import_statements(tree: ast.AST):
    """Every import statement but those for type checkers alone (`if TYPE_CHECKING:`), which never run."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in _import_statements_of(child))
            continue
        yield from _import_statements_of(node)


def _import_statements_of(node: ast.AST):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
    else:
        yield from _import_statements(node)


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for module, (path, is_package) in modules.items():
        graph[module] = {target for node in _import_statements(ast.parse(path.read_text()))
                         for target in _imported(module, is_package, node, modules)}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_graph_reader_sees_function_level_and_relative_imports():
    graph = import_graph()
    assert "cldiff_bench.registry" in graph["cldiff_bench.cli"]          # imported inside main's helper
    assert "cldiff_bench.commands" in graph["cldiff_bench.sweep.command"]  # from ..commands import
    assert "cldiff_bench.registry" not in graph["cldiff_bench.commands"]  # only `if TYPE_CHECKING:`
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_nothing_imports_the_command_line():
    importers = sorted(m for m, targets in import_graph().items() if "cldiff_bench.cli" in targets)
    assert importers == []


def test_the_import_graph_has_no_cycles():
    assert cycles(import_graph()) == []
