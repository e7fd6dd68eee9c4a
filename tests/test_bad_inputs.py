"""Bad inputs, one table: every command and entry point turns a bad input into one clear error.

The convention under test (``core/errors.py``): a usage or input error ends a command with exit
status 2 (``main``'s return value, or ``SystemExit.code`` for errors argparse finds while parsing)
and exactly ONE line on stderr, ``anyformer <command>: error: ...``, that names the offending
input (path, key or value) and says what was expected; never a traceback, never output on stdout,
and files that existed before are left byte-identical. API rows expect the documented exception
type with a message naming the input. A few rows are inputs that are usable after all (a prompt
longer than the context, control characters for a byte-level tokenizer, an RGBA image, audio at
another rate): they must succeed, with the warning the docs promise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from anyformer.core.cli.errors import UsageError
from anyformer.core.cli.main import main
from anyformer.core.cli.tasks import TASKS, TOOLS
from anyformer.core.config import TransformerConfig
from anyformer.core.patches import patchify, unpatchify
from anyformer.core.train.checkpoint import CheckpointError, load_task, read_checkpoint
from anyformer.rl.envs import make_env
from anyformer.rl.trajectories import Trajectories, TrajectoryFormatError, load_trajectories, save_trajectories
from anyformer.speech.audio import AudioError, load_audio
from anyformer.text.corpus import load_corpus
from anyformer.text.tokenizer import BPETokenizer, CharTokenizer, load_tokenizer
from anyformer.vision.classify import InputError, read_image

RATE = 8000
"""Sample rate of the tiny speech checkpoint."""
CONTEXT = 16
"""max_seq_len of the tiny GPT checkpoints."""
TEXT = "hello world, the quick brown fox jumps over the lazy dog.\n" * 4


# -- inputs, built once per session -----------------------------------------------------------
def _tiny_stack(**overrides: Any) -> TransformerConfig:
    return TransformerConfig(dim=16, n_layers=1, n_heads=2, **overrides)


def _save_through_trainer(module: Any, path: Path) -> Path:
    """Write ``module`` as Lightning does after training (``on_save_checkpoint`` included)."""
    import pytorch_lightning as pl

    trainer = pl.Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        accelerator="cpu",
    )  # fmt: skip
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    return path


def _checkpoints(root: Path) -> dict[str, Path]:
    from anyformer.rl.dt import DTConfig
    from anyformer.rl.dt_task import DTModule
    from anyformer.speech.features import SpectrogramConfig
    from anyformer.speech.speech import SpeechConfig
    from anyformer.speech.speech_task import SpeechModule
    from anyformer.text.gpt.gpt import GPTConfig
    from anyformer.text.gpt.gpt_task import GPTModule
    from anyformer.vision.vit import ViTConfig
    from anyformer.vision.vit_task import ViTModule

    torch.manual_seed(0)
    paths = {}
    for name, tokenizer in [("gpt_bpe", BPETokenizer.train([TEXT], 270)), ("gpt_char", CharTokenizer.train([TEXT]))]:
        gpt = GPTModule(GPTConfig(vocab_size=tokenizer.vocab_size, transformer=_tiny_stack(max_seq_len=CONTEXT)))
        gpt.tokenizer = tokenizer
        paths[name] = _save_through_trainer(gpt, root / f"{name}.ckpt")
    vit_config = ViTConfig(
        image_size=8, patch_size=4, in_channels=1, num_classes=3, transformer=_tiny_stack(position="none")
    )
    vit = ViTModule(vit_config)
    paths["vit"] = _save_through_trainer(vit, root / "vit.ckpt")
    spectrogram = SpectrogramConfig(sample_rate=RATE, duration_s=0.25, n_mels=16)
    speech = SpeechModule(SpeechConfig(2, spectrogram, patch_size=8, transformer=_tiny_stack(position="none")))
    paths["speech"] = _save_through_trainer(speech, root / "speech.ckpt")
    dt = DTModule(DTConfig(context_len=4, max_timestep=50, transformer=_tiny_stack(position="none", max_seq_len=12)))
    dt.env_id = "CartPole-v1"
    paths["dt"] = _save_through_trainer(dt, root / "dt.ckpt")
    return paths


def _trajectories() -> Trajectories:
    return Trajectories(
        observations=np.zeros((3, 4)), actions=[0, 1, 0], rewards=[1.0, 1.0, 1.0],
        terminations=[False, True, True], truncations=[False, False, False], episode_starts=[0, 2],
        meta={"env_id": "CartPole-v1"},
    )  # fmt: skip


@pytest.fixture(scope="session")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Every file the table refers to, by name (``{name}`` in the rows)."""
    root = tmp_path_factory.mktemp("bad_inputs")
    paths: dict[str, Path] = {"missing": root / "missing.bin", "missing_dir_out": root / "no_such_dir" / "out.npz"}

    def put(name: str, data: bytes | str) -> None:
        paths[name] = root / name
        paths[name].write_bytes(data.encode() if isinstance(data, str) else data)

    put("empty.txt", b"")
    put("blank.txt", " \n\t\n")
    put("latin1.txt", "caf\u00e9 au lait\n".encode("latin-1"))  # byte 0xE9 at offset 3 is not UTF-8
    put("utf16.txt", "hello world\n".encode("utf-16-le"))  # valid UTF-8, but full of NUL characters
    (root / "no_txt").mkdir()
    paths["no_txt"] = root / "no_txt"
    put("broken.json", '{"kind": "char", "chars": ')
    put("list.json", "[1, 2, 3]")
    put("nokind.json", '{"chars": "ab"}')
    put("notes.txt", "not an image, not audio, not a checkpoint\n")
    put("empty.bin", b"")
    put("plain.ckpt", b"")
    torch.save({"weights": torch.zeros(2)}, paths["plain.ckpt"])  # a torch file, but not ours
    put("empty.png", b"")
    put("truncated.png", b"")
    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(paths["truncated.png"])
    paths["truncated.png"].write_bytes(paths["truncated.png"].read_bytes()[:40])
    for name, pixels, mode in [
        ("gray16.png", (np.arange(64).reshape(8, 8) * 1000).astype(np.uint16), None),  # PIL mode I;16
        ("odd.png", np.zeros((9, 9), np.uint8), None),
        ("rgba.png", np.zeros((12, 12, 4), np.uint8), None),
    ]:
        put(name, b"")
        Image.fromarray(pixels, mode).save(paths[name])
    put("empty.wav", b"")
    put("no_samples.wav", b"")
    sf.write(paths["no_samples.wav"], np.zeros(0, np.float32), RATE)
    put("nan.wav", b"")
    sf.write(paths["nan.wav"], np.array([0.1, np.nan, -0.1] * 100, np.float32), RATE, subtype="FLOAT")
    put("tone16k.wav", b"")
    sf.write(paths["tone16k.wav"], np.sin(np.arange(3200) / 5).astype(np.float32), 2 * RATE)
    put("corrupt.npz", b"PK\x03\x04 this zip stops here")
    put("one_array.npz", b"")
    with open(paths["one_array.npz"], "wb") as handle:
        np.savez(handle, x=np.zeros(3))
    put("existing.npz", b"")
    save_trajectories(paths["existing.npz"], _trajectories())
    put("existing.png", b"\x89PNG an earlier attention map")
    put("tokenizer.json", b"")
    CharTokenizer.train(["abc"]).save(paths["tokenizer.json"])
    put("hf_tokenizer.json", '{"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}')
    put("truncated.wav", b"")
    sf.write(paths["truncated.wav"], np.zeros(400, np.float32), RATE)
    paths["truncated.wav"].write_bytes(paths["truncated.wav"].read_bytes()[:30])  # cut inside the header
    put("mismatched.npz", b"")
    with open(paths["mismatched.npz"], "wb") as handle:  # actions one step short of the rest
        meta = '{"env_id": "CartPole-v1", "format": "anyformer-trajectories", "format_version": 1}'
        arrays = {name: getattr(_trajectories(), name) for name in ("observations", "rewards", "terminations",
                  "truncations", "episode_starts")}  # fmt: skip
        np.savez(handle, meta=np.array(meta), actions=np.array([0, 1]), **arrays)
    put("unknown_key.yaml", "model:\n  config:\n    vocab_size: 8\n  not_a_setting: 1\n")
    put("wrong_type.yaml", "trainer:\n  max_steps: lots\n")
    put("broken.yaml", "data:\n  source: [unclosed\n")
    paths.update(_checkpoints(root))
    paths["truncated.ckpt"] = root / "truncated.ckpt"
    paths["truncated.ckpt"].write_bytes(paths["gpt_bpe"].read_bytes()[:200])
    return SimpleNamespace(**{name.replace(".", "_"): path for name, path in paths.items()})


