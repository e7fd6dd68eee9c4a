"""The layering of the code base, read from the import statements (ast, nothing is imported).

- The transformer part of ``core/`` (every module directly in ``core/``) names no domain, no
  experiment and none of the plumbing beside it (``core/train``, ``core/cli``, ``core/data``) nor the
  front door (``anyformer/``).
- A domain (``text``, ``vision``, ``speech``, ``rl``) never imports another domain nor ``experiments``:
  what is shared moves down into ``core``.
- The training and data plumbing (``core/train``, ``core/data``) import no domain and no experiment.
- Only the CLI layer (``core/cli/`` and ``anyformer/``) may name modules in strings (``"pkg.mod:attr"``
  resolved at run time), the one way to dispatch across domains without importing them.

Every ``import x`` and ``from x import y`` counts, at any nesting: a function-level (lazy) import
or one under ``if TYPE_CHECKING:`` is still a dependency.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"anyformer": "anyformer", "core": "anyformer.core", "text": "anyformer.text",
            "vision": "anyformer.vision", "speech": "anyformer.speech", "rl": "anyformer.rl",
            "experiments": "anyformer.experiments"}  # fmt: skip
"""Top-level folder -> its import name (``[tool.setuptools.package-dir]`` of pyproject.toml)."""
DOMAINS = ("text", "vision", "speech", "rl")
PLUMBING = ("train", "cli", "data")
"""Subpackages of ``core/`` that stand beside the transformer."""
MODULE_PATH = re.compile(r"anyformer\.(core|text|vision|speech|rl|experiments|api|adapters)(\.\w+)*(:[\w.]+)?")
"""A string naming a module of ours, as ``importlib``-style registries write them (``anyformer.json``,
a file name, is not one)."""


def layer(name: str) -> str | None:
    """Layer of the dotted module (or module attribute) ``name``; None for a third-party name.

    ``core``, ``core.train``, ``core.cli``, ``core.data``, a domain, ``experiments`` or ``front``
    (the ``anyformer`` package itself: ``anyformer.load``, ``anyformer.api``).
    """
    parts = name.split(".")
    if parts[0] != "anyformer":
        return None
    if len(parts) == 1:
        return "front"
    if parts[1] in DOMAINS or parts[1] == "experiments":
        return parts[1]
    if parts[1] == "core":
        return f"core.{parts[2]}" if len(parts) > 2 and parts[2] in PLUMBING else "core"
    return "front"


def module_name(path: Path) -> str:
    """``core/train/atomic.py`` -> ``anyformer.core.train.atomic``; a package's ``__init__.py`` -> the package."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGES[parts[0]], *parts[1:]])


@dataclass(frozen=True)
class Import:
    module: str
    """The importing module."""
    target: str
    """What it imports: ``pkg.mod`` for ``import pkg.mod``, ``pkg.mod.name`` for ``from pkg.mod import name``."""
    line: int

    def __str__(self) -> str:
        return f"{self.module} -> {self.target} (line {self.line})"


def imports(source: str, module: str, is_package: bool = False) -> list[Import]:
    """Every import of ``source`` (the code of ``module``), at any depth, relative ones resolved."""
    found = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found += [Import(module, f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return found


def module_strings(source: str, module: str) -> list[Import]:
    """String constants of ``source`` that are whole module paths of ours (``"anyformer.text.gpt:GPT"``)."""
    return [
        Import(module, node.value, node.lineno)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_PATH.fullmatch(node.value)
    ]


def sources() -> list[Path]:
    return sorted(path for folder in PACKAGES for path in (REPO / folder).rglob("*.py"))


def all_imports() -> list[Import]:
    return [
        found
        for path in sources()
        for found in imports(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py")
    ]


def breaches(importer_layers: set[str], forbidden: set[str], *, same_layer: bool = True) -> list[str]:
    """Imports from a module of ``importer_layers`` into ``forbidden`` (or into another domain)."""
    found = []
    for imported in all_imports():
        source, target = layer(imported.module), layer(imported.target)
        if source not in importer_layers or target is None:
            continue
        if target in forbidden and (same_layer or target != source):
            found.append(str(imported))
    return found


def test_the_scanner_finds_lazy_relative_and_type_checking_imports():
    source = """
import os
import anyformer.text.gpt as gpt
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from anyformer.vision.vit import ViT
def load():
    from anyformer.core import train
    from . import masks
    from ..cli.errors import UsageError
    return "anyformer.rl.dt_task:DTModule", "anyformer is great", "anyformer"
"""
    found = imports(source, "anyformer.core.data.fetch")
    assert [(item.target, item.line) for item in found] == [
        ("os", 2), ("anyformer.text.gpt", 3), ("typing.TYPE_CHECKING", 4), ("anyformer.vision.vit.ViT", 6),
        ("anyformer.core.train", 8), ("anyformer.core.data.masks", 9), ("anyformer.core.cli.errors.UsageError", 10),
    ]  # fmt: skip
    assert [layer(item.target) for item in found] == [
        None,
        "text",
        None,
        "vision",
        "core.train",
        "core.data",
        "core.cli",
    ]
    assert [item.target for item in imports("from .stack import Stack", "anyformer.core", is_package=True)] == [
        "anyformer.core.stack.Stack"
    ]
    assert [item.target for item in module_strings(source, "m")] == ["anyformer.rl.dt_task:DTModule"]


def test_module_names_follow_the_package_dirs():
    assert module_name(REPO / "core" / "train" / "atomic.py") == "anyformer.core.train.atomic"
    assert module_name(REPO / "core" / "__init__.py") == "anyformer.core"
    assert module_name(REPO / "anyformer" / "__main__.py") == "anyformer.__main__"
    assert layer("anyformer.core.attention") == "core" and layer("anyformer.core.data") == "core.data"
    assert layer("anyformer.api") == "front" and layer("anyformer.experiments.bench") == "experiments"


def test_the_transformer_core_imports_no_domain_no_experiment_and_no_plumbing():
    forbidden = {*DOMAINS, "experiments", "front", *(f"core.{name}" for name in PLUMBING)}
    assert breaches({"core"}, forbidden) == []


def test_no_domain_imports_another_domain_or_the_experiments():
    assert breaches(set(DOMAINS), {*DOMAINS, "experiments"}, same_layer=False) == []


@pytest.mark.parametrize("plumbing", ["core.train", "core.data"])
def test_training_and_data_plumbing_import_no_domain_and_no_experiment(plumbing: str):
    assert breaches({plumbing}, {*DOMAINS, "experiments"}) == []


def test_only_the_cli_layer_names_modules_in_strings():
    """``experiments/`` is exempt too: it is the top layer, free to import anything, and its module
    strings are ``python -m`` commands of subprocesses, not a way around the rules above."""
    allowed = {"core.cli", "front", "experiments"}
    named = [
        str(found)
        for path in sources()
        if layer(module_name(path)) not in allowed
        for found in module_strings(path.read_text(encoding="utf-8"), module_name(path))
    ]
    assert named == []
