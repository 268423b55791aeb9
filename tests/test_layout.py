"""The package's folders are its layers, and imports point down only.

Ground: the domain objects, the records the stages pass along, config, logs, files,
schemas. Above them, in order: transport (MIME, ebMS, signatures), registers (tariffs,
partners, institutions), claims (read, validate, answer), rules, ledger, settlement,
service (the long-running shell), tools, and the command line on top. A module may
import its own layer or any layer below it; an import only for type checking
(`if TYPE_CHECKING:`) names a type and does not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import daemon

PACKAGE = Path(daemon.__file__).parent
LAYERS = (
    "ground",
    "transport",
    "registers",
    "claims",
    "rules",
    "ledger",
    "settlement",
    "service",
    "tools",
    "cli",
)
TOP_LEVEL = {"cli": "cli", "__main__": "cli"}  # every other top-level module is ground


def layer_of(module: str) -> str:
    parts = module.split(".")
    assert parts[0] == "daemon", module
    if len(parts) == 1:
        return "ground"
    if parts[1] in LAYERS:
        return parts[1]
    return TOP_LEVEL.get(parts[1], "ground")


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def imports_of(path: Path) -> list[str]:
    """Every daemon module `path` imports at run time (lazy imports in functions too)."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if _type_checking_block(node):
            return
        if isinstance(node, ast.Import):
            found.extend(a.name for a in node.names if a.name.startswith("daemon"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("daemon"):
            for alias in node.names:  # `from daemon.x import y`: y may be a module
                candidate = f"{node.module}.{alias.name}"
                sub = PACKAGE.parent / candidate.replace(".", "/")
                is_module = sub.with_suffix(".py").exists() or (sub / "__init__.py").exists()
                found.append(candidate if is_module else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_import_points_down_or_sideways_within_a_layer():
    upward = []
    for path in modules():
        me = module_name(path)
        mine = LAYERS.index(layer_of(me))
        for target in imports_of(path):
            if LAYERS.index(layer_of(target)) > mine:
                upward.append(f"{me} ({layer_of(me)}) imports {target} ({layer_of(target)})")
    assert upward == []


def test_the_layer_check_sees_an_upward_import(tmp_path):
    """The check is not vacuous: a ground module importing the service is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from daemon.service import runner\n")
    assert [layer_of(m) for m in imports_of(bad)] == ["service"]
    assert layer_of("daemon.records") == "ground" and layer_of("daemon.cli") == "cli"


def test_every_folder_is_a_known_layer():
    """Each folder of the package is a layer (its subfolders, like the ledger's
    migrations, belong to it)."""
    folders = {p.relative_to(PACKAGE).parts[0] for p in modules() if p.parent != PACKAGE}
    assert folders <= set(LAYERS), folders - set(LAYERS)


def test_no_module_finds_files_through_its_own_path():
    """Shipped data is read through importlib.resources, never `__file__` + parents."""
    offenders = [
        module_name(p) for p in modules() if "__file__" in p.read_text() and p.name != "__init__.py"
    ]
    assert offenders == []
