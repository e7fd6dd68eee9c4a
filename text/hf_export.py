"""Writing anyformer GPT and BERT models as Hugging Face folders (``config.json``,
``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json``) that ``transformers``'
``from_pretrained`` loads; ``anyformer export --format hf`` calls :func:`export_gpt_hf` and
:func:`export_bert_hf`. Architectures the HF class cannot express are refused, naming the option,
before anything is written.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tokenizers import Regex, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as HFTokenizer
from torch import Tensor

from anyformer.core.config import TransformerConfig
from anyformer.text.bert.bert import BertForClassification
from anyformer.text.hf_weights import bert_state_to_hf, gpt_state_to_hf
from anyformer.text.tokenizer import BPETokenizer, CharTokenizer, Tokenizer

logger = logging.getLogger(__name__)

HF_ACTIVATIONS = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}
"""``TransformerConfig.activation`` -> HF ``activation_function`` / ``hidden_act``."""


def _check_out_dir(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    if not out_dir.is_dir() or any(out_dir.iterdir()):
        raise ValueError(f"{out_dir} must be an existing empty folder")
    return out_dir


def _refuse_export(checks: dict[str, bool], target: str) -> None:
    """Raise for the first option (key) whose check is False."""
    for option, fine in checks.items():
        if not fine:
            raise ValueError(f"{target} cannot express {option}")


def _core_checks(t: TransformerConfig, norm_position: str) -> dict[str, bool]:
    return {
        f"transformer.position={t.position!r} (only 'learned')": t.position == "learned",
        f"transformer.ffn={t.ffn!r} (only 'gelu')": t.ffn == "gelu",
        f"transformer.n_experts={t.n_experts} (no mixture of experts)": t.n_experts == 0,
        f"transformer.norm={t.norm!r} (only 'layernorm')": t.norm == "layernorm",
        f"transformer.norm_position={t.norm_position!r} (only {norm_position!r})": t.norm_position == norm_position,
        "transformer.bias=false (it has biases everywhere)": t.bias,
        f"transformer.activation={t.activation!r}": t.activation in HF_ACTIVATIONS,
        "transformer.locality_self_attention=true (no learned temperature or masked diagonal)": (
            not t.locality_self_attention
        ),
    }


def _token_or_none(tokenizer: Tokenizer, token: str) -> int | None:
    try:
        return tokenizer.token_id(token)
    except KeyError:
        return None


def hf_tokenizer_of(tokenizer: Tokenizer) -> HFTokenizer:
    """Our tokenizer as a HF ``tokenizers.Tokenizer`` with the same ids: a BPE as it is, a char
    tokenizer as a ``WordLevel`` model over single characters.

    Raises:
        ValueError: a tokenizer kind without a HF equivalent.
    """
    if isinstance(tokenizer, BPETokenizer):
        return HFTokenizer.from_str(json.dumps(tokenizer.to_state()["tokenizer"]))
    if isinstance(tokenizer, CharTokenizer):
        state = tokenizer.to_state()
        tokens = [*state["chars"], *state["special_tokens"]]
        unk = "[UNK]" if state["map_unknown_to_unk"] else None
        hf = HFTokenizer(models.WordLevel({token: i for i, token in enumerate(tokens)}, unk_token=unk))
        hf.pre_tokenizer = pre_tokenizers.Split(pattern=Regex(r"[\s\S]"), behavior="isolated")  # one character each
        hf.decoder = decoders.Fuse()
        hf.add_special_tokens(list(state["special_tokens"]))
        return hf
    raise ValueError(
        f"a {getattr(tokenizer, 'kind', type(tokenizer).__name__)!r} tokenizer has no Hugging Face equivalent"
    )


def _write(
    out_dir: Path, config: dict[str, Any], weights: dict[str, Tensor], tokenizer: HFTokenizer, settings: dict[str, Any]
) -> None:
    from safetensors.torch import save_file

    save_file(weights, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    tokenizer.save(str(out_dir / "tokenizer.json"))
    settings = {"tokenizer_class": "PreTrainedTokenizerFast", **settings}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")


def export_gpt_hf(module: Any, out_dir: Path) -> None:
    """Write a ``gpt`` task's model as a ``GPT2LMHeadModel`` folder (config.json, model.safetensors,
    tokenizer.json, tokenizer_config.json) into the existing empty ``out_dir``.

    Args:
        module: a ``GPTModule`` (``config``, ``model``, ``tokenizer``), e.g. from ``load_task``.
        out_dir: an existing empty folder; nothing is written when the model is refused.

    Raises:
        ValueError: an option GPT-2 cannot express (named), a tokenizer without HF equivalent, or a
            non-empty ``out_dir``.
    """
    out_dir = _check_out_dir(out_dir)
    config, t = module.config, module.config.transformer
    _refuse_export(
        _core_checks(t, "pre")
        | {
            "scale_embeddings=true (it adds embeddings unscaled)": not config.scale_embeddings,
            "transformer.input_norm=true": not t.input_norm,
            "transformer.final_norm=false (it always has ln_f)": t.use_final_norm,
        },
        "GPT-2 (GPT2LMHeadModel)",
    )
    if module.tokenizer is None:
        raise ValueError("the module has no tokenizer to export (a checkpoint of `anyformer gpt fit` has one)")
    tokenizer = hf_tokenizer_of(module.tokenizer)
    eos = _token_or_none(module.tokenizer, "<|endoftext|>")
    hf_config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": config.vocab_size,
        "n_positions": t.max_seq_len, "n_embd": t.dim, "n_layer": t.n_layers, "n_head": t.n_heads,
        "n_inner": t.hidden_dim, "activation_function": HF_ACTIVATIONS[t.activation], "resid_pdrop": t.dropout,
        "embd_pdrop": t.dropout, "attn_pdrop": t.attn_dropout, "layer_norm_epsilon": t.norm_eps,
        "initializer_range": 0.02, "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False, "use_cache": True, "tie_word_embeddings": config.tie_embeddings,
        "bos_token_id": eos, "eos_token_id": eos, "dtype": "float32",
    }  # fmt: skip
    weights = gpt_state_to_hf(module.model.state_dict(), t.n_layers, tied=config.tie_embeddings)
    specials = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"} if eos is not None else {}
    if _token_or_none(module.tokenizer, "[PAD]") is not None:
        specials["pad_token"] = "[PAD]"
    _write(out_dir, hf_config, weights, tokenizer, {"model_max_length": t.max_seq_len, **specials})
    logger.info("wrote a GPT2LMHeadModel folder to %s", out_dir)


def export_bert_hf(module: Any, out_dir: Path) -> None:
    """Write a ``bert`` task's model as a ``BertForMaskedLM`` folder (its pooler and NSP head kept,
    which ``BertForPreTraining`` reads too), or a ``bert-classify`` model as a
    ``BertForSequenceClassification`` folder (``id2label`` from the class names), with the tokenizer
    (``[CLS] text [SEP]`` added by its post-processor, as anyformer encodes a sentence).

    Args:
        module: a ``BertPretrainModule`` or ``BertClassifierModule`` (``config``, ``model``, ``tokenizer``).
        out_dir: an existing empty folder; nothing is written when the model is refused.

    Raises:
        ValueError: an option BERT cannot express (named), a tokenizer without HF equivalent or
            without ``[CLS]``/``[SEP]``, or a non-empty ``out_dir``.
    """
    out_dir = _check_out_dir(out_dir)
    config, t = module.config, module.config.transformer
    classify = isinstance(module.model, BertForClassification)
    target = "BertForSequenceClassification" if classify else "BertForMaskedLM"
    _refuse_export(
        _core_checks(t, "post")
        | {
            f"transformer.activation={t.activation!r} (only 'gelu')": t.activation == "gelu",
            "transformer.input_norm=false (it normalizes the embeddings)": t.input_norm,
            "transformer.final_norm=true (post-norm has none)": not t.use_final_norm,
            f"classifier_pool={config.classifier_pool!r} (only 'cls')": not classify or config.classifier_pool == "cls",
        },
        f"BERT ({target})",
    )
    if module.tokenizer is None:
        raise ValueError("the module has no tokenizer to export (a checkpoint of `anyformer bert fit` has one)")
    tokenizer = hf_tokenizer_of(module.tokenizer)
    ids = {token: _token_or_none(module.tokenizer, token) for token in ("[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]")}
    if ids["[CLS]"] is None or ids["[SEP]"] is None:
        raise ValueError("a BERT tokenizer needs [CLS] and [SEP] tokens")
    cls, sep = ("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[cls, sep]
    )
    state = module.model.state_dict()
    ours = {name[len("bert.") :]: value for name, value in state.items() if name.startswith("bert.")}
    heads = {
        name: value for name, value in state.items() if name.split(".")[0] in ("mlm_head", "nsp_head", "classifier")
    }
    weights = bert_state_to_hf(ours | heads, t.n_layers)
    hf_config = {
        "architectures": [target], "model_type": "bert", "vocab_size": config.vocab_size, "hidden_size": t.dim,
        "num_hidden_layers": t.n_layers, "num_attention_heads": t.n_heads, "intermediate_size": t.hidden_dim,
        "hidden_act": "gelu", "hidden_dropout_prob": t.dropout, "attention_probs_dropout_prob": t.attn_dropout,
        "max_position_embeddings": t.max_seq_len, "type_vocab_size": config.n_segments, "initializer_range": 0.02,
        "layer_norm_eps": t.norm_eps, "pad_token_id": ids["[PAD]"] or 0, "position_embedding_type": "absolute",
        "tie_word_embeddings": True, "dtype": "float32",
    }  # fmt: skip
    if classify:
        names = list(module.class_names)
        hf_config |= {
            "classifier_dropout": config.classifier_dropout, "problem_type": "single_label_classification",
            "id2label": dict(enumerate(names)), "label2id": {name: i for i, name in enumerate(names)},
        }  # fmt: skip
    specials = {f"{token[1:-1].lower()}_token": token for token, i in ids.items() if i is not None}
    _write(out_dir, hf_config, weights, tokenizer, {"model_max_length": t.max_seq_len, **specials})
    logger.info("wrote a %s folder to %s", target, out_dir)
