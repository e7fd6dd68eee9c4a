"""Every experiment YAML runs: ``anyformer <task> fit --config X --trainer.fast_dev_run=true`` (one
training and one validation batch), so no config can rot. Also: no config pins the accelerator.

The task of a config is read from its own launch command (``anyformer <task> fit --config <file>``
in its header). The runs shrink the model and the data where a config's own sizes would take long
(``SHRINK``), offline, in an empty folder; the configs' named datasets are found through
``$ANYFORMER_DATA``. Configs on real data (SST-2, Multi30k, FSDD, MNIST, Tiny Shakespeare, ...)
are skipped when ``$ANYFORMER_DATA`` does not hold that data; configs that need a prepared file (an
offline-RL dataset, a pretrained BERT) get a tiny one first. ``pytest tests/test_configs.py
--durations=0`` lists the time of each config.

An accelerator setting other than ``auto`` (``accelerator: cpu``, ``--trainer.accelerator=gpu``) in
any YAML under ``experiments/`` fails unless its line says why in a ``# pinned: ...`` comment.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from anyformer.core.cli.tasks import TASKS
from tests.helpers import SHARED_DATA, run_cli

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"
CONFIGS = sorted(
    path for domain in ("text", "vision", "speech", "rl") for path in (EXPERIMENTS / domain).glob("*.yaml")
)
REAL_DATA = {
    "sst2": "sst2/train.tsv",
    "tinyshakespeare": "tinyshakespeare/input.txt",
    "fsdd": "fsdd/recordings",
    "mnist": "torchvision/MNIST",
    "fashion_mnist": "torchvision/FashionMNIST",
    "cifar10": "torchvision/cifar-10-batches-py",
    "multi30k": "multi30k/train.de",
    # Both Speech Commands configs also train on a generated folder in tests/speech/test_speech_commands.py.
    "speechcommands": "torchaudio/SpeechCommands/speech_commands_v0.02/testing_list.txt",
    "speechcommands12": "torchaudio/SpeechCommands/speech_commands_v0.02/testing_list.txt",
}
"""A config's ``data.source`` -> the file or folder of ``$ANYFORMER_DATA`` it reads."""
FAST = ["--trainer.fast_dev_run=true", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
MULTI30K = ["--data.train_split=val", "--data.vocab_size=500", "--data.max_tokens=256", "--model.val_bleu_sentences=4"]
"""BPE on the 1,014 validation pairs instead of the 29,000 training pairs, and a small batch."""
SST2 = ["--data.vocab_size=512"]
SHRINK: dict[str, list[str]] = {
    "vit_tiny_finetune_cifar10": ["--data.batch_size=16", "--data.num_workers=0"],
    "gru_multi30k": MULTI30K,
    "seq2seq_multi30k": MULTI30K,
    "bert_pretrain_sst2": SST2,
    "bert_scratch_sst2": SST2,
    "bow_sst2": [*SST2, "--model.config.bigram_buckets=1024"],
    "bert_reward_sst2": SST2,
    "gpt_sst2_policy": SST2,
}
"""Config name -> the overrides that keep its run short (less data to tokenize, smaller batches)."""
HF_MODELS = {"gpt2_finetune_shakespeare": "gpt2", "bert_base_finetune_sst2": "bert"}
"""Configs that start from a Hugging Face model (``data.init_from: hf:<hub id>``) -> the kind of tiny
random local folder that replaces it (the hub is never reached)."""
ENVS = {"cartpole": "CartPole-v1", "breakout": "MinAtar/Breakout-v1"}
"""Offline-RL dataset file names start with their environment."""
PINNED_ACCELERATOR = re.compile(
    r"^\s*accelerator:\s*['\"]?(?!auto\b)\w+|--trainer\.accelerator[= ]+['\"]?(?!auto\b)\w+"
)


def task_of(config: Path) -> str:
    """The task of ``config``'s launch command, ``anyformer <task> fit --config experiments/<domain>/<file>``."""
    name = f"experiments/{config.parent.name}/{config.name}"
    found = re.findall(rf"anyformer ([\w-]+) fit --config {re.escape(name)}\b", config.read_text(encoding="utf-8"))
    assert found, f"{name} does not state its launch command `anyformer <task> fit --config {name}`"
    assert len(set(found)) == 1 and found[0] in TASKS, (name, found)
    return found[0]


def data_source(config: Path) -> str | None:
    source = (yaml.safe_load(config.read_text(encoding="utf-8")).get("data") or {}).get("source")
    return source if isinstance(source, str) else None


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current folder; offline (``$ANYFORMER_DATA`` is where the real datasets are found)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANYFORMER_OFFLINE", "1")  # a test never downloads
    return tmp_path


def prepare(config: Path, task: str) -> list[str]:
    """Make the files ``config`` reads from the current folder: the ``.npz`` datasets of a ``dt``
    config (a few short random episodes each), the checkpoint a fine-tuning config starts from (its
    pretraining config, run for one step on a tiny corpus: fine-tuning reads its tokenizer and weights),
    the teacher checkpoint a distilled ViT learns from (its teacher's config, run for one step)."""
    settings = yaml.safe_load(config.read_text(encoding="utf-8")).get("data") or {}
    if task == "dt":
        from anyformer.rl.collect import collect
        from anyformer.rl.trajectories import save_trajectories

        paths = settings["path"] if isinstance(settings["path"], list) else [settings["path"]]
        for seed, path in enumerate(paths):
            env_id = ENVS[Path(path).name.split("_")[0]]
            if env_id.startswith("MinAtar/"):
                pytest.importorskip("minatar")
            save_trajectories(path, collect(env_id, "random", episodes=3, seed=seed, max_steps=20))
    if task == "dpo":
        return prepare_preferences(settings)
    if config.stem in HF_MODELS:
        from tests.text.test_hf import save_tiny_bert, save_tiny_gpt2

        tiny = Path("tiny_hf_model")
        if HF_MODELS[config.stem] == "gpt2":
            save_tiny_gpt2(tiny, n_positions=settings["context_len"])
        else:
            save_tiny_bert(tiny, max_positions=settings["max_seq_len"])
        return [f"--data.init_from=hf:{tiny}"]
    if settings.get("init_from"):
        name = Path(settings["init_from"]).parts[1]  # runs/<name>/checkpoints/last.ckpt
        pretraining = config.with_name(f"{name}.yaml")
        corpus = Path("corpus.txt")
        corpus.write_text("".join(f"Line {i} says the {i % 7} cats saw {i % 5} dogs.\n\n" for i in range(400)))
        steps = ["--trainer.max_steps=1", "--trainer.val_check_interval=1", "--trainer.limit_val_batches=1"]
        argv = [task_of(pretraining), "fit", "--config", str(pretraining), *steps, *FAST[1:], f"--data.source={corpus}"]
        run_cli(Path.cwd(), argv)
        assert Path(settings["init_from"]).is_file(), settings["init_from"]
    teacher = (yaml.safe_load(config.read_text(encoding="utf-8")).get("model") or {}).get("teacher")
    if teacher:  # a distilled ViT reads its teacher's checkpoint: the teacher's config, one step
        name = Path(teacher).parts[1]  # runs/<name>/checkpoints/last.ckpt
        teacher_config = config.with_name(f"{name}.yaml")
        steps = ["--trainer.max_steps=1", "--trainer.val_check_interval=1", "--trainer.limit_val_batches=1"]
        run_cli(Path.cwd(), [task_of(teacher_config), "fit", "--config", str(teacher_config), *steps, *FAST[1:]])
        assert Path(teacher).is_file(), teacher
    return []


def prepare_preferences(settings: dict) -> list[str]:
    """A ``dpo`` config's policy (its own config, one step on a tiny corpus) and pairs file (a few pairs)."""
    corpus = Path("corpus.txt")
    corpus.write_text("".join(f"the {i % 7} cats saw {i % 5} dogs .\n" for i in range(400)))
    name = Path(settings["policy"]).parts[1]  # runs/<name>/checkpoints/last.ckpt
    policy = EXPERIMENTS / "text" / f"{name}.yaml"
    steps = ["--trainer.max_steps=1", "--trainer.val_check_interval=1", "--trainer.limit_val_batches=1"]
    argv = [task_of(policy), "fit", "--config", str(policy), *steps, *FAST[1:], f"--data.source={corpus}"]
    run_cli(Path.cwd(), [*argv, "--data.vocab_size=300"])
    pairs = Path(settings["pairs"])
    pairs.parent.mkdir(parents=True, exist_ok=True)
    pairs.write_text('{"prompt": "the 1 cats", "chosen": " saw 2 dogs .\\n", "rejected": " saw\\n"}\n' * 40)
    return []


@pytest.mark.parametrize("config", CONFIGS, ids=[f"{path.parent.name}/{path.stem}" for path in CONFIGS])
def test_config_runs_one_batch(config: Path, workdir: Path) -> None:
    task = task_of(config)
    needed = REAL_DATA.get(data_source(config) or "")
    if needed is not None and not (SHARED_DATA and Path(SHARED_DATA, needed).exists()):
        pytest.skip(f"{config.name} reads {needed} of $ANYFORMER_DATA, which is unset or lacks it")
    overrides = prepare(config, task)
    model = yaml.safe_load(config.read_text(encoding="utf-8")).get("model") or {}
    if str(model.get("init_from", "")).startswith("timm:"):
        from tests.vision.timm_files import tiny_timm_folder  # a tiny local timm ViT instead of the hub download

        tiny = tiny_timm_folder(Path("timm_tiny").resolve(), img_size=32, patch_size=16)
        overrides.append(f"--model.init_from=timm:{tiny}")
    run_cli(workdir, [task, "fit", "--config", str(config), *FAST, *SHRINK.get(config.stem, []), *overrides])


@pytest.mark.parametrize(
    "config", sorted(EXPERIMENTS.rglob("*.yaml")), ids=lambda path: str(path.relative_to(EXPERIMENTS))
)
def test_no_config_pins_the_accelerator(config: Path) -> None:
    """Lightning picks the device (``accelerator: auto``); a pin needs a ``# pinned: why`` on its line."""
    for number, line in enumerate(config.read_text(encoding="utf-8").splitlines(), 1):
        setting, _, comment = line.partition("#")
        if PINNED_ACCELERATOR.search(setting):
            assert comment.strip().startswith("pinned:"), f"{config}:{number} pins the accelerator: {line.strip()}"


def test_the_pin_pattern_sees_yaml_keys_and_cli_overrides_but_not_auto():
    pinned = [
        "  accelerator: cpu",
        "  accelerator: 'gpu'",
        "overrides: [--trainer.accelerator=cpu]",
        "--trainer.accelerator mps",
    ]
    free = ["  accelerator: auto", "--trainer.accelerator=auto", "  devices: 1", "  strategy: ddp"]
    assert [bool(PINNED_ACCELERATOR.search(line)) for line in pinned + free] == [True] * 4 + [False] * 4