# -- the table ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One bad input: ``argv`` for ``anyformer`` or an API ``call``, and what must happen."""

    id: str
    argv: tuple[str, ...] = ()
    """``anyformer`` arguments; ``{name}`` is replaced by the path of input ``name``."""
    call: Callable[[SimpleNamespace], object] | None = None
    """An API call on the inputs, for API rows."""
    error: type[BaseException] | None = UsageError
    """API rows: the exception raised; None: the input is usable and must be accepted."""
    needles: tuple[str, ...] = ()
    """Substrings of the error line (CLI) or message (API): the input, what was expected."""
    keeps: tuple[str, ...] = ()
    """Inputs that must stay byte-identical."""
    warning: str = ""
    """Accepted rows: a logged warning that must appear."""


def cli(id: str, argv: str | list[str], *needles: str, keeps: tuple[str, ...] = ()) -> Case:
    return Case(id, tuple(argv.split() if isinstance(argv, str) else argv), needles=needles, keeps=keeps)


def api(id: str, call: Callable[[SimpleNamespace], object], error: type[BaseException], *needles: str,
        keeps: tuple[str, ...] = ()) -> Case:  # fmt: skip
    return Case(id, call=call, error=error, needles=needles, keeps=keeps)


def accepted(id: str, argv: list[str], warning: str = "") -> Case:
    return Case(id, tuple(argv), error=None, warning=warning)


