"""The layer rule import-linter cannot check: the Pulumi program in infra/ never imports prefect_host.

infra/ is no package (Pulumi runs the folder with runpy and its modules import each other as top-level
modules, `from stack_config import ...`), so it cannot be a root of import-linter's graph; its files are
read here instead. The other layer rules are the contracts in pyproject.toml (`lint-imports`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
FORBIDDEN = "prefect_host"


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every absolute import in the file: nested in functions or under TYPE_CHECKING too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def test_infra_never_imports_prefect_host() -> None:
    files = sorted(INFRA.glob("*.py"))
    siblings = {path.stem for path in files}
    imports = {path: imports_of(path) for path in files}
    # Guards against a check that passes because it read nothing.
    assert "__main__" in siblings and any(module == "pulumi" for found in imports.values() for _, module in found)

    direct = []
    through = set()  # this repo's other packages that infra imports, which could import prefect_host in turn
    for path, found in imports.items():
        for line, module in found:
            top = module.split(".")[0]
            if top == FORBIDDEN:
                direct.append(f"{path.relative_to(REPO)}:{line} imports {module}")
            elif top not in siblings and (REPO / top / "__init__.py").is_file():
                through.add(top)
    assert not direct, "infra/ must not import prefect_host:\n" + "\n".join(direct)

    if through:
        graph = grimp.build_graph(FORBIDDEN, *sorted(through), cache_dir=None)
        chains = (graph.find_shortest_chain(package, FORBIDDEN, as_packages=True) for package in sorted(through))
        shown = [" -> ".join(chain) for chain in chains if chain]
        assert not shown, "infra/ imports prefect_host through another package:\n" + "\n".join(shown)
