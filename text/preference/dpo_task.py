"""``anyformer dpo``: tune a GPT policy on preference pairs with Direct Preference Optimization
(the loss: :mod:`anyformer.text.preference.dpo`; the batches: :mod:`anyformer.text.preference.data`).

The policy starts from a ``gpt`` checkpoint (``data.policy``, linked here); a frozen copy of it (or of
``model.reference``) is the reference. Both are in the checkpoint, so a DPO checkpoint alone serves
``anyformer preference-eval`` and ``anyformer.load``. Logged, for train and val: ``loss``,
``reward_acc`` (share of pairs whose chosen continuation has the larger implicit reward), ``margin``
(mean implicit-reward difference, nats x beta), ``chosen_reward``, ``rejected_reward``, and
``kl_per_token`` (exact KL(policy || reference) of the next-token distributions along the pairs'
continuations, nats per token). At every validation a few prompts are continued and logged.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from anyformer.core.train.base import OptimConfig, TaskModule
from anyformer.core.train.checkpoint import load_task
from anyformer.text.gpt.gpt import GPT, GPTConfig
from anyformer.text.preference.dpo import continuation_kl, continuation_logprobs, dpo_loss
from anyformer.text.preference.sampling import POLICY_TASKS, same_tokenizer, sample_continuations

logger = logging.getLogger(__name__)


@dataclass
class DPOConfig:
    """DPO on a GPT policy."""

    gpt: GPTConfig = field(default_factory=GPTConfig)
    """The policy's architecture; taken from the policy checkpoint (``data.policy``) when there is one."""
    beta: float = 0.1
    """Temperature of the implicit reward: larger keeps the policy closer to the reference."""
    sample_prompts: list[str] = field(default_factory=lambda: ["the movie", "this film is", "it 's"])
    """Prompts continued and logged at every validation (empty: none)."""
    sample_new_tokens: int = 24
    """Most tokens of each logged continuation."""

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise ValueError(f"DPOConfig.beta must be > 0, got {self.beta!r}")
        if self.sample_new_tokens < 1:
            raise ValueError(f"DPOConfig.sample_new_tokens must be >= 1, got {self.sample_new_tokens!r}")


class DPOModule(TaskModule):
    """The policy (``model``, trained) and the reference (``reference``, frozen) of DPO."""

    task_name = "dpo"
    # The checkpoints seed the weights once; a DPO checkpoint carries both models and the config
    # taken from them, so rebuilding it must not read those files again.
    hparams_ignore: ClassVar[tuple[str, ...]] = ("policy", "reference")
    data_links: ClassVar[dict[str, str]] = {"policy": "policy"}

    def __init__(
        self,
        config: DPOConfig,
        optim: OptimConfig | None = None,
        policy: str | None = None,
        reference: str | None = None,
    ) -> None:
        """
        Args:
            config: beta and the logged samples; ``config.gpt`` is replaced by the policy's.
            optim: optimizer and schedule.
            policy: ``gpt`` (or ``dpo``) checkpoint to start from (linked from ``data.policy``); None
                builds random weights (a checkpoint's own then replace them).
            reference: checkpoint of the frozen reference; None: the policy as it starts. Its
                tokenizer and architecture must equal the policy's.
        """
        policy_module = _policy(policy, "data.policy") if policy is not None else None
        if policy_module is not None:  # before super(): the hparams keep the policy's architecture
            config = dataclasses.replace(config, gpt=policy_module.model.cfg)
        super().__init__(config, optim)
        self.model = GPT(config.gpt)
        self.reference = GPT(config.gpt)
        self.tokenizer: Any = None
        if policy_module is not None:
            self.model.load_state_dict(policy_module.model.state_dict())
            self.tokenizer = policy_module.tokenizer
            reference_module = _policy(reference, "model.reference") if reference is not None else policy_module
            if reference_module.model.cfg != config.gpt:
                raise ValueError(f"model.reference {reference} has another architecture than data.policy {policy}")
            if not same_tokenizer(reference_module.tokenizer, self.tokenizer):
                raise ValueError(
                    f"model.reference {reference} and data.policy {policy} have different tokenizers; "
                    "DPO compares their probabilities of the same tokens"
                )
            self.reference.load_state_dict(reference_module.model.state_dict())
        self.reference.requires_grad_(False)
        self.reference.eval()

    def train(self, mode: bool = True) -> DPOModule:
        # Lightning turns the whole module to train mode each epoch: the reference stays in eval
        # (no dropout), so its log-probabilities are the fixed ones the loss is defined with.
        super().train(mode)
        self.reference.eval()
        return self

    def read_data(self, data: Any) -> None:
        if self.tokenizer is None:
            self.tokenizer = data.tokenizer
        elif not same_tokenizer(self.tokenizer, data.tokenizer):
            raise ValueError("the pairs are encoded with another tokenizer than the policy's")

    def inference_state(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer.to_state() if self.tokenizer else None}

    def load_inference_state(self, state: dict[str, Any]) -> None:
        from anyformer.text.tokenizer import tokenizer_from_state

        self.tokenizer = tokenizer_from_state(state["tokenizer"]) if state.get("tokenizer") else None

    def _step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        ids, scored = batch["input_ids"], batch["scored"]  # (2B, T): chosen rows, then rejected rows
        n_pairs = ids.shape[0] // 2
        logits = self.model(ids)  # (2B, T, V)
        with torch.no_grad():
            reference_logits = self.reference(ids)
        policy_lp = continuation_logprobs(logits, ids, scored)  # (2B,)
        reference_lp = continuation_logprobs(reference_logits, ids, scored)
        terms = dpo_loss(
            policy_lp[:n_pairs], policy_lp[n_pairs:], reference_lp[:n_pairs], reference_lp[n_pairs:], self.config.beta
        )
        loss = terms.losses.mean()
        kl = continuation_kl(logits.detach(), reference_logits, scored).sum() / scored.sum().clamp(min=1)
        self.log(f"{stage}_loss", loss, prog_bar=True, batch_size=n_pairs)
        self.log_dict(
            {
                f"{stage}_reward_acc": (terms.margins > 0).float().mean(),
                f"{stage}_margin": terms.margins.mean(),
                f"{stage}_chosen_reward": terms.chosen_rewards.mean(),
                f"{stage}_rejected_reward": terms.rejected_rewards.mean(),
                f"{stage}_kl_per_token": kl,
            },
            prog_bar=stage == "val",
            batch_size=n_pairs,
        )
        return loss

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self._step(batch, "train")
        self.check_finite(loss)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or not self.config.sample_prompts or self.tokenizer is None:
            return
        generator = torch.Generator(device=self.device).manual_seed(0)
        samples = sample_continuations(
            self.model, self.tokenizer, self.config.sample_prompts, 1, self.config.sample_new_tokens, 1.0, generator
        )
        for prompt, (continuation,) in zip(self.config.sample_prompts, samples):
            logger.info("step %d sample: %r -> %r", self.global_step, prompt, continuation.text)


def _policy(path: str, option: str) -> Any:
    """The task module of a GPT checkpoint (``gpt`` or an earlier ``dpo`` round)."""
    module = load_task(path, tasks=POLICY_TASKS)
    if module.tokenizer is None:
        raise ValueError(f"{option} {path} holds no tokenizer; expected a checkpoint of `anyformer gpt fit`")
    return module
