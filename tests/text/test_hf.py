"""Hugging Face GPT-2 and BERT folders in and out (``anyformer.text.hf``): small random models saved
with ``transformers``' ``save_pretrained`` in tmp folders, nothing downloaded. Logits agree within
1e-4 both ways and greedy decoding picks the same 50 tokens; ``init_from: hf:<folder>`` trains
through the CLI with the folder's tokenizer; bad folders are one-line errors (exit 2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from anyformer.core.config import TransformerConfig
from anyformer.core.decoding import GenerationConfig, generate
from anyformer.core.train.checkpoint import load_task
from anyformer.text.bert.bert import BertConfig
from anyformer.text.bert.bert_task import BertClassifierModule, BertPretrainModule
from anyformer.text.gpt.gpt import GPTConfig
from anyformer.text.gpt.gpt_task import GPTModule
from anyformer.text.hf import export_bert_hf, export_gpt_hf, hf_tokenizer, load_bert_hf, load_gpt_hf
from anyformer.text.tokenizer import BPETokenizer, CharTokenizer
from tests.helpers import run_cli

transformers = pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parents[2]
TEXT = "".join(f"Line {i} says the {i % 7} cats saw {i % 5} dogs, and the dog ran home.\n" for i in range(200))
SAMPLE = "The cats saw 3 dogs; the dog ran.\n"
WORDS = "the cats saw dogs and dog ran home line says a film is good bad witty dull it".split()


def save_tiny_gpt2(folder: Path, n_positions: int = 128) -> Path:
    """A random 2-layer GPT2LMHeadModel with a byte-level BPE tokenizer.json (GPT-2's layout)."""
    tokenizer = HFTokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )  # fmt: skip
    tokenizer.train_from_iterator([TEXT], trainer)
    config = transformers.GPT2Config(
        vocab_size=tokenizer.get_vocab_size(), n_positions=n_positions, n_embd=32, n_layer=2, n_head=2,
        activation_function="gelu_new", initializer_range=0.1, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


def save_tiny_bert(folder: Path, max_positions: int = 64) -> Path:
    """A random 2-layer BertForMaskedLM (no pooler, as it saves) with a WordPiece vocab.txt only."""
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"()-")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars), *WORDS]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    config = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=max_positions, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        initializer_range=0.1,
    )  # fmt: skip
    torch.manual_seed(1)
    transformers.BertForMaskedLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> Path:
    return save_tiny_gpt2(tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("bert"))


def _greedy_ours(model, prompt: torch.Tensor) -> list[int]:
    with torch.no_grad():
        return generate(model, prompt, GenerationConfig(strategy="greedy", max_new_tokens=50))[0].tolist()


def _greedy_hf(model, prompt: torch.Tensor) -> list[int]:
    with torch.no_grad():
        out = model.generate(
            prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=50, min_new_tokens=50,
            pad_token_id=0,
        )  # fmt: skip
    return out[0].tolist()


def test_gpt2_import_reproduces_logits_and_greedy_tokens(gpt2_dir):
    hf = transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir).eval()
    ours = load_gpt_hf(f"hf:{gpt2_dir}")
    ids = torch.randint(0, hf.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits, atol=1e-4, rtol=0)
    prompt = ids[:1, :8]
    tokens = _greedy_ours(ours, prompt)
    assert tokens == _greedy_hf(hf, prompt) and len(set(tokens[8:])) > 5  # not one repeated token


def _gpt_module() -> GPTModule:
    tokenizer = BPETokenizer.train([TEXT], 320)
    transformer = TransformerConfig(dim=32, n_layers=2, n_heads=2, max_seq_len=96, activation="gelu_tanh")
    torch.manual_seed(2)
    module = GPTModule(GPTConfig(vocab_size=tokenizer.vocab_size, transformer=transformer))
    with torch.no_grad():  # wide weights: peaked logits, so greedy decoding has no near-ties and varies
        for param in module.model.parameters():
            param.normal_(0, 0.2) if param.ndim == 2 else param.add_(0.1 * torch.randn_like(param))
    module.tokenizer = tokenizer
    return module.eval()


def test_gpt_export_loads_in_transformers_with_the_same_logits_tokens_and_tokenizer(tmp_path):
    module = _gpt_module()
    export_gpt_hf(module, tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, module.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, module.model(ids), atol=1e-4, rtol=0)
    tokens = _greedy_ours(module.model, ids[:1, :8])
    assert _greedy_hf(hf, ids[:1, :8]) == tokens and len(set(tokens[8:])) > 5
    hf_tokenizer_ = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert hf_tokenizer_(SAMPLE)["input_ids"] == module.tokenizer.encode(SAMPLE)