def _surrogate_tokenizer_save(p: SimpleNamespace) -> None:
    CharTokenizer("ab\udcff").save(p.tokenizer_json)  # "\udcff" is what a 0xFF byte becomes in sys.argv


def _nan_image(p: SimpleNamespace) -> None:
    module = load_task(p.vit, tasks=("vit",))
    images = torch.zeros(2, 1, 8, 8)
    images[1, 0, 3, 3] = float("nan")
    module(images)


def _nan_waveform(p: SimpleNamespace) -> None:
    module = load_task(p.speech, tasks=("speech",))
    waves = torch.zeros(3, module.config.spectrogram.n_samples)
    waves[0, 2] = float("inf")
    waves[2, 5] = float("nan")
    module(waves)


def _unjsonable_meta_save(p: SimpleNamespace) -> None:
    data = _trajectories()
    data.meta["policy"] = object()  # not JSON
    save_trajectories(p.existing_npz, data)


GEN = ["generate", "--ckpt", "{gpt_bpe}", "--max-new-tokens", "2", "--strategy", "greedy"]
CLS = ["classify", "--ckpt"]
ROLL = ["rollout", "--ckpt", "{dt}", "--target-return", "10", "--episodes", "1"]
COLLECT = ["collect", "--policy", "random", "--episodes", "1"]
UNKNOWN_ENV = "unknown environment id 'NoSuchEnv-v9'"

