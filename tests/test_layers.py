"""Layers point one way: a module imports only from its own layer or the ones below it, and models,
data and training import without matplotlib, plotly or jinja2."""

import ast
import subprocess
import sys
from pathlib import Path

import superposition

ROOT = Path(superposition.__file__).parent

# shared: configs, errors, seeds, files written whole, memory checks, CPU settings, progress bars,
# redaction of secrets, torch.distributed
SHARED = set("__init__ config errors seeding cpu schedules atomic memory dist progress redact".split())
# Bottom to top. A module may import from its own layer and any layer below.
LAYERS = [
    SHARED,
    {"toy"},  # toy models, their data and trainer
    {"sae"},  # SAE architectures, the trainer, metrics, formats
    {"lm"},  # language models, hook points, text, activation stores, LM evaluations and analysis
    {"interp"},  # explaining latents with language models
    {"viz", "report"},  # figures and HTML, and the one writer of output folders
    {"experiments", "runs"},  # the named experiments (superposition run); whole train-sae runs (runs/)
    {"commands"},  # every command: options, run, the resolver of what it was pointed at
    {"cli", "__main__", "api"},  # the command line, and the names `import superposition` forwards (api.py)
]


def _layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for n, layer in enumerate(LAYERS):
        if top in layer:
            return n
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        yield ".".join(rel.parts), path


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def test_every_import_points_down():
    wrong = []
    for module, path in _modules():
        layer = _layer_of(module)
        for imported in _imports(path):
            if imported == "superposition" or imported.startswith("superposition."):
                if _layer_of(imported) > layer:
                    wrong.append(f"{module} imports {imported}")
    assert not wrong, "\n".join(wrong)


def test_a_layer_below_never_reaches_up(tmp_path):
    """The check itself fails on an upward import (sae importing lm), so it cannot pass vacuously."""
    bad = tmp_path / "bad.py"
    bad.write_text("from superposition.lm.hooks import HookedModel\n")
    assert any(_layer_of(m) > _layer_of("superposition.sae.x") for m in _imports(bad))


def test_models_data_and_training_import_without_plotting_or_templates():
    lower = [m for m, _ in _modules() if _layer_of(m) <= 4 and not m.endswith("__main__")]
    code = (
        "import sys\n"
        "for blocked in ('matplotlib', 'plotly', 'jinja2'):\n"
        "    sys.modules[blocked] = None\n"
        f"for m in {lower!r}:\n"
        "    __import__(m)\n"
        "print(len(sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(lower) > 20  # the check covers the whole lower half of the package


def test_a_command_imports_no_other_commands_internals():
    """Commands are glue over the library: what two commands share lives below them (or in
    commands/base.py, the options every command composes)."""
    wrong = []
    for module, path in _modules():
        if not module.startswith("superposition.commands."):
            continue
        for imported in _imports(path):
            if imported.startswith("superposition.commands.") and imported != "superposition.commands.base":
                wrong.append(f"{module} imports {imported}")
    assert not wrong, "\n".join(wrong)
