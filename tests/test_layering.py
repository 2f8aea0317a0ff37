"""The four floors import only downward: zoo <- training <- evaluation <- glrzoo.

Every ``import`` and ``from ... import`` in each package is checked, including the ones inside
functions (``ast.walk`` sees the whole tree), so a lazy import cannot hide an upward arrow.
"""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FLOORS = ("zoo", "training", "evaluation", "glrzoo")  # lowest first


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """``(top-level package, line)`` of every absolute import in the file at ``path``."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out |= {(alias.name.split(".")[0], node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add((node.module.split(".")[0], node.lineno))
    return out


@pytest.mark.parametrize("package", FLOORS)
def test_no_package_imports_a_higher_floor(package):
    higher = set(FLOORS[FLOORS.index(package) + 1:])
    files = sorted((REPO / package).rglob("*.py"))
    assert files, f"no modules found under {package}/"
    upward = [f"{f.relative_to(REPO)}:{line} imports {name}" for f in files
              for name, line in sorted(imported_packages(f)) if name in higher]
    assert not upward, "upward imports (move the code up a floor, or the import down):\n" + "\n".join(upward)


def test_the_checker_sees_function_local_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from evaluation.harness import evaluate\n    import glrzoo.cli\n")
    assert imported_packages(module) == {("evaluation", 2), ("glrzoo", 3)}
