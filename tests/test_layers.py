"""Issue 15: the package's modules import each other bottom-up, without cycles.

The imports of ``metasgd_rl/*.py`` are read with ``ast``: module-level imports and imports inside functions
(run when called) count; those under ``if TYPE_CHECKING:`` never run, so the runtime check leaves them out,
and a stricter check counts them too. The implicit import of the package ``metasgd_rl/__init__.py`` that
every submodule import makes is not an edge; an explicit ``from metasgd_rl import name`` is.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "metasgd_rl"
SOURCE = Path(__file__).resolve().parents[1] / PACKAGE
MODULES = {path.stem: path for path in sorted(SOURCE.glob("*.py"))}  # "__init__" is the package itself


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _targets(node: ast.Import | ast.ImportFrom) -> set[str]:
    """The package's modules that an import statement imports (``__init__`` for the package itself)."""
    if isinstance(node, ast.Import):
        dotted = [alias.name for alias in node.names]
        imported_names: list[str] = []
    elif node.level == 0:
        dotted, imported_names = [node.module or ""], [alias.name for alias in node.names]
    elif node.level == 1:  # relative, from a module of the package
        dotted = [PACKAGE + ("." + node.module if node.module else "")]
        imported_names = [alias.name for alias in node.names]
    else:
        return set()
    found = set()
    for name in dotted:
        parts = name.split(".")
        if parts[0] != PACKAGE:
            continue
        if len(parts) == 1:
            found.add("__init__")
            # ``from metasgd_rl import model`` imports the submodule; ``from metasgd_rl import Task`` the package
            found.update(n if n in MODULES else "__init__" for n in imported_names)
        elif parts[1] in MODULES:
            found.add(parts[1])
    return found


def imports(module: str) -> dict[str, set[str]]:
    """``{target module: kinds}`` with kinds among ``"module"``, ``"function"`` and ``"TYPE_CHECKING"``."""
    found: dict[str, set[str]] = {}

    def visit(node: ast.AST, in_function: bool, type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    visit_statement(stmt, in_function, True)
                for stmt in child.orelse:
                    visit_statement(stmt, in_function, type_checking)
            else:
                visit_statement(child, in_function, type_checking)

    def visit_statement(node: ast.AST, in_function: bool, type_checking: bool) -> None:
        in_function = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        if isinstance(node, ast.Import | ast.ImportFrom):
            kind = "TYPE_CHECKING" if type_checking else "function" if in_function else "module"
            for target in _targets(node) - {module}:
                found.setdefault(target, set()).add(kind)
        visit(node, in_function, type_checking)

    visit(ast.parse(MODULES[module].read_text(), filename=str(MODULES[module])), False, False)
    return found


def import_graph(kinds: set[str]) -> dict[str, set[str]]:
    return {m: {t for t, ks in imports(m).items() if ks & kinds} for m in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := dfs(start)):
            return cycle
    return None


def test_the_parser_sees_the_kinds_of_imports():
    model = imports("model")
    assert "module" in model["outer"] and "module" in model["callbacks"]
    assert "function" in model["gym_family"]  # imported inside a function
    assert imports("cli")["__init__"] == {"function"}  # ``from metasgd_rl import __version__`` in a function
    assert "TYPE_CHECKING" in imports("probe")["model"]


def test_no_import_cycle_among_the_modules_at_runtime():
    cycle = find_cycle(import_graph({"module", "function"}))
    assert cycle is None, " -> ".join(cycle)


def test_no_import_cycle_even_counting_type_checking_imports():
    cycle = find_cycle(import_graph({"module", "function", "TYPE_CHECKING"}))
    assert cycle is None, " -> ".join(cycle)


def test_outer_optimisers_and_callbacks_do_not_import_the_model_at_all():
    for module in ("outer", "callbacks"):
        assert "model" not in imports(module), f"metasgd_rl/{module}.py imports metasgd_rl.model"
        assert "__init__" not in imports(module), f"metasgd_rl/{module}.py imports the package (and so the model)"


def test_the_model_provides_what_the_outer_optimisers_read():
    from metasgd_rl.interfaces import MetaLearner
    from metasgd_rl.model import MAML, MetaSGD
    from metasgd_rl_envs.navigation import Navigation2DFamily

    members = {name for name in vars(MetaLearner) if not name.startswith("_")}
    assert members >= {"policy", "step_sizes", "meta_gradient"}
    for cls in (MetaSGD, MAML):
        model = cls(Navigation2DFamily(), policy_kwargs={"hidden_sizes": [8]}, meta_batch_size=2)
        assert {name for name in members if not hasattr(model, name)} == set(), cls.__name__