# One row per line where it fits; the table reads better unwrapped.
# fmt: off
CASES = [
    # -- anyformer itself and LightningCLI tasks (config keys and types, data and files) --------
    cli("unknown-subcommand", "nosuch", "unknown command 'nosuch'", "expected one of"),
    cli("run-name-escapes-runs", "gpt fit --run-name ../x", "--run-name '../x'", "plain folder name"),
    cli("unknown-key-flag", "gpt fit --model.bogus=1", "--model.bogus"),
    cli("unknown-key-yaml", "gpt fit --config {unknown_key_yaml}", "model.not_a_setting"),
    cli("type-error-flag", "gpt fit --trainer.max_steps=lots", "trainer.max_steps", "lots", "Expected a <class 'int'>"),
    cli("type-error-yaml", "gpt fit --config {wrong_type_yaml}", "trainer.max_steps", "lots", "int"),
    cli("broken-yaml", "gpt fit --config {broken_yaml}", "Problems parsing config", "line 2"),
    cli("missing-config", "gpt fit --config {missing}", "{missing}", "does not exist"),
    cli("corpus-missing", "gpt fit --data.source {missing}", "{missing}", "existing UTF-8 text file"),
    cli("corpus-empty", "gpt fit --data.source {empty_txt}", "{empty_txt}", "no non-whitespace"),
    cli("corpus-invalid-utf8", "gpt fit --data.source {latin1_txt}", "{latin1_txt}", "not valid UTF-8"),
    cli("corpus-nul-chars", "gpt fit --data.source {utf16_txt}", "{utf16_txt}", "NUL", "UTF-8 text file"),
    cli("tokenizer-file-corrupt", "gpt fit --data.tokenizer_path {broken_json}", "{broken_json}", "JSON"),
    cli("context-len-zero", "gpt fit --data.context_len=0", "context_len", ">= 1, got 0"),
    cli("sample-rate-zero", "speech fit --data.sample_rate=0", "sample_rate", "> 0, got 0"),
    cli("npz-dataset-corrupt", "dt fit --data.path {corrupt_npz}", "{corrupt_npz}", "not a readable .npz"),
    cli("npz-dataset-missing", "dt fit --data.path {missing}", "{missing}", "not found"),
    cli("npz-dataset-missing-keys", "dt fit --data.path {one_array_npz}", "{one_array_npz}", "missing fields"),
    cli("npz-dataset-mismatched-lengths", "dt fit --data.path {mismatched_npz}", "{mismatched_npz}", "inconsistent",
        "actions has 2 steps, rewards has 3"),
    cli("tokenizer-file-of-another-library", "gpt fit --data.tokenizer_path {hf_tokenizer_json}",
        "{hf_tokenizer_json}", "no 'kind' key", "Tokenizer.save"),
    cli("tokenizer-file-of-another-kind", "gpt fit --data.tokenizer bpe --data.tokenizer_path {tokenizer_json}",
        "{tokenizer_json}", "'char' tokenizer", "'bpe'"),
    cli("speech-folder-missing", "speech fit --data.source folder --data.root {missing}", "{missing}",
        "no such folder of audio clips"),
    cli("image-folder-missing", "vit fit --data.source imagefolder --data.image_size 8 --data.root {missing}",
        "{missing}", "does not exist"),
    # -- anyformer generate ------------------------------------------------------------------------
    cli("bad-strategy", [*GEN, "--strategy", "bogus"], "--strategy", "'bogus'", "choose from"),
    cli("negative-max-new-tokens", [*GEN, "--max-new-tokens", "-3"], "--max-new-tokens", ">= 0, got -3"),
    cli("top-p-above-one", [*GEN, "--top-p", "1.5"], "--top-p", "in (0, 1], got 1.5"),
    cli("temperature-nan", [*GEN, "--temperature", "nan"], "--temperature", "> 0 and finite, got nan"),
    cli("top-k-zero", [*GEN, "--top-k", "0"], "--top-k", ">= 1, got 0"),
    cli("vit-checkpoint-to-generate", [*GEN, "--ckpt", "{vit}"], "{vit}", "'vit' checkpoint", "needs one of ['gpt'"),
    cli("checkpoint-missing", [*GEN, "--ckpt", "{missing}"], "{missing}", "does not exist", ".ckpt file"),
    cli("checkpoint-empty", [*GEN, "--ckpt", "{empty_bin}"], "{empty_bin}", "could not be read"),
    cli("checkpoint-truncated", [*GEN, "--ckpt", "{truncated_ckpt}"], "{truncated_ckpt}", "truncated"),
    cli("checkpoint-not-ours", [*GEN, "--ckpt", "{plain_ckpt}"], "{plain_ckpt}", "not an anyformer checkpoint"),
    cli("prompt-control-char-outside-alphabet", [*GEN, "--ckpt", "{gpt_char}", "--prompt", "hi\x07"],
        "--prompt", "'\\x07'", "not in the CharTokenizer alphabet"),
    cli("prompt-invalid-utf8-bytes", [*GEN, "--prompt", "caf\udce9"], "--prompt", "lone surrogate '\\udce9'"),
    accepted("prompt-longer-than-context", [*GEN, "--prompt", "hello world " * 4], f"keeping the last {CONTEXT - 1}"),
    accepted("prompt-control-chars-bpe", [*GEN, "--prompt", "tab\there\x07\x1b[0m"]),
    # -- anyformer classify (images and audio) -----------------------------------------------------
    cli("image-missing", [*CLS, "{vit}", "{missing}"], "{missing}", "not a readable image"),
    cli("image-empty", [*CLS, "{vit}", "{empty_png}"], "{empty_png}", "not a readable image"),
    cli("image-truncated", [*CLS, "{vit}", "{truncated_png}"], "{truncated_png}", "not a readable image"),
    cli("image-is-text", [*CLS, "{vit}", "{notes_txt}"], "{notes_txt}", "not a readable image"),
    cli("image-16-bit", [*CLS, "{vit}", "{gray16_png}", "--attention-map", "{existing_png}"],
        "{gray16_png}", "'I;16'", "expected an 8-bit image", keeps=("existing_png",)),
    cli("image-size-not-divisible", [*CLS, "{vit}", "--keep-size", "{odd_png}"], "{odd_png}", "9x9", "patch size 4"),
    cli("top-k-zero-classify", [*CLS, "{vit}", "{rgba_png}", "--top-k", "0"], "--top-k", ">= 1, got 0"),
    cli("gpt-checkpoint-to-classify", [*CLS, "{gpt_bpe}", "{rgba_png}"], "{gpt_bpe}", "'gpt' checkpoint"),
    accepted("image-rgba-to-gray-model", [*CLS, "{vit}", "{rgba_png}", "--top-k", "1"]),
    cli("audio-is-text", [*CLS, "{speech}", "{notes_txt}"], "{notes_txt}", "not readable as audio"),
    cli("audio-empty-file", [*CLS, "{speech}", "{empty_wav}"], "{empty_wav}", "empty (0 bytes)"),
    cli("audio-no-samples", [*CLS, "{speech}", "{no_samples_wav}"], "{no_samples_wav}", "no audio samples"),
    cli("audio-nan", [*CLS, "{speech}", "{nan_wav}"], "{nan_wav}", "NaN or infinite", "finite audio"),
    cli("audio-missing", [*CLS, "{speech}", "{missing}"], "{missing}", "no such audio file"),
    cli("audio-truncated-wav", [*CLS, "{speech}", "{truncated_wav}"], "{truncated_wav}", "not readable as audio"),
    accepted("audio-at-another-rate", [*CLS, "{speech}", "{tone16k_wav}", "--top-k", "1"]),
    # -- anyformer collect / rollout / translate ----------------------------------------------------
    cli("collect-unknown-env", [*COLLECT, "--env", "NoSuchEnv-v9", "--out", "{existing_npz}"], UNKNOWN_ENV,
        "supported families", keeps=("existing_npz",)),
    accepted("collect-into-a-new-folder", [*COLLECT, "--env", "CartPole-v1", "--out", "{missing_dir_out}"]),
    cli("rollout-unknown-env", [*ROLL, "--env", "NoSuchEnv-v9", "--frames", "{existing_png}"], UNKNOWN_ENV, "supported",
        keeps=("existing_png",)),
    cli("rollout-env-mismatch", [*ROLL, "--env", "MountainCar-v0"], "'MountainCar-v0'", "shape (2,)", "(4,)"),
    cli("rollout-bad-targets", [*ROLL[:3], "--targets", "10,abc"], "--targets", "'10,abc'", "comma-separated"),
    cli("gpt-checkpoint-to-translate", ["translate", "--ckpt", "{gpt_bpe}", "hallo"], "'gpt' checkpoint",
        "['seq2seq', 'gru-seq2seq']"),
    # -- APIs: files ---------------------------------------------------------------------------------
    api("api-corpus-missing", lambda p: load_corpus(str(p.missing)), FileNotFoundError, "{missing}"),
    api("api-corpus-blank", lambda p: load_corpus(str(p.blank_txt)), ValueError, "{blank_txt}", "empty"),
    api("api-corpus-invalid-utf8", lambda p: load_corpus(str(p.latin1_txt)), ValueError, "{latin1_txt}",
        "b'\\xe9'", "byte offset 3"),
    api("api-corpus-folder-without-txt", lambda p: load_corpus(str(p.no_txt)), FileNotFoundError, "{no_txt}",
        "no *.txt files"),
    api("api-tokenizer-missing", lambda p: load_tokenizer(p.missing), FileNotFoundError, "{missing}"),
    api("api-tokenizer-not-json", lambda p: load_tokenizer(p.broken_json), ValueError, "{broken_json}", "JSON"),
    api("api-tokenizer-json-list", lambda p: load_tokenizer(p.list_json), ValueError, "{list_json}", "list"),
    api("api-tokenizer-no-kind", lambda p: load_tokenizer(p.nokind_json), ValueError, "{nokind_json}", "kind"),
    api("api-tokenizer-of-another-kind", lambda p: BPETokenizer.load(p.tokenizer_json), ValueError,
        "{tokenizer_json}", "'char' tokenizer, not a BPETokenizer"),
    api("api-tokenizer-save-fails", _surrogate_tokenizer_save, ValueError, "{tokenizer_json}", "lone surrogate",
        keeps=("tokenizer_json",)),
    api("api-checkpoint-text", lambda p: read_checkpoint(p.notes_txt), CheckpointError, "{notes_txt}"),
    api("api-checkpoint-wrong-task", lambda p: load_task(p.vit, tasks=("gpt",)), CheckpointError, "{vit}", "'vit'"),
    api("api-image-16-bit", lambda p: read_image(p.gray16_png, 1, (8, 8), 4), InputError, "{gray16_png}", "I;16"),
    api("api-audio-not-audio", lambda p: load_audio(p.notes_txt, RATE), AudioError, "{notes_txt}", "libsndfile"),
    api("api-audio-nan", lambda p: load_audio(p.nan_wav, RATE), AudioError, "{nan_wav}", "NaN"),
    api("api-audio-rate-zero", lambda p: load_audio(p.tone16k_wav, 0), ValueError, "sample_rate", "positive int"),
    api("api-audio-rate-float", lambda p: load_audio(p.tone16k_wav, 8000.5), ValueError, "sample_rate", "8000.5"),
    api("api-npz-missing", lambda p: load_trajectories(p.missing), FileNotFoundError, "{missing}"),
    api("api-npz-empty", lambda p: load_trajectories(p.empty_bin), TrajectoryFormatError, "{empty_bin}"),
    api("api-npz-not-trajectories", lambda p: load_trajectories(p.one_array_npz), TrajectoryFormatError,
        "{one_array_npz}", "missing fields"),
    api("api-npz-mismatched-lengths", lambda p: load_trajectories(p.mismatched_npz), TrajectoryFormatError,
        "{mismatched_npz}", "inconsistent"),
    api("api-audio-truncated", lambda p: load_audio(p.truncated_wav, RATE), AudioError, "{truncated_wav}"),
    api("api-npz-save-fails", _unjsonable_meta_save, TypeError, "{existing_npz}", "meta is not JSON",
        keeps=("existing_npz",)),
    api("api-env-unknown", lambda p: make_env("NoSuchEnv-v9"), ValueError, "'NoSuchEnv-v9'", "supported"),
    # -- APIs: tensors ----------------------------------------------------------------------------
    api("api-nan-image-tensor", _nan_image, ValueError, "1 of 2 images", "NaN or infinite"),
    api("api-nan-waveform", _nan_waveform, ValueError, "2 of 3 waveforms", "NaN"),
    api("api-image-wrong-channels", lambda p: load_task(p.vit)(torch.zeros(1, 3, 8, 8)), ValueError,
        "(B, 1, H, W)", "(1, 3, 8, 8)"),
    api("api-patchify-not-divisible", lambda p: patchify(torch.zeros(1, 1, 9, 8), 4), ValueError, "9x8", "4"),
    api("api-unpatchify-wrong-count", lambda p: unpatchify(torch.zeros(1, 5, 16), (8, 8), (4, 4), (4, 4)),
        ValueError, "(1, 5, 16)", "(B, 4, 16)"),
]
# fmt: on


