"""Structure the architecture page promises: imports only downward (zoo <- training <- evaluation
<- glrzoo) and no import cycle between modules at file level (imports inside functions are the
plugin pattern's lazy imports and are allowed)."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("zoo", "training", "evaluation", "glrzoo")
LAYER = {name: i for i, name in enumerate(PACKAGES)}


def module_imports() -> dict[str, set[str]]:
    """``{module: project modules it imports at file level}``."""
    graph = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            found = set()
            for node in ast.parse(path.read_text()).body:  # top level only
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                found |= {n for n in names if n.split(".")[0] in PACKAGES}
            graph[module] = found
    modules = set(graph)
    return {m: {n for n in deps if n in modules and n != m} for m, deps in graph.items()}


def test_imports_only_go_downward():
    upward = [(m, n) for m, deps in module_imports().items() for n in deps
              if LAYER[n.split(".")[0]] > LAYER[m.split(".")[0]]]
    assert not upward, f"upward imports (zoo <- training <- evaluation <- glrzoo): {upward}"


def test_no_file_level_import_cycle():
    graph = module_imports()
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = "open"
        for n in sorted(graph.get(m, ())):
            if state.get(n) == "open":
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    # a package's __init__ re-exporting its modules is not a cycle of those modules
    real = [c for c in cycles if not any(x in PACKAGES for x in c)]
    assert not real, f"import cycles: {real}"


def test_no_function_over_80_lines():
    """Long functions doing several jobs are split (benchmarks excepted)."""
    long = []
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = node.end_lineno - node.lineno + 1
                    if length > 80:
                        long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, long
