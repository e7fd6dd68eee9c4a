"""One tiny fit of every task through ``anyformer <task> fit``, for the kill-and-resume tests.

Every case trains 12 steps with a validation and a checkpoint every 3, in epochs of 6 batches
(``limit_train_batches``, or GPT's own ``train_batches_per_epoch``), so checkpoints fall inside an
epoch (steps 3, 9) and on an epoch boundary (6, 12). Data are offline: a pydoc corpus, pydoc
paragraphs, synthetic translation pairs, scikit-learn digits, synthetic speech, a few random
CartPole episodes. Augmentations are on where a task has them (speech waves, crops and MixUp).
"""

from __future__ import annotations

from pathlib import Path

from tests.reliability.tiny_gpt import write_corpus

REPO = Path(__file__).resolve().parents[2]
STEPS, VAL_EVERY, EPOCH = 12, 3, 6

COMMON = {
    "trainer.max_steps": STEPS,
    "trainer.val_check_interval": VAL_EVERY,
    "trainer.check_val_every_n_epoch": "null",
    "trainer.limit_train_batches": EPOCH,
    "trainer.limit_val_batches": 2,
    "trainer.log_every_n_steps": 1,
    "trainer.enable_progress_bar": "false",
}
TEXT_WINDOWS = {
    "data.context_len": 16,
    "data.batch_size": 4,
    "data.train_batches_per_epoch": EPOCH,
    "data.val_batches": 2,
}
TINY_TRANSFORMER = {"model.config.transformer.dim": 32, "model.config.transformer.n_layers": 1}
SEQ2SEQ = {"data.vocab_size": 300, "data.batch_size": 8}

CASES: dict[str, tuple[str, dict[str, object]]] = {
    "gpt": ("text/gpt_demo", {**TEXT_WINDOWS, "data.tokenizer": "char", **TINY_TRANSFORMER,
                              "model.config.transformer.dropout": 0.1}),
    "lstm": ("text/lstm_shakespeare_char", {**TEXT_WINDOWS, "model.config.dim": 32, "model.config.n_layers": 1,
                                            "model.config.dropout": 0.1}),
    "bert": ("text/bert_tiny_demo", {"data.vocab_size": 300, "data.max_seq_len": 32, "data.batch_size": 8,
                                     **TINY_TRANSFORMER}),
    "bert-classify": ("text/bert_tiny_demo_scratch", {"data.vocab_size": 300, "data.max_seq_len": 32,
                                                      "data.batch_size": 8, **TINY_TRANSFORMER}),
    "text-bow": ("text/bow_sst2", {"data.source": "pydoc-indent", "data.vocab_size": 300, "data.batch_size": 8,
                                   "model.config.bigram_buckets": 1024}),
    "seq2seq": ("text/seq2seq_demo", {**SEQ2SEQ, "model.config.encoder.dim": 32, "model.config.encoder.n_layers": 1,
                                      "model.config.decoder.dim": 32, "model.config.decoder.n_layers": 1,
                                      "model.val_bleu_sentences": 8}),
    "gru-seq2seq": ("text/gru_seq2seq_demo", {**SEQ2SEQ, "model.config.emb_dim": 16, "model.config.hidden_dim": 32,
                                              "model.val_bleu_sentences": 8}),
    "vit": ("vision/vit_digits", {"data.batch_size": 16, "data.random_crop_padding": 1, "data.mixup_alpha": 0.2,
                                  "data.cutmix_alpha": 1.0, **TINY_TRANSFORMER}),
    "vision-cnn": ("vision/cnn_digits", {"data.batch_size": 16, "data.random_crop_padding": 1,
                                         "model.config.channels": "[8, 16]"}),
    "speech": ("speech/speech_synthetic", {"data.synthetic_per_class": 8, "data.batch_size": 8,
                                           **TINY_TRANSFORMER}),
    "speech-cnn": ("speech/cnn_fsdd", {"data.source": "synthetic", "data.synthetic_per_class": 8,
                                       "data.batch_size": 8, "model.config.channels": "[8, 16]"}),
    "dt": ("rl/dt_cartpole", {"data.context_len": 5, "data.batch_size": 8, "data.train_batches_per_epoch": EPOCH,
                              "data.val_batches": 2, **TINY_TRANSFORMER}),
}  # fmt: skip
VARIANTS: dict[str, dict[str, object]] = {"workers": {"data.num_workers": 2}}
"""``<task>+<variant>`` cases: the task's case with more settings (augmentations drawn in 2 loader workers)."""


def prepare(task: str, folder: Path) -> dict[str, object]:
    """Write what ``task``'s tiny fit reads into ``folder``; returns the overrides naming it."""
    if task in ("gpt", "lstm", "bert"):
        return {"data.source": str(write_corpus(folder))}
    if task == "dt":
        from anyformer.rl.collect import collect
        from anyformer.rl.trajectories import save_trajectories

        path = folder / "cartpole.npz"
        save_trajectories(path, collect("CartPole-v1", "random", episodes=8, seed=0, max_steps=30))
        return {"data.path": str(path)}
    return {}


def fit_args(case: str, folder: Path, callbacks_json: str | None = None) -> list[str]:
    task, _, variant = case.partition("+")
    config, overrides = CASES[task]
    settings = COMMON | overrides | VARIANTS.get(variant, {}) | prepare_cache(task, folder)
    args = [task, "fit", "--config", str(REPO / "experiments" / f"{config}.yaml"), "--run-name", "run"]
    for key, value in settings.items():
        args += [f"--{key}", str(value)]
    if callbacks_json:
        args += ["--trainer.callbacks", callbacks_json]
    return args


_PREPARED: dict[tuple[str, Path], dict[str, object]] = {}


def prepare_cache(task: str, folder: Path) -> dict[str, object]:
    if (task, folder) not in _PREPARED:
        _PREPARED[task, folder] = prepare(task, folder)
    return _PREPARED[task, folder]
