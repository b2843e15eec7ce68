"""Dependencies in syco/ run one way: every package has a layer, a module imports only from lower
layers or from its own package, no module-level import cycles, and every `syco` import is at the
top of its module (none inside a function or class to dodge a cycle). Reads the source with ast;
imports nothing of syco."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "syco"

# lowest first; a package may import only from a lower layer or from itself
LAYERS = {
    "core": 0, "tracking": 0, "lifecycle": 0,
    "models": 1, "data": 1,
    "pm": 2, "policy": 2,
    "eval": 3,
    "bon": 4, "ppo": 4, "analysis": 4,
    "checkpoints": 5,
    "sweeps": 6,
}


def modules() -> dict[str, Path]:
    out = {}
    for f in sorted(ROOT.rglob("*.py")):
        parts = f.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


MODULES = modules()


def unit(module: str) -> str:
    """The layered unit of a module: its package under syco (or the top-level module itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def resolve(name: str) -> str | None:
    """The syco module an imported name lives in (`syco.a.b.f` -> `syco.a.b`)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str, path: Path) -> list[tuple[int, str, str, bool]]:
    """(line, imported module, import as written, at module level) of every syco import."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(n) for n in tree.body}
    # module level also counts imports under a top-level if/try (e.g. `if TYPE_CHECKING:`)
    for node in tree.body:
        if isinstance(node, (ast.If, ast.Try)):
            top |= {id(n) for n in ast.walk(node)}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
            written = "import " + ", ".join(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [f"{base}.{a.name}" for a in node.names]
            written = f"from {'.' * node.level}{node.module or ''} import " + ", ".join(a.name for a in node.names)
        for name in names:
            if name == "syco" or name.startswith("syco."):
                target = resolve(name)
                if target is not None and (node.lineno, target, written, id(node) in top) not in out:
                    out.append((node.lineno, target, written, id(node) in top))
    return out


EDGES = {m: imports(m, p) for m, p in MODULES.items()}


def where(module: str, line: int, written: str) -> str:
    return f"{MODULES[module].relative_to(ROOT.parent)}:{line}: {written}"


def test_every_package_has_a_layer():
    units = {unit(m) for m in MODULES} - {""}
    missing = sorted(units - set(LAYERS))
    assert not missing, f"syco packages without a layer in tests/test_architecture.py LAYERS: {missing}"
    stale = sorted(set(LAYERS) - units)
    assert not stale, f"LAYERS names packages that do not exist: {stale}"


def test_no_function_level_syco_imports():
    bad = [where(m, line, w) for m, edges in EDGES.items() for line, _, w, top in edges if not top]
    assert not bad, "syco imports inside functions or classes (move them to the top of the module):\n" + "\n".join(bad)


def test_imports_run_one_way():
    bad = []
    for m, edges in EDGES.items():
        src = unit(m)
        for line, target, written, _ in edges:
            dst = unit(target)
            if not src or not dst or src == dst:
                continue
            if LAYERS[dst] > LAYERS[src]:
                bad.append(f"{where(m, line, written)}  (upward: {src}, layer {LAYERS[src]} -> {dst}, "
                           f"layer {LAYERS[dst]})")
            elif LAYERS[dst] == LAYERS[src]:
                bad.append(f"{where(m, line, written)}  (across packages of one layer: {src} -> {dst}, "
                           f"layer {LAYERS[src]})")
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_no_module_cycles():
    graph = {m: {t for _, t, _, _ in edges if t != m and not m.startswith(t + ".")} for m, edges in EDGES.items()}
    # a package's __init__ importing its own submodules is not a cycle with them
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                cycles.append(" -> ".join([*stack[stack.index(t):], t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "module import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_violations(tmp_path):
    """The walker finds a function-level import and resolves relative imports."""
    f = tmp_path / "mod.py"
    f.write_text("import os\n\ndef f():\n    from syco.core import ppo\n    return ppo\n")
    MODULES["syco.core._probe"] = f
    try:
        found = imports("syco.core._probe", f)
    finally:
        del MODULES["syco.core._probe"]
    assert found == [(4, "syco.core.ppo", "from syco.core import ppo", False)]