def test_a_char_tokenizer_exports_with_the_same_ids(tmp_path):
    module = _gpt_module()
    module.tokenizer = CharTokenizer.train([TEXT + SAMPLE])
    module.config.vocab_size = module.tokenizer.vocab_size  # the export reads sizes from the config only
    module.model = type(module.model)(module.config)
    export_gpt_hf(module, tmp_path)
    reloaded = HFTokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert reloaded.encode(SAMPLE).ids == module.tokenizer.encode(SAMPLE)
    assert reloaded.decode(reloaded.encode(SAMPLE).ids) == SAMPLE


@pytest.mark.parametrize(
    ("overrides", "option"),
    [
        ({"position": "rope"}, "position='rope'"),
        ({"ffn": "swiglu"}, "ffn='swiglu'"),
        ({"n_experts": 2}, "n_experts=2"),
        ({"norm_position": "post"}, "norm_position='post'"),
        ({"bias": False}, "bias=false"),
    ],
)
def test_gpt_export_refuses_what_gpt2_cannot_express(tmp_path, overrides, option):
    module = GPTModule(
        GPTConfig(vocab_size=300, transformer=TransformerConfig(dim=32, n_layers=1, n_heads=2, **overrides))
    )
    module.tokenizer = CharTokenizer("ab")
    with pytest.raises(ValueError, match=option.replace("(", r"\(")):
        export_gpt_hf(module, tmp_path)
    assert not any(tmp_path.iterdir())


def _bert_inputs(vocab: int):
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(0, vocab, (3, 20), generator=generator)
    keep = torch.ones(3, 20, dtype=torch.bool)
    keep[1, 14:] = False
    keep[2, 9:] = False
    return ids, torch.zeros_like(ids), keep


def test_bert_mlm_import_reproduces_logits(bert_dir):
    hf = transformers.BertForMaskedLM.from_pretrained(bert_dir).eval()
    ours = load_bert_hf(f"hf:{bert_dir}")
    ids, segments, keep = _bert_inputs(hf.config.vocab_size)
    with torch.no_grad():
        expected = hf(input_ids=ids, token_type_ids=segments, attention_mask=keep.long()).logits
        logits = ours.mlm_head(ours(ids, segments, keep))
    torch.testing.assert_close(logits[keep], expected[keep], atol=1e-4, rtol=0)


def _bert_config() -> BertConfig:
    transformer = TransformerConfig(
        dim=32, n_layers=2, n_heads=2, norm_position="post", input_norm=True, norm_eps=1e-12, max_seq_len=64
    )
    return BertConfig(vocab_size=320, num_classes=3, transformer=transformer)


def test_bert_mlm_export_reproduces_logits(tmp_path):
    torch.manual_seed(4)
    module = BertPretrainModule(_bert_config()).eval()
    module.tokenizer = BPETokenizer.train([TEXT], 320)
    export_bert_hf(module, tmp_path)
    hf = transformers.BertForMaskedLM.from_pretrained(tmp_path).eval()
    ids, segments, keep = _bert_inputs(320)
    with torch.no_grad():
        expected = module.model.mlm_head(module.model(ids, segments, keep))
        logits = hf(input_ids=ids, token_type_ids=segments, attention_mask=keep.long()).logits
    torch.testing.assert_close(logits[keep], expected[keep], atol=1e-4, rtol=0)
    encoded = transformers.AutoTokenizer.from_pretrained(tmp_path)(SAMPLE)["input_ids"]
    assert encoded == [module.tokenizer.cls_id, *module.tokenizer.encode(SAMPLE), module.tokenizer.sep_id]


def test_bert_export_refuses_locality_self_attention(tmp_path):
    config = _bert_config()
    config.transformer.locality_self_attention = True  # an encoder may have it; HF's BERT has no counterpart
    module = BertPretrainModule(config)
    module.tokenizer = BPETokenizer.train([TEXT], 320)
    with pytest.raises(ValueError, match=r"cannot express transformer\.locality_self_attention=true"):
        export_bert_hf(module, tmp_path)
    assert not any(tmp_path.iterdir())


def test_bert_classifier_export_reproduces_logits_and_labels(tmp_path):
    torch.manual_seed(5)
    module = BertClassifierModule(_bert_config()).eval()
    module.tokenizer = BPETokenizer.train([TEXT], 320)
    module.class_names = ["neg", "neutral", "pos"]
    export_bert_hf(module, tmp_path)
    hf = transformers.BertForSequenceClassification.from_pretrained(tmp_path).eval()
    ids, segments, keep = _bert_inputs(320)
    with torch.no_grad():
        expected = module(ids, segments, keep)
        logits = hf(input_ids=ids, token_type_ids=segments, attention_mask=keep.long()).logits
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)
    assert hf.config.id2label == {0: "neg", 1: "neutral", 2: "pos"}


