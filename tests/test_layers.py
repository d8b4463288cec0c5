"""The package's layers only point down: a module imports from its own layer's package or from
layers below it, never from a layer above or a sibling (lazy imports inside functions and
``TYPE_CHECKING`` imports count too). docs/architecture.md draws the same stack."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# where each part of the distribution lives (callbacks/ and datamodules/ ship inside the package)
SOURCES = {"lightning_longrl": REPO / "lightning_longrl", "lightning_longrl.callbacks": REPO / "callbacks",
           "lightning_longrl.datamodules": REPO / "datamodules"}
# bottom to top; parts that share a rank must not import each other
LAYERS = {
    "importing": 0, "distributed": 0, "chat": 0,
    "data": 1,
    "models": 2, "synth": 2, "datamodules": 2,
    "parallel": 3,
    "rl": 4,
    "inference": 5,
    "callbacks": 6,
    "stages": 7, "eval": 7,
    "curate": 8,
    "report": 9,
    "cli": 10,
}


def _modules() -> dict[str, Path]:
    found = {}
    for package, root in SOURCES.items():
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join((package, *parts))
            found.setdefault(name, path)
    return found


def _imports(name: str, path: Path) -> set[str]:
    """Every ``lightning_longrl`` module ``path`` imports, relative imports resolved."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            out.add(target)
            out.update(f"{target}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return {m for m in out if m.split(".")[0] == "lightning_longrl"}


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the package root, which may import anything


MODULES = _modules()


def test_every_part_has_a_layer():
    parts = {_part(m) for m in MODULES} - {None}
    assert parts <= set(LAYERS), f"parts without a layer in this test (add them): {sorted(parts - set(LAYERS))}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _part(m) is not None))
def test_imports_point_down(module: str):
    own = _part(module)
    upward = []
    for target in sorted(_imports(module, MODULES[module])):
        other = _part(target)
        if other is None or other == own or target not in MODULES and target.rsplit(".", 1)[0] not in MODULES:
            continue
        if LAYERS[other] >= LAYERS[own]:
            upward.append(f"{target} ({other}, layer {LAYERS[other]})")
    assert not upward, f"{module} ({own}, layer {LAYERS[own]}) imports from a layer at or above its own: {upward}"


def test_this_check_sees_an_upward_import(tmp_path):
    """The walk resolves relative and lazy imports (so the test above can fail)."""
    path = tmp_path / "grpo.py"
    path.write_text("def f():\n    from ..eval import runner\n    from lightning_longrl.cli import main\n")
    found = _imports("lightning_longrl.stages.grpo", path)
    assert {"lightning_longrl.eval.runner", "lightning_longrl.cli.main"} <= found
    assert _part("lightning_longrl.eval.runner") == "eval" and LAYERS["eval"] >= LAYERS["stages"]
