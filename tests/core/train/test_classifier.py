"""anyformer.core.train.classifier.ClassifierModule against formulas: split accuracy over uneven batches, label
smoothing in the training loss only, soft (mixup) labels, class names, the test split."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from anyformer.core.train.classifier import ClassifierModule


@dataclass
class ToyConfig:
    num_classes: int = 3
    features: int = 4


class ToyClassifier(ClassifierModule):
    task_name = "toy"

    def __init__(self, label_smoothing: float = 0.0) -> None:
        config = ToyConfig()
        torch.manual_seed(0)
        super().__init__(config, nn.Linear(config.features, config.num_classes), None, label_smoothing)

    def batch_logits(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        return self.model(batch[0])

    def batch_labels(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        return batch[1]


def _trainer() -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=False)  # fmt: skip


def _data(n: int = 23) -> tuple[Tensor, Tensor]:
    torch.manual_seed(1)
    return torch.randn(n, 4), torch.randint(0, 3, (n,))


@pytest.mark.parametrize("split", ["validate", "test"])
def test_split_accuracy_and_loss_are_over_all_examples_not_a_mean_of_batches(split: str) -> None:
    module = ToyClassifier(label_smoothing=0.2)
    features, labels = _data()
    loader = DataLoader(TensorDataset(features, labels), batch_size=10)  # batches of 10, 10 and 3
    [metrics] = getattr(_trainer(), split)(module, dataloaders=loader, verbose=False)
    prefix = "val" if split == "validate" else "test"
    with torch.no_grad():
        logits = module.model(features)
    assert metrics[f"{prefix}_acc"] == pytest.approx((logits.argmax(-1) == labels).float().mean().item(), abs=1e-6)
    # no label smoothing outside training: the loss of the model's own probabilities
    assert metrics[f"{prefix}_loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), abs=1e-5)


def test_training_loss_is_label_smoothed_and_soft_labels_log_no_accuracy() -> None:
    module = ToyClassifier(label_smoothing=0.2)
    module.log = lambda name, value, **kwargs: logged.__setitem__(name, float(torch.as_tensor(value).detach()))  # type: ignore[method-assign]
    features, labels = _data(8)
    logged: dict[str, float] = {}
    loss = module.training_step((features, labels), 0)
    expected = F.cross_entropy(module.model(features), labels, label_smoothing=0.2)
    torch.testing.assert_close(loss, expected)
    assert set(logged) == {"train_loss", "train_acc"}
    logged.clear()
    soft = F.one_hot(labels, 3).float() * 0.7 + 0.1  # mixup-style class probabilities
    module.training_step((features, soft), 0)
    assert set(logged) == {"train_loss"}


def test_bad_label_smoothing_and_class_count_are_named() -> None:
    with pytest.raises(ValueError, match=r"ToyClassifier.label_smoothing must be in \[0, 1\), got 1.0"):
        ToyClassifier(label_smoothing=1.0)
    module = ToyClassifier()
    with pytest.raises(ValueError, match="the data has 2 classes but the model was built for 3"):
        module.read_data(type("Data", (), {"class_names": ["a", "b"]})())
    module.read_data(type("Data", (), {"class_names": ["cat", "dog", "bird"]})())
    state = module.inference_state()
    fresh = ToyClassifier()
    fresh.load_inference_state(state)
    assert fresh.class_names == ["cat", "dog", "bird"]
    probs = fresh.predict_step(_data(5), 0)
    torch.testing.assert_close(probs.sum(-1), torch.ones(5))