def test_gpt_fits_from_a_hf_folder_through_the_cli_with_its_tokenizer(gpt2_dir, tmp_path):
    (tmp_path / "corpus.txt").write_text(TEXT)
    argv = [
        "gpt", "fit", "--config", str(REPO / "experiments/text/gpt_demo.yaml"), f"--data.init_from=hf:{gpt2_dir}",
        "--data.source=corpus.txt", "--data.context_len=32", "--data.batch_size=2", "--trainer.max_steps=2",
        "--trainer.val_check_interval=1", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]  # fmt: skip
    run_cli(tmp_path, argv)
    module = load_task(tmp_path / "runs/gpt_demo/checkpoints/last.ckpt")
    reference = HFTokenizer.from_file(str(gpt2_dir / "tokenizer.json"))
    assert module.tokenizer.encode(SAMPLE) == reference.encode(SAMPLE).ids
    assert (module.config.transformer.dim, module.config.transformer.max_seq_len) == (32, 128)
    hf = transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir)
    assert not torch.equal(module.model.token_embedding.weight, hf.transformer.wte.weight)  # trained from it
    torch.testing.assert_close(module.model.token_embedding.weight, hf.transformer.wte.weight, atol=0.05, rtol=0)


def test_bert_classify_fine_tunes_from_a_hf_folder(bert_dir, tmp_path):
    rows = "sentence\tlabel\n" + "".join(
        f"the film is {w} {i}\t{int(w == 'good')}\n" for i in range(20) for w in ("good", "bad")
    )
    for name in ("train.tsv", "val.tsv"):
        (tmp_path / name).write_text(rows)
    argv = [
        "bert-classify", "fit", "--config", str(REPO / "experiments/text/bert_tiny_demo_finetune.yaml"),
        f"--data.init_from=hf:{bert_dir}", "--data.source=files", "--data.train_path=train.tsv",
        "--data.val_path=val.tsv", "--data.batch_size=4", "--trainer.max_steps=2", "--trainer.val_check_interval=1",
        "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    ]  # fmt: skip
    run_cli(tmp_path, argv)
    module = load_task(tmp_path / "runs/bert_tiny_demo_finetune/checkpoints/last.ckpt")
    assert module.tokenizer.encode("the film is good") == hf_tokenizer(f"hf:{bert_dir}").encode("the film is good")
    assert module.config.transformer.dim == 32 and module.config.num_classes == 2
    hf = transformers.BertModel.from_pretrained(bert_dir, add_pooling_layer=False)
    torch.testing.assert_close(
        module.model.bert.segment_embedding.weight, hf.embeddings.token_type_embeddings.weight, atol=0.05, rtol=0
    )


def _broken(gpt2_dir: Path, tmp_path: Path, kind: str) -> str:
    folder = tmp_path / kind
    if kind == "not_a_model":
        folder.mkdir()
        (folder / "notes.txt").write_text("hello")
        return f"hf:{folder}"
    if kind == "offline_hub_id":
        return "hf:nobody-here/no-such-model"
    shutil.copytree(gpt2_dir, folder)
    if kind == "no_tokenizer":
        (folder / "tokenizer.json").unlink()
    elif kind == "config_mismatch":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps(config | {"n_embd": 64}))
    return f"hf:{folder}"


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("not_a_model", "is not a Hugging Face model folder"),
        ("no_tokenizer", "has no tokenizer"),
        ("config_mismatch", "do not match its config.json"),
        ("offline_hub_id", "hf:nobody-here/no-such-model is not a local folder and could not be fetched"),
    ],
)
def test_bad_hf_folders_are_one_line_errors(gpt2_dir, tmp_path, monkeypatch, capsys, kind, message):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # an empty cache
    (tmp_path / "corpus.txt").write_text(TEXT)
    argv = [
        "gpt", "fit", "--config", str(REPO / "experiments/text/gpt_demo.yaml"), "--data.source=corpus.txt",
        f"--data.init_from={_broken(gpt2_dir, tmp_path, kind)}", "--trainer.max_steps=1",
    ]  # fmt: skip
    run_cli(tmp_path, argv, expect=2)
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("anyformer gpt: error:")]
    assert len(errors) == 1 and message in errors[0], errors


def test_model_config_that_disagrees_with_the_hf_config_is_refused(gpt2_dir):
    with pytest.raises(ValueError, match=r"model.config.transformer.n_layers=6 disagrees"):
        GPTModule(GPTConfig(transformer=TransformerConfig(n_layers=6, max_seq_len=64)), init_from=f"hf:{gpt2_dir}")
    with pytest.raises(ValueError, match=r"max_seq_len=256 .* exceeds the 128 positions"):
        GPTModule(GPTConfig(transformer=TransformerConfig(max_seq_len=256)), init_from=f"hf:{gpt2_dir}")


def test_unsupported_hf_options_are_refused_by_name(gpt2_dir, tmp_path):
    folder = tmp_path / "scaled"
    shutil.copytree(gpt2_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"scale_attn_by_inverse_layer_idx": True}))
    with pytest.raises(ValueError, match="scale_attn_by_inverse_layer_idx=True is not supported"):
        load_gpt_hf(f"hf:{folder}")
