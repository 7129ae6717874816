"""Every top-level class name of the package is defined in one module only.

Two classes of one name in two modules make an import line ambiguous to a reader and let the wrong one be
imported without a sound; so a second class takes a name that says what it is.  The only exceptions are
the residual blocks of the model families, each named as in its source architecture and kept inside its
own model file (one file per family): they are different modules with different weights.
"""

from __future__ import annotations

import ast
from pathlib import Path

from test_layers import SOURCE, module_name

# name -> the modules that may each define it, and why
ALLOWED: dict[str, tuple[frozenset[str], str]] = {
    "BasicBlock": (frozenset({"models.resnet2d", "models.resnet3d"}),
                   "torchvision's name for the ResNet-18/34 block: 2D convolutions in one, a 3D conv maker in the other"),
    "Bottleneck": (frozenset({"models.resnet2d", "models.resnet3d", "models.x3d"}),
                   "each family's bottleneck: torchvision's 2D one, 3D-ResNets-PyTorch's 3D one, X3D's depthwise "
                   "branch with squeeze-excitation"),
}


def class_modules(root: Path) -> dict[str, set[str]]:
    """Every class defined at the top level of a module under ``root`` -> the modules that define it."""
    found: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                found.setdefault(node.name, set()).add(module_name(path, root))
    return found


def repeated_names(root: Path, allowed: dict[str, tuple[frozenset[str], str]]) -> list[str]:
    """One line per class name defined in more than one module, other than ``allowed`` exactly as listed."""
    return [f"class {name} is defined in {', '.join(sorted(modules))}; give all but one a name of its own"
            for name, modules in sorted(class_modules(root).items())
            if len(modules) > 1 and modules != allowed.get(name, (frozenset(),))[0]]


def test_every_class_name_is_defined_once() -> None:
    assert repeated_names(SOURCE, ALLOWED) == []


def test_each_allowed_repeat_still_exists() -> None:
    found = class_modules(SOURCE)
    stale = {name: sorted(modules) for name, (modules, _) in ALLOWED.items() if found.get(name) != modules}
    assert not stale, f"ALLOWED lists repeats that are no longer there; update or remove them: {stale}"


def test_a_second_class_of_the_same_name_is_found(tmp_path: Path) -> None:
    (tmp_path / "bench").mkdir()
    (tmp_path / "engine").mkdir()
    (tmp_path / "bench" / "specs.py").write_text("class ModelSpec:\n    pass\n")
    (tmp_path / "engine" / "train.py").write_text("class ModelSpec:\n    pass\n\n\nclass TrainResult:\n    pass\n")
    (tmp_path / "engine" / "loop.py").write_text("def f():\n    class TrainResult:  # not top level\n        pass\n")
    assert repeated_names(tmp_path, {}) == [
        "class ModelSpec is defined in bench.specs, engine.train; give all but one a name of its own"]