def _fill(template: str, paths: SimpleNamespace) -> str:
    return template.format(**{name: str(path) for name, path in vars(paths).items()})


def _run_cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_info:  # argparse's errors (and --help) exit instead of returning
        return exit_info.code if isinstance(exit_info.code, int) else 1


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(
    case: Case,
    inputs: SimpleNamespace,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)  # tasks would write runs/ here
    kept = {name: getattr(inputs, name).read_bytes() for name in case.keeps}
    needles = [_fill(needle, inputs) for needle in case.needles]
    caplog.set_level(logging.WARNING)
    if case.call is not None:
        with pytest.raises(case.error) as raised:  # type: ignore[arg-type]
            case.call(inputs)
        message = str(raised.value)
        assert all(needle in message for needle in needles), (message, needles)
    else:
        code = _run_cli([_fill(arg, inputs) for arg in case.argv])
        out, err = capsys.readouterr()
        assert "Traceback" not in err and 'File "' not in err, err
        if case.error is None:
            assert code == 0 and "error" not in err, err
            assert out.strip(), "an accepted input still produces its result"
            assert case.warning in caplog.text
        else:
            assert code == 2, (code, err)
            command = case.argv[0]
            prog = f"anyformer {command}" if command in TASKS or command in TOOLS else "anyformer"
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
            assert all(needle in lines[0] for needle in needles), (lines[0], needles)
            assert out == "", "nothing is printed before the error"
            assert not (tmp_path / "runs").exists(), "a rejected run writes no run folder"
    for name, before in kept.items():
        assert getattr(inputs, name).read_bytes() == before, f"{name} was modified"
        assert not list(getattr(inputs, name).parent.glob(f".{getattr(inputs, name).name}*")), "temporary file left"


def test_the_table_covers_every_command_and_enough_inputs() -> None:
    commands = {case.argv[0] for case in CASES if case.argv}
    assert {"gpt", "speech", "dt", "vit", "generate", "classify", "collect", "rollout", "translate"} <= commands
    assert len(CASES) >= 35
    assert len({case.id for case in CASES}) == len(CASES)
