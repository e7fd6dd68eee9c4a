"""Wheel acceptance: the built wheel holds only ``anyformer/``, every package folder is declared, and
an install of the wheel alone (not the editable checkout) trains the packaged demo config and plans a
packaged comparison from an empty folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("anyformer", "core", "text", "vision", "speech", "rl", "experiments")
"""The folders the wheel is built from (pyproject's package-dir)."""
SOURCE_FILES = ("pyproject.toml", "README.md")


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _import_name(folder: Path) -> str:
    """``text/gpt`` -> ``anyformer.text.gpt`` through pyproject's package-dir."""
    mapping = {source: name for name, source in _pyproject()["tool"]["setuptools"]["package-dir"].items()}
    top, *rest = folder.relative_to(REPO).parts
    return ".".join([mapping[top], *rest])


def test_every_package_folder_is_declared():
    declared = set(_pyproject()["tool"]["setuptools"]["packages"])
    folders = {init.parent for top in PACKAGE_DIRS for init in (REPO / top).rglob("__init__.py")}
    missing = sorted(_import_name(folder) for folder in folders if "__pycache__" not in folder.parts)
    missing = [name for name in missing if name not in declared]
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built offline from a copy of the working tree (the checkout gets no build/ folder)."""
    source = tmp_path_factory.mktemp("source")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "results", "runs", "*.egg-info")
    for top in PACKAGE_DIRS:
        shutil.copytree(REPO / top, source / top, ignore=ignore)
    for name in SOURCE_FILES:
        shutil.copy(REPO / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", out,
         source],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (built,) = out.glob("anyformer-*.whl")
    return built


def test_wheel_holds_only_the_anyformer_package_and_the_packaged_configs(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert tops == {"anyformer", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    for expected in ("anyformer/api.py", "anyformer/core/cli/main.py", "anyformer/experiments/text/gpt_demo.yaml",
                     "anyformer/experiments/comparisons/suite.yaml"):  # fmt: skip
        assert expected in names


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed (--no-deps); the dependencies come from this venv's
    site-packages through a path line in a .pth file. Such a line adds the folder to sys.path
    without processing its own .pth files, so the editable install's finder stays out."""
    root = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", root], check=True)
    python = root / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    (Path(purelib) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return root


def _run(venv: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"OMP_NUM_THREADS": "1", "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"}
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done


def test_the_installed_wheel_runs_the_packaged_config_and_comparison_from_an_empty_folder(venv, tmp_path):
    where = _run(venv, tmp_path, "python", "-c", "import anyformer, anyformer.core.cli.main as m; print(m.__file__)")
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout  # not the checkout
    assert "tasks (LightningCLI" in _run(venv, tmp_path, "anyformer", "--help").stdout
    _run(venv, tmp_path, "anyformer", "gpt", "fit", "--config", "experiments/text/gpt_demo.yaml",
         "--trainer.max_steps", "3", "--trainer.enable_progress_bar", "false")  # fmt: skip
    assert (tmp_path / "runs" / "gpt_demo" / "checkpoints" / "last.ckpt").is_file()
    record = (tmp_path / "runs" / "gpt_demo" / "run.json").read_text()
    assert '"commit": null' in record  # installed from a wheel: no repository to describe
    assert '"experiments/text/gpt_demo.yaml"' in record  # the command as typed
    plan = _run(venv, tmp_path, "anyformer", "experiment", "suite", "--dry-run").stdout
    assert plan.startswith("# anyformer experiment suite") and "--config experiments/" in plan
    assert not (tmp_path / "experiments").exists()
