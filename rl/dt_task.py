"""``anyformer dt``: train a Decision Transformer (or its behaviour-cloning baseline) offline."""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor

from anyformer.core.train.base import OptimConfig, TaskModule
from anyformer.rl.dt import DecisionTransformer, DTConfig

Batch = dict[str, Tensor]


class DTModule(TaskModule):
    """Predicts the dataset's action at every real step of a window: cross-entropy for discrete
    actions (mean squared error for continuous ones); validation also reports action accuracy.

    The checkpoint carries what a rollout needs beyond the config: the environment id and the
    dataset's return statistics (to pick sensible target returns).
    """

    task_name = "dt"
    data_links: ClassVar[dict[str, str]] = {
        "obs_shape": "config.obs_shape",
        "obs_kind": "config.obs_kind",
        "action_kind": "config.action_kind",
        "n_actions": "config.n_actions",
        "action_dim": "config.action_dim",
        "context_len": "config.context_len",
        "max_timestep": "config.max_timestep",
        "rtg_scale": "config.rtg_scale",
    }

    def __init__(self, config: DTConfig, optim: OptimConfig | None = None) -> None:
        """
        Args:
            config: the model.
            optim: optimizer and schedule.
        """
        super().__init__(config, optim)
        self.model = DecisionTransformer(config)
        self.env_id: str | None = None
        self.dataset_returns: dict[str, float] = {}

    def read_data(self, data: Any) -> None:
        self.env_id, self.dataset_returns = data.env_id, dict(data.return_stats)

    def inference_state(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "env_id": self.env_id,
            "rtg_scale": cfg.rtg_scale,
            "obs_shape": list(cfg.obs_shape),
            "obs_kind": cfg.obs_kind,
            "action_kind": cfg.action_kind,
            "n_actions": cfg.n_actions,
            "action_dim": cfg.action_dim,
            "dataset_returns": self.dataset_returns,
        }

    def load_inference_state(self, state: dict[str, Any]) -> None:
        self.env_id = state.get("env_id")
        self.dataset_returns = dict(state.get("dataset_returns") or {})

    def forward(self, batch: Batch) -> Tensor:
        """A batch of windows -> (B, K, n_actions) logits or (B, K, action_dim) actions."""
        return self.model(
            batch["returns_to_go"], batch["states"], batch["actions"], batch["timesteps"], keep=batch["keep"]
        )

    def _step(self, batch: Batch) -> tuple[Tensor, Tensor | None]:
        """Loss over the real (unpadded) steps, and for discrete actions the accuracy there."""
        predictions, keep, actions = self(batch), batch["keep"], batch["actions"]
        if self.config.action_kind == "discrete":
            logits, targets = predictions[keep], actions[keep]  # (M, n_actions), (M,)
            return F.cross_entropy(logits, targets), (logits.argmax(-1) == targets).float().mean()
        return F.mse_loss(predictions[keep], actions[keep].to(predictions.dtype)), None

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss, accuracy = self._step(batch)
        self.check_finite(loss)
        self.log("train_loss", loss, prog_bar=True)
        if accuracy is not None:
            self.log("train_action_acc", accuracy)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        loss, accuracy = self._step(batch)
        self.log("val_loss", loss, prog_bar=True)
        if accuracy is not None:
            self.log("val_action_acc", accuracy, prog_bar=True)
