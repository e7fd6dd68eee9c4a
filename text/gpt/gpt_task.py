"""``anyformer gpt``: train a GPT with next-token cross-entropy (the objective; the network is
``anyformer.text.gpt.gpt.GPT``)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor

from anyformer.core.train.base import OptimConfig, TaskModule
from anyformer.text.gpt.gpt import GPT, GPTConfig
from anyformer.text.hf import gpt_from_hf, load_weights


class GPTModule(TaskModule):
    """Trains GPT with next-token cross-entropy; validation reports nats/token and bits/char."""

    task_name = "gpt"
    # The HF folder seeds the weights once; a trained model's checkpoint carries them and the
    # config taken from it, so rebuilding it (load_from_checkpoint) must not read that folder again.
    hparams_ignore: ClassVar[tuple[str, ...]] = ("init_from",)
    data_links: ClassVar[dict[str, str]] = {
        "vocab_size": "config.vocab_size",
        "context_len": "config.transformer.max_seq_len",
        "init_from": "init_from",
    }

    def __init__(
        self,
        config: GPTConfig,
        optim: OptimConfig | None = None,
        balance_loss_weight: float = 0.01,
        init_from: str | None = None,
    ) -> None:
        """
        Args:
            config: the model. With ``init_from`` its architecture comes from the HF config.json
                (see ``anyformer.text.hf``): only dropout, attn_dropout and a ``max_seq_len`` up to
                the HF positions are read from here.
            optim: optimizer and schedule.
            balance_loss_weight: weight of the mixture-of-experts balancing loss (unused when dense).
            init_from: ``hf:<folder or hub id>`` of a GPT-2 model to start from (linked from
                ``data.init_from``, which also takes the tokenizer from it); None trains from scratch.
        """
        state = None
        if init_from is not None:
            config, state = gpt_from_hf(init_from, config)  # before super(): the hparams keep this config
        super().__init__(config, optim)
        self.model = GPT(config)
        self.init_from = init_from
        if state is not None:
            load_weights(self.model, state, init_from)
        self.balance_loss_weight = balance_loss_weight
        self.tokenizer: Any = None
        self.chars_per_token = 1.0

    def read_data(self, data: Any) -> None:
        if self.tokenizer is None:
            self.tokenizer = data.tokenizer
            self.chars_per_token = data.val_chars_per_token

    def inference_state(self) -> dict[str, Any]:
        return {
            "tokenizer": self.tokenizer.to_state() if self.tokenizer else None,
            "chars_per_token": self.chars_per_token,
        }

    def load_inference_state(self, state: dict[str, Any]) -> None:
        from anyformer.text.tokenizer import tokenizer_from_state

        self.tokenizer = tokenizer_from_state(state["tokenizer"]) if state.get("tokenizer") else None
        self.chars_per_token = state.get("chars_per_token", 1.0)

    def _loss(self, batch: dict[str, Tensor]) -> Tensor:
        logits = self.model(batch["input_ids"])
        return F.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten())

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self._loss(batch)
        self.check_finite(loss)
        self.log("train_loss", loss, prog_bar=True)
        if self.config.transformer.n_experts:
            balance = self.model.decoder.balance_loss()
            self.log("train_balance_loss", balance)
            loss = loss + self.balance_loss_weight * balance
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        loss = self._loss(batch)
        self.log("val_loss", loss, prog_bar=True)  # nats per token
        self.log("val_bpc", loss / math.log(2) / self.chars_per_token, prog_bar=True)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        loss = self._loss(batch)
        self.log("test_loss", loss)
        self.log("test_bpc", loss / math.log(2) / self.chars_per_token)
