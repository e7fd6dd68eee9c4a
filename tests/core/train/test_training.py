import itertools
import math

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from anyformer.core import TransformerConfig
from anyformer.core.train.base import (
    AtomicCheckpointIO,
    OptimConfig,
    TaskModule,
    dataclass_from_dict,
    param_groups,
    warmup_cosine,
)
from tests.core.conftest import TinyLM


def test_param_groups_decay_only_weight_matrices():
    model = TinyLM()
    model.no_weight_decay = lambda: {"decoder.blocks.0.attn.out_proj.weight"}
    decay, no_decay = param_groups(model, weight_decay=0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert "decoder.blocks.0.attn.qkv_proj.weight" in decayed
    assert "decoder.blocks.1.mlp.fc2.weight" in decayed
    assert not any(n.endswith(".bias") or "norm" in n or "embedding" in n or "positions" in n for n in decayed)
    assert "decoder.blocks.0.attn.out_proj.weight" not in decayed
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def _group_names(module: nn.Module) -> tuple[set[str], set[str]]:
    """(decayed, not decayed) parameter names of ``param_groups(module)``."""
    decay, no_decay = param_groups(module, weight_decay=0.1)
    names = {id(p): n for n, p in module.named_parameters()}
    return {names[id(p)] for p in decay["params"]}, {names[id(p)] for p in no_decay["params"]}


def _vit_config():
    from anyformer.vision.vit import ViTConfig

    return ViTConfig(
        image_size=8, patch_size=4, transformer=TransformerConfig(dim=16, n_layers=1, n_heads=2, position="none")
    )


def test_no_weight_decay_of_a_submodule_reaches_param_groups_with_its_prefix():
    """The ViT lists its [CLS] token and position table; wrappers that forward nothing still see them."""
    from anyformer.vision.vit import ViT
    from anyformer.vision.vit_task import ViTModule

    assert not hasattr(ViTModule, "no_weight_decay")  # no forwarding code
    for module, prefix in [
        (ViTModule(_vit_config()), "model."),
        (nn.ModuleDict({"backbone": ViT(_vit_config())}), "backbone."),
    ]:
        decayed, kept = _group_names(module)
        assert {f"{prefix}tokenizer.cls_token", f"{prefix}tokenizer.pos_embed"} <= kept
        assert {f"{prefix}tokenizer.proj.weight", f"{prefix}head.weight"} <= decayed
        assert len(decayed) + len(kept) == len(list(module.parameters()))


def test_gpt_decays_exactly_its_linear_matrices_and_the_tied_embedding_once():
    from anyformer.text.gpt.gpt import GPTConfig
    from anyformer.text.gpt.gpt_task import GPTModule

    module = GPTModule(GPTConfig(vocab_size=40, transformer=TransformerConfig(dim=16, n_layers=2, n_heads=2)))
    decayed, kept = _group_names(module)
    matrices = {
        f"model.decoder.blocks.{i}.{name}.weight"
        for i in range(2)
        for name in ("attn.qkv_proj", "attn.out_proj", "mlp.fc1", "mlp.fc2")
    }
    assert decayed == matrices
    everything = {name for name, _ in module.named_parameters()}  # the tied lm_head.weight is listed once
    assert kept == everything - matrices
    assert "model.token_embedding.weight" in kept and "model.lm_head.weight" not in everything


def test_no_weight_decay_naming_a_missing_parameter_is_an_error():
    model = TinyLM()
    model.decoder.no_weight_decay = lambda: {"blocks.0.attn.nope"}
    with pytest.raises(
        ValueError, match=r"Decoder\.no_weight_decay\(\) lists \['blocks\.0\.attn\.nope'\], which are not"
    ):
        param_groups(model, 0.1)


def test_warmup_cosine_schedule_shape():
    lrs = [warmup_cosine(step, warmup_steps=10, total_steps=110, min_lr_ratio=0.1) for step in range(120)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[110] == pytest.approx(0.1) and lrs[119] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))


def test_dataclass_from_dict_rebuilds_nested_configs():
    from dataclasses import asdict

    from anyformer.text.gpt.gpt import GPTConfig

    config = GPTConfig(vocab_size=77, transformer=TransformerConfig(dim=48, n_heads=6, position="rope"))
    assert dataclass_from_dict(GPTConfig, asdict(config)) == config
    assert dataclass_from_dict(OptimConfig, {"lr": 0.5}).lr == 0.5


def test_atomic_checkpoint_io_never_leaves_a_truncated_file(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"weights": torch.ones(3)}, path)
    good = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"weights": torch.zeros(3)}, path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left behind


def test_init_scales_residual_projections():
    torch.manual_seed(0)
    from anyformer.core.init import init_weights

    model = TinyLM(dim=256, n_layers=8, n_heads=4)
    init_weights(model, n_layers=8, std=0.02)
    assert model.decoder.blocks[0].attn.qkv_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.decoder.blocks[0].mlp.fc2.weight.std().item() == pytest.approx(0.02 / 4, rel=0.05)
    assert isinstance(model.decoder.blocks[0].norm1, nn.LayerNorm)


class _LabelledData(pl.LightningDataModule):
    class_names = ("cat", "dog")

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(4, 3), torch.tensor([0, 1, 0, 1])), batch_size=2)


class _Classifier(TaskModule):
    task_name = "toy"

    def __init__(self) -> None:
        super().__init__(config=None, optim=OptimConfig(warmup_steps=1))
        self.model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
        self.model[1].weight = self.model[0].weight  # tied: counted once
        self.class_names: list[str] = []

    def read_data(self, data) -> None:
        self.class_names = list(data.class_names)

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self.model(batch[0]), batch[1])


def test_task_module_keeps_what_the_data_module_gives_and_logs_its_size(tmp_path):
    task = _Classifier()
    logger = CSVLogger(tmp_path)
    trainer = pl.Trainer(max_steps=1, logger=logger, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")  # fmt: skip
    trainer.fit(task, datamodule=_LabelledData())
    assert task.class_names == ["cat", "dog"]
    assert logger.experiment.hparams["n_parameters"] == 3 * 3 + 3 + 3  # one shared matrix, two biases
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    bare = _Classifier()
    trainer.fit(bare, train_dataloaders=_LabelledData().train_dataloader())  # no data module: nothing to read
    assert bare.class_names == []


def test_compile_callback_needs_the_network_in_model():
    from anyformer.core.train.callbacks import CompileModel

    class NoNetwork(pl.LightningModule):
        pass

    with pytest.raises(TypeError, match=r"--compile needs the task's network in \.model"):
        CompileModel().setup(None, NoNetwork(), "fit")
