"""Checkpoints are read as data, never run: a ``.ckpt`` whose pickle would run code (here: create a
marker file) is refused with one line by every reader, and the marker never appears.

Every ``torch.load`` of the package passes ``weights_only=True`` (the ``--ckpt_path`` resume through
``AtomicCheckpointIO.load_checkpoint`` forces it), datasets are read with ``allow_pickle=False``, and
safetensors exports hold no pickle at all.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import anyformer
from anyformer.core.cli.errors import UsageError
from anyformer.core.cli.main import main
from anyformer.core.train.base import AtomicCheckpointIO
from anyformer.core.train.checkpoint import read_checkpoint
from anyformer.text.gpt.gpt import GPTConfig
from anyformer.text.gpt.gpt_task import GPTModule
from anyformer.text.tokenizer import CharTokenizer
from tests.helpers import run_cli
from tests.reliability.tiny_gpt import fit_args, write_corpus


class Payload:
    """Unpickling this calls ``open(marker, "w")``: the file appears if the pickle is run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def evil(tmp_path_factory) -> tuple[Path, Path]:
    """(a real tiny GPT checkpoint plus the payload, the marker the payload would create)."""
    import pytorch_lightning as pl

    root = tmp_path_factory.mktemp("pickle")
    tokenizer = CharTokenizer.train(["hello world"])
    gpt = GPTModule(GPTConfig(vocab_size=tokenizer.vocab_size))
    gpt.tokenizer = tokenizer
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu")
    trainer.strategy.connect(gpt)
    trainer.save_checkpoint(root / "good.ckpt")
    checkpoint = torch.load(root / "good.ckpt", weights_only=True)
    marker = root / "MARKER"
    checkpoint["anyformer"]["payload"] = Payload(marker)
    torch.save(checkpoint, root / "evil.ckpt")
    return root / "evil.ckpt", marker


def _refused(message: str, path: Path) -> None:
    assert "\n" not in message.strip() and str(path) in message, message
    assert "holds objects other than tensors and plain data (Unsupported global: GLOBAL io.open)" in message


def test_api_readers_refuse_it(evil) -> None:
    path, marker = evil
    resume = AtomicCheckpointIO().load_checkpoint  # what Trainer.fit(ckpt_path=...) reads through
    for read in (anyformer.load, read_checkpoint, GPTModule.load_from_checkpoint, resume):
        with pytest.raises(UsageError) as raised:
            read(path)
        _refused(str(raised.value), path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "--ckpt", "{ckpt}", "--max-new-tokens", "2"],
        ["export", "--ckpt", "{ckpt}", "--format", "safetensors", "--out", "{out}"],
    ],
    ids=["generate", "export"],
)
def test_commands_refuse_it(argv, evil, tmp_path, capsys) -> None:
    path, marker = evil
    code = main([arg.format(ckpt=path, out=tmp_path / "out") for arg in argv])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.startswith(f"anyformer {argv[0]}: error: "), err
    _refused(err, path)
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_resume_refuses_it(evil, tmp_path, capsys) -> None:
    path, marker = evil
    run_cli(
        tmp_path, [*fit_args("resume", write_corpus(tmp_path), {"trainer.max_steps": 2}), "--ckpt_path", str(path)], 2
    )
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("anyformer gpt")]
    assert len(lines) == 1 and lines[0].startswith("anyformer gpt: error: "), lines
    _refused(lines[0], path)
    assert not marker.exists()
    assert not list((tmp_path / "runs").rglob("*.ckpt")), "nothing trained"


def test_every_torch_load_is_weights_only() -> None:
    """Source check: each ``torch.load(`` call of the package passes ``weights_only=True``."""
    import ast

    root = Path(__file__).resolve().parents[2]
    offenders = []
    for file in root.rglob("*.py"):
        if any(part in (".venv", "tests", "build") or part.startswith(".") for part in file.relative_to(root).parts):
            continue
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("torch.load", "np.load", "numpy.load"):
                safe = {kw.arg: ast.unparse(kw.value) for kw in node.keywords}
                if safe.get("weights_only") != "True" and safe.get("allow_pickle") != "False":
                    offenders.append(f"{file.relative_to(root)}:{node.lineno}")
    assert offenders == []
