"""The shape of the package: no import cycles, no module too long to read.

Both rules keep the code easy to learn from. A module that (even indirectly) imports itself
has no first page: to understand either side you must already know the other, and the cycle
only works because some imports were pushed into functions. A module longer than
``MAX_LINES`` holds more than one idea and should be split along its seams.

The import graph is read from the source with ``ast`` (nothing is imported): an edge
``a -> b`` for every ``import llm_from_scratch.b`` / ``from llm_from_scratch.b import x``
in ``a``, at module level or inside a function (an import inside a function still ties the
two modules together, it only delays when).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "llm_from_scratch"
SOURCE_ROOT = Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 600

# Modules allowed to be longer than MAX_LINES, each with the reason. Keep it empty.
LONG_MODULES_ALLOWED: dict[str, str] = {}


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (``pkg/__init__.py`` is ``pkg``)."""
    modules = {}
    for path in sorted((SOURCE_ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SOURCE_ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that module ``name`` imports, anywhere in its code."""

    def known(dotted: str) -> str | None:
        """``dotted`` itself if it is a module, else the closest enclosing module (or None)."""
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: resolve against this module's package
                package = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            # `from pkg import sub` imports the module pkg.sub; `from pkg import func` imports pkg.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                module = known(target)
                if module is not None and module != name:
                    found.add(module)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None. Depth-first search with three colours:
    a module still on the current path that is reached again closes a cycle."""
    on_path: list[str] = []
    state: dict[str, str] = {}  # "visiting" while on the path, "done" once fully explored

    def visit(module: str) -> list[str] | None:
        state[module] = "visiting"
        on_path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "visiting":
                return on_path[on_path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        on_path.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            if cycle:
                return cycle
    return None


def test_the_graph_reader_sees_imports_inside_functions():
    graph = import_graph()
    assert "llm_from_scratch.io.checkpoints" in graph["llm_from_scratch.loading"]  # module level
    assert "llm_from_scratch.weights.gpt2" in graph["llm_from_scratch.loading"]    # inside a function
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle) + (
        ". Move what both sides need into a module that neither imports, or turn the dependency around.")


def test_no_module_is_too_long():
    too_long = {}
    for name, path in module_files().items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES and name not in LONG_MODULES_ALLOWED:
            too_long[name] = lines
    assert not too_long, (f"modules over {MAX_LINES} lines: {too_long}. Split each along its seams "
                          "(one concept per module), keeping its public names importable from the old path.")


# The one training loop: only these modules may update weights. `optim.py` defines the optimizers
# (Muon + AdamW step together inside one); every method of training asks the trainer instead.
UPDATES_ALLOWED_IN = {"llm_from_scratch.training.trainer", "llm_from_scratch.training.optim"}


def weight_updates(path: Path) -> list[int]:
    """Lines of `path` that update weights as a training loop does: `<...optim...>.step()`,
    `scaler.step(...)` or a gradient clip (`clip_grad_norm_`)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        receiver = ast.unparse(node.func.value).lower()
        if node.func.attr == "step" and ("optim" in receiver or receiver.endswith(("opt", "scaler"))):
            lines.append(node.lineno)
        elif node.func.attr == "clip_grad_norm_":
            lines.append(node.lineno)
    return lines


def test_the_update_finder_sees_an_optimizer_step(tmp_path):
    second_loop = tmp_path / "loop.py"
    second_loop.write_text("def train(model, optimizer, loss):\n    loss.backward()\n    self.optimizer.step()\n"
                           "    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n    scheduler.step()\n")
    assert weight_updates(second_loop) == [3, 4]


def test_there_is_one_training_loop():
    """Pretraining, fine-tuning, DPO and GRPO all train through training/trainer.py: a second
    module that steps an optimizer is a second training loop (with its own resume, logging and
    precision to keep in step), so it fails here. A new method belongs in a `TrainingMethod`."""
    found = {name: lines for name, path in module_files().items()
             if name not in UPDATES_ALLOWED_IN and (lines := weight_updates(path))}
    assert not found, ("weights are updated outside the training loop: " + ", ".join(
        f"{name} (lines {lines})" for name, lines in found.items()) + ". Write a TrainingMethod (training/method.py) "
        "whose train_step calls trainer.update() instead.")
