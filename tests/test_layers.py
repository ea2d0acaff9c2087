"""The layering of docs/architecture.md holds: no module imports from a higher layer."""

import ast
from pathlib import Path

import efflab

SRC = Path(efflab.__file__).resolve().parent
LAYER = {
    "io": 0, "progress": 0, "seeding": 0,
    "attention": 1, "init": 1, "theory": 1,
    "models": 2, "integrations": 2,
    "data": 3, "train": 3, "measure": 3,
    "experiments": 4,
    "report": 5, "cli": 5, "__main__": 5,
}


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "efflab" and len(parts) > 1 else None


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            if node.module == "efflab":
                yield from (f"efflab.{a.name}" for a in node.names)


def test_every_module_imports_only_its_own_layer_or_lower():
    violations = []
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 30
    for path in files:
        rel = path.relative_to(SRC)
        own = rel.parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        assert own in LAYER, f"{rel}: package {own!r} is missing from the layer table"
        for module in _imports(path):
            target = _package(module)
            if target is None or target == "__version__":
                continue
            if LAYER.get(target, -1) > LAYER[own]:
                violations.append(f"{rel} (layer {LAYER[own]}) imports {module} "
                                  f"(layer {LAYER[target]})")
    assert not violations, "\n".join(violations)


def test_the_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from efflab.cli import main\nimport efflab.report\n")
    assert [_package(m) for m in _imports(bad)] == ["cli", "report"]
