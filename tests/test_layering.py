"""Data flows one way (README, "Design notes"): each part of the package imports only the parts below it.

The order, bottom first. `inference` (the Predictor) sits below `engine` because training validates with the same
Predictor users run; writing ONNX / TorchScript files from a checkpoint is therefore `engine.export`, and the verbs
live in the `*_cli` modules at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import posepart

PACKAGE = Path(posepart.__file__).parent
LAYERS = ("arguments", "errors", "files", "processes", "names", "schema", "heads", "matching", "data", "targets",
          "models", "losses", "decode", "metrics", "viz", "evaluate", "report", "inference", "evaluate_model", "engine",
          "jobs",
          "predict_cli", "evaluate_record", "evaluate_cli", "compare_cli", "demo", "study_report", "study", "cli")
# The one import against the order: `Predictor.from_checkpoint(path)`, the API's entry point, reads the checkpoint
# with the engine's loader, imported when called (a Predictor of an ONNX file never imports it).
ALLOWED = {("posepart.inference.predictor", "posepart.engine.checkpoint")}


def _modules() -> dict[str, Path]:
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _imports(path: Path, package: str = "") -> list[tuple[int, str]]:
    """(line, module) of every `posepart` import in the file, at module level or inside a function; relative ones
    resolved against `package` (the file's own package)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            names = [".".join(base + ([node.module] if node.module else []))]
            if names == ["posepart"]:  # `from posepart import engine` or `train`: the parts imported are the
                # names, or the modules the package takes its exports from
                names = [f"posepart.{alias.name}" if alias.name in LAYERS else posepart._EXPORTS[alias.name]
                         for alias in node.names if alias.name in LAYERS or alias.name in posepart._EXPORTS] or names
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [(node.lineno, name) for name in names if name.split(".")[0] == "posepart"]
    return found


def _layer(module: str) -> str:
    return module.split(".")[1]


def test_every_part_of_the_package_has_a_place_in_the_order():
    unplaced = {_layer(m) for m in _modules() if m != "posepart"} - set(LAYERS)
    assert not unplaced, f"add {sorted(unplaced)} to LAYERS where it belongs"


def test_each_part_imports_only_the_parts_below_it():
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = []
    for module, path in _modules().items():
        if module == "posepart":
            continue
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for line, imported in _imports(path, package):
            if imported == "posepart":  # `__version__` (the exports are resolved to their modules by `_imports`)
                continue
            if (module, imported) in ALLOWED or _layer(imported) == _layer(module):
                continue
            if rank[_layer(imported)] > rank[_layer(module)]:
                upward.append(f"{module}:{line} imports {imported}")
    assert not upward, "imports against the order of LAYERS:\n" + "\n".join(upward)


def test_the_check_sees_imports_inside_functions(tmp_path):
    """The walk must find a lazy import too (most upward imports hid inside functions)."""
    source = tmp_path / "lazy.py"
    source.write_text("def f():\n    from posepart.engine.checkpoint import load_model\n"
                      "    from ..data import format\n    from posepart import engine, __version__\n"
                      "    from .. import cli\n")
    assert _imports(source, "posepart.engine") == [(2, "posepart.engine.checkpoint"), (3, "posepart.data"),
                                                   (4, "posepart.engine"), (5, "posepart.cli")]


def test_the_package_exports_its_entry_points_without_importing_torch():
    """`from posepart import Predictor, train, ...` (a walkthrough: the package exported `__version__` alone, so
    every entry point had to be found under the module the docs name); `import posepart` itself imports no torch
    (the ONNX-only install, the command line's start), and a lower layer importing an export is still an import of
    its module (`_imports`)."""
    import importlib
    import subprocess
    import sys

    light = subprocess.run([sys.executable, "-c", "import sys, posepart; print('torch' in sys.modules)"],
                           capture_output=True, text=True, check=True)
    assert light.stdout.strip() == "False", light.stdout + light.stderr
    assert set(posepart.__all__) <= set(dir(posepart))
    for name, module in posepart._EXPORTS.items():
        assert getattr(posepart, name) is getattr(importlib.import_module(module), name), name
    with pytest.raises(AttributeError, match="has no attribute 'not_a_name'"):
        getattr(posepart, "not_a_name")


def test_loading_a_model_for_inference_and_a_loader_worker_import_no_lightning():
    """A serving walkthrough: `Predictor.from_checkpoint` of a .safetensors or .ckpt imported Lightning (through the
    checkpoint module's CheckpointIO and a data-module helper): 3 s and 265 MB more in every server process. And a
    spawned loader worker (macOS, Windows) imported it for its `worker_init_fn` alone, at every loader start."""
    import subprocess
    import sys

    code = ("import sys; import posepart.engine.checkpoint, posepart.inference.predictor, posepart.engine.workers, "
            "posepart.engine.sampling, posepart.targets.mapper; "
            "print(sorted(m for m in ('lightning', 'torchmetrics', 'matplotlib') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_type_checkers_see_the_exports_where_they_live():
    """The `if TYPE_CHECKING:` imports of `posepart/__init__.py` (what mypy, pyright and IDEs read: a name the module
    `__getattr__` returns is Any to them) name the same objects from the same modules as the lazy table."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    blocks = [node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"]
    assert len(blocks) == 1
    seen = {alias.asname or alias.name: node.module for node in blocks[0].body if isinstance(node, ast.ImportFrom)
            for alias in node.names}
    assert seen == posepart._EXPORTS and set(posepart.__all__) == {"__version__", *posepart._EXPORTS}
