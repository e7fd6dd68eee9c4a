"""Hugging Face model folders in and out: GPT-2 (``GPT2LMHeadModel``) and BERT (``BertForMaskedLM``,
``BertModel``, ``BertForSequenceClassification``).

Import: ``init_from: hf:<folder or hub id>`` (``data.init_from``, linked into the model) builds the
model config from the folder's ``config.json``, copies the weights (``model.safetensors`` or
``pytorch_model.bin``, read directly: ``transformers`` is not needed) and takes the tokenizer from
``tokenizer.json`` (or ``vocab.json`` + ``merges.txt``, or BERT's ``vocab.txt``). A hub id that is
not a local folder is fetched with ``huggingface_hub.snapshot_download``.

The architecture comes from ``config.json``. ``model.config`` keeps the training-only fields (dropout,
``classifier_*``); ``max_seq_len`` (linked from the data) may not exceed the HF positions, all of
which are kept. Any other field set in ``model.config`` to a value other than both its default and
the HF value is refused, naming it (a field left at its default is taken from ``config.json``).

Export: :func:`export_gpt_hf` and :func:`export_bert_hf` write a folder that
``transformers``' ``from_pretrained`` loads (``config.json``, ``model.safetensors``, ``tokenizer.json``,
``tokenizer_config.json``), refusing with a ``ValueError`` that names the option any architecture
the HF class cannot express. The weight names are in :mod:`anyformer.text.hf_weights`, the export
in :mod:`anyformer.text.hf_export` (re-exported here).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers
from torch import Tensor, nn

from anyformer.core.config import TransformerConfig
from anyformer.text.bert.bert import BertConfig, BertForClassification, BertForPretraining
from anyformer.text.gpt.gpt import GPT, GPTConfig
from anyformer.text.hf_export import export_bert_hf, export_gpt_hf
from anyformer.text.hf_weights import (
    MissingWeightsError,
    bert_heads_from_hf,
    bert_state_from_hf,
    bert_state_to_hf,
    gpt_state_from_hf,
    gpt_state_to_hf,
)
from anyformer.text.tokenizer import BPETokenizer

__all__ = [
    "bert_from_hf",
    "bert_heads_from_hf",
    "bert_state_from_hf",
    "bert_state_to_hf",
    "export_bert_hf",
    "export_gpt_hf",
    "gpt_from_hf",
    "gpt_state_from_hf",
    "gpt_state_to_hf",
    "hf_folder",
    "hf_tokenizer",
    "is_hf",
    "load_bert_hf",
    "load_gpt_hf",
]

logger = logging.getLogger(__name__)

PREFIX = "hf:"
META_FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "vocab.txt"]
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "ANYFORMER_OFFLINE")
GPT_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}
"""HF ``activation_function`` -> ``TransformerConfig.activation`` (the tanh GELUs are one function)."""
FREE_FIELDS = ("dropout", "attn_dropout", "max_seq_len")
"""Transformer fields ``model.config`` decides under ``init_from`` (max_seq_len: at most the HF positions)."""


# -- the folder ------------------------------------------------------------------------------------
def is_hf(spec: str | os.PathLike[str] | None) -> bool:
    """Whether ``spec`` names a Hugging Face model (``hf:<folder or hub id>``)."""
    return isinstance(spec, str) and spec.startswith(PREFIX)


def _offline() -> bool:
    from huggingface_hub import constants

    flags = [os.environ.get(name, "").strip().lower() for name in OFFLINE_VARIABLES]
    return constants.HF_HUB_OFFLINE or any(flag in ("1", "true", "yes", "on") for flag in flags)


def hf_folder(spec: str) -> Path:
    """``hf:<folder or hub id>`` -> the local folder holding ``config.json``.

    A name that is not an existing folder is a hub id, fetched (config, tokenizer files and the
    safetensors weights, else ``pytorch_model.bin``) into the Hugging Face cache; offline
    (``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE`` or ``ANYFORMER_OFFLINE`` set) only the cache is read.

    Raises:
        ValueError: an empty name, a path that is not a folder, or a hub id that cannot be fetched.
    """
    name = spec[len(PREFIX) :] if is_hf(spec) else str(spec)
    if not name:
        raise ValueError(f"{spec!r} names no model: expected hf:<folder> or hf:<hub id>, e.g. hf:gpt2")
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ValueError(f"hf:{name} is not a folder (expected a Hugging Face model folder with config.json)")
    from huggingface_hub import snapshot_download

    offline = _offline()
    try:
        folder = Path(
            snapshot_download(name, allow_patterns=[*META_FILES, "model*.safetensors*"], local_files_only=offline)
        )
        if not list(folder.glob("model*.safetensors")):
            folder = Path(
                snapshot_download(name, allow_patterns=[*META_FILES, "pytorch_model.bin"], local_files_only=offline)
            )
    except Exception as err:  # offline, unknown repo, network: many types, one message
        why = "offline mode is set and it is not in the Hugging Face cache" if offline else type(err).__name__
        raise ValueError(
            f"hf:{name} is not a local folder and could not be fetched from the Hugging Face Hub ({why})"
        ) from None
    return folder


def read_hf_config(folder: Path, spec: str, model_type: str) -> dict[str, Any]:
    """``config.json`` of ``folder``, checked to be a ``model_type`` model."""
    path = folder / "config.json"
    if not path.is_file():
        raise ValueError(f"{spec} is not a Hugging Face model folder: {path} does not exist")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None
    found = config.get("model_type") if isinstance(config, dict) else None
    if found != model_type:
        raise ValueError(f"{spec} holds a {found!r} model (config.json model_type); expected {model_type!r}")
    return config


def read_hf_weights(folder: Path, spec: str) -> dict[str, Tensor]:
    """The tensors of ``model.safetensors`` (or its shards), else of ``pytorch_model.bin`` (weights only)."""
    index = folder / "model.safetensors.index.json"
    files = [folder / "model.safetensors"]
    if not files[0].is_file() and index.is_file():
        files = [folder / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    try:
        if all(file.is_file() for file in files):
            from safetensors.torch import load_file

            return {name: tensor for file in files for name, tensor in load_file(file).items()}
        if (folder / "pytorch_model.bin").is_file():
            return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged file: safetensors and torch raise many types
        raise ValueError(f"the weights of {spec} could not be read ({type(err).__name__}: {err})") from None
    raise ValueError(f"{spec} has no weights: expected model.safetensors or pytorch_model.bin in {folder}")


# -- the tokenizer ---------------------------------------------------------------------------------
def hf_tokenizer(spec: str) -> BPETokenizer:
    """The tokenizer of a HF model folder: ``tokenizer.json``, else byte-level BPE from ``vocab.json``
    + ``merges.txt`` (GPT-2), else WordPiece from ``vocab.txt`` (BERT; lower-cased unless
    ``tokenizer_config.json`` says ``do_lower_case: false``). Wrapped as a :class:`BPETokenizer`
    (which holds any HF ``tokenizers`` model), so checkpoints store it like a trained one.

    Raises:
        ValueError: none of those files, or one that ``tokenizers`` cannot read.
    """
    folder = hf_folder(spec)
    if not (folder / "config.json").is_file():
        raise ValueError(f"{spec} is not a Hugging Face model folder: {folder / 'config.json'} does not exist")
    try:
        if (folder / "tokenizer.json").is_file():
            tokenizer = HFTokenizer.from_file(str(folder / "tokenizer.json"))
        elif (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            tokenizer = HFTokenizer(models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt")))
            tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            tokenizer.decoder = decoders.ByteLevel()
        elif (folder / "vocab.txt").is_file():
            settings_path = folder / "tokenizer_config.json"
            settings = json.loads(settings_path.read_text()) if settings_path.is_file() else {}
            tokenizer = HFTokenizer(models.WordPiece.from_file(str(folder / "vocab.txt"), unk_token="[UNK]"))
            tokenizer.normalizer = normalizers.BertNormalizer(lowercase=settings.get("do_lower_case", True))
            tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
            tokenizer.decoder = decoders.WordPiece()
        else:
            raise ValueError(
                f"{spec} has no tokenizer: expected tokenizer.json (or vocab.json + merges.txt, or vocab.txt)"
            )
    except Exception as err:
        if isinstance(err, ValueError) and str(err).startswith(spec):
            raise
        raise ValueError(f"the tokenizer of {spec} could not be read ({type(err).__name__}: {err})") from None
    tokenizer.no_truncation()  # a corpus is encoded whole
    tokenizer.no_padding()
    return BPETokenizer(tokenizer)


# -- configs ---------------------------------------------------------------------------------------
def _refuse(hf: dict[str, Any], spec: str, option: str, allowed: Any, what: str) -> None:
    if option in hf and hf[option] != allowed:
        raise ValueError(f"{spec}: config.json {option}={hf[option]!r} is not supported ({what})")


def _merge(requested: Any, imported: Any, default: Any, spec: str, prefix: str = "model.config.") -> None:
    """Refuse ``requested`` fields set to a value other than their default and the imported one."""
    for field in dataclasses.fields(imported):
        name = field.name
        ours, theirs, usual = (getattr(c, name) for c in (requested, imported, default))
        if name == "final_norm":
            ours, theirs, usual = requested.use_final_norm, imported.use_final_norm, default.use_final_norm
        if dataclasses.is_dataclass(theirs):
            _merge(ours, theirs, usual, spec, f"{prefix}{name}.")
        elif ours != theirs and ours != usual:
            raise ValueError(
                f"{prefix}{name}={ours!r} disagrees with {spec} ({theirs!r} from config.json); with init_from "
                "the architecture comes from config.json: remove the field from model.config"
            )


def _free_fields(requested: TransformerConfig | None, hf_positions: int, spec: str) -> dict[str, Any]:
    if requested is None:  # no model.config: the defaults' dropout
        return {}
    if requested.max_seq_len > hf_positions:
        raise ValueError(
            f"max_seq_len={requested.max_seq_len} (linked from the data) exceeds the {hf_positions} positions of {spec}"
        )
    return {"dropout": requested.dropout, "attn_dropout": requested.attn_dropout}


def _check_vocab(requested: int, default: int, hf_vocab: int, spec: str) -> None:
    if requested > hf_vocab and requested != default:
        raise ValueError(f"the tokenizer has {requested} ids but the model of {spec} only {hf_vocab} (vocab_size)")


def gpt_config_from_hf(hf: dict[str, Any], spec: str, requested: GPTConfig | None = None) -> GPTConfig:
    """A GPT-2 ``config.json`` -> :class:`GPTConfig` (training fields from ``requested``); see the module doc.

    Raises:
        ValueError: a GPT-2 option the core cannot express, or a ``requested`` field that disagrees.
    """
    _refuse(hf, spec, "scale_attn_by_inverse_layer_idx", False, "the core scales every layer's scores by 1/sqrt(Dh)")
    _refuse(hf, spec, "scale_attn_weights", True, "the core always scales scores by 1/sqrt(Dh)")
    _refuse(hf, spec, "reorder_and_upcast_attn", False, "the core's attention has no upcast path")
    _refuse(hf, spec, "add_cross_attention", False, "a GPT has no encoder to attend to")
    activation = hf.get("activation_function", "gelu_new")
    if activation not in GPT_ACTIVATIONS:
        raise ValueError(
            f"{spec}: config.json activation_function={activation!r} is not one of {sorted(GPT_ACTIVATIONS)}"
        )
    dim = hf["n_embd"]
    hidden = hf.get("n_inner") or 4 * dim
    transformer = TransformerConfig(
        dim=dim, n_layers=hf["n_layer"], n_heads=hf["n_head"], mlp_ratio=hidden / dim, ffn="gelu",
        activation=GPT_ACTIVATIONS[activation], norm="layernorm", norm_position="pre",
        norm_eps=hf.get("layer_norm_epsilon", 1e-5), position="learned", max_seq_len=hf["n_positions"],
        bias=True, input_norm=False, **_free_fields(requested and requested.transformer, hf["n_positions"], spec),
    )  # fmt: skip
    if transformer.hidden_dim != hidden:
        raise ValueError(f"{spec}: config.json n_inner={hidden} is not a width the core can build from n_embd={dim}")
    config = GPTConfig(
        vocab_size=hf["vocab_size"], transformer=transformer, tie_embeddings=hf.get("tie_word_embeddings", True)
    )
    if requested is not None:
        default = GPTConfig()
        _check_vocab(requested.vocab_size, default.vocab_size, config.vocab_size, spec)
        _merge(_architecture_of(requested, config), config, default, spec)
    return config


def _architecture_of(requested: Any, imported: Any) -> Any:
    """``requested`` with the fields it may decide (vocab_size, :data:`FREE_FIELDS`) set to the
    imported values, so :func:`_merge` compares the architecture only."""
    t = dataclasses.replace(requested.transformer, **{n: getattr(imported.transformer, n) for n in FREE_FIELDS})
    return dataclasses.replace(requested, vocab_size=imported.vocab_size, transformer=t)


def bert_config_from_hf(hf: dict[str, Any], spec: str, requested: BertConfig | None = None) -> BertConfig:
    """A BERT ``config.json`` -> :class:`BertConfig` (dropout, ``num_classes`` and ``classifier_*``
    from ``requested``); see the module doc.

    Raises:
        ValueError: a BERT option the core cannot express, or a ``requested`` field that disagrees.
    """
    _refuse(hf, spec, "position_embedding_type", "absolute", "the core has learned absolute positions")
    _refuse(hf, spec, "is_decoder", False, "anyformer's BERT is an encoder")
    _refuse(hf, spec, "add_cross_attention", False, "anyformer's BERT has no cross-attention")
    _refuse(hf, spec, "hidden_act", "gelu", "the MLM head and the MLP use the exact GELU")
    dim, hidden = hf["hidden_size"], hf["intermediate_size"]
    transformer = TransformerConfig(
        dim=dim, n_layers=hf["num_hidden_layers"], n_heads=hf["num_attention_heads"], mlp_ratio=hidden / dim,
        ffn="gelu", activation="gelu", norm="layernorm", norm_position="post", norm_eps=hf.get("layer_norm_eps", 1e-12),
        position="learned", max_seq_len=hf["max_position_embeddings"], bias=True, input_norm=True,
        **_free_fields(requested and requested.transformer, hf["max_position_embeddings"], spec),
    )  # fmt: skip
    if transformer.hidden_dim != hidden:
        raise ValueError(f"{spec}: config.json intermediate_size={hidden} is not a width the core can build")
    config = dataclasses.replace(
        requested or BertConfig(),
        vocab_size=hf["vocab_size"], n_segments=hf.get("type_vocab_size", 2), transformer=transformer,
    )  # fmt: skip
    if requested is not None:
        default = BertConfig()
        _check_vocab(requested.vocab_size, default.vocab_size, config.vocab_size, spec)
        _merge(_architecture_of(requested, config), config, default, spec)
    return config


# -- import ----------------------------------------------------------------------------------------
def _mapped(convert: Any, spec: str) -> dict[str, Tensor]:
    try:
        return convert()
    except MissingWeightsError as err:
        names = err.args[0]
        raise ValueError(
            f"the weights of {spec} do not match its config.json: {len(names)} tensors missing, e.g. {names[:3]}"
        ) from None


def load_weights(model: nn.Module, state: dict[str, Tensor], spec: str, optional: tuple[str, ...] = ()) -> None:
    """Copy ``state`` into ``model``, every shape checked; names starting with ``optional`` may be
    absent (they keep their initialization, with a warning).

    Raises:
        ValueError: a missing tensor or a shape that differs (config.json and the weights disagree).
    """
    expected = model.state_dict()
    for name, value in state.items():
        if name in expected and expected[name].shape != value.shape:
            raise ValueError(
                f"the weights of {spec} do not match its config.json: {name} is {tuple(value.shape)}, "
                f"the config builds {tuple(expected[name].shape)}"
            )
    result = model.load_state_dict(state, strict=False)
    missing = [name for name in result.missing_keys if not name.startswith(optional)]
    if missing:
        raise ValueError(f"the weights of {spec} lack {missing[:3]}")
    if result.missing_keys:
        logger.warning(
            "%s has no %s: they start from random weights", spec, sorted({n.split(".")[0] for n in result.missing_keys})
        )


def gpt_from_hf(spec: str, requested: GPTConfig | None = None) -> tuple[GPTConfig, dict[str, Tensor]]:
    """The :class:`GPTConfig` and ``GPT`` state dict of a GPT-2 folder or hub id (``hf:...``)."""
    folder = hf_folder(spec)
    config = gpt_config_from_hf(read_hf_config(folder, spec, "gpt2"), spec, requested)
    weights = read_hf_weights(folder, spec)
    n_layers, tied = config.transformer.n_layers, config.tie_embeddings
    return config, _mapped(lambda: gpt_state_from_hf(weights, n_layers, tied=tied), spec)


def load_gpt_hf(spec: str, config: GPTConfig | None = None) -> GPT:
    """A :class:`GPT` with the weights of a GPT-2 folder or hub id (``hf:...``), in eval mode."""
    config, state = gpt_from_hf(spec, config)
    model = GPT(config)
    load_weights(model, state, spec)
    return model.eval()


def bert_from_hf(
    spec: str, requested: BertConfig | None = None
) -> tuple[BertConfig, dict[str, Tensor], dict[str, Tensor]]:
    """The :class:`BertConfig`, the ``BertModel`` state dict (without ``pooler.*`` when the folder
    has none, as ``BertForMaskedLM`` saves) and the heads found (our names: ``mlm_head.*``,
    ``nsp_head.*``, ``classifier.*``) of a BERT folder or hub id (``hf:...``).

    Raises:
        ValueError: see :func:`bert_config_from_hf`; missing encoder weights; an MLM decoder that
            is not the word embedding (anyformer ties it).
    """
    folder = hf_folder(spec)
    config = bert_config_from_hf(read_hf_config(folder, spec, "bert"), spec, requested)
    weights = read_hf_weights(folder, spec)
    pooler = any(name.endswith("pooler.dense.weight") for name in weights)
    state = _mapped(lambda: bert_state_from_hf(weights, config.transformer.n_layers, pooler=pooler), spec)
    decoder = weights.get("cls.predictions.decoder.weight")
    if decoder is not None and not torch.equal(decoder, state["token_embedding.weight"]):
        raise ValueError(
            f"{spec}: cls.predictions.decoder.weight differs from the word embeddings (untied); "
            "anyformer's MLM head is tied"
        )
    return config, state, bert_heads_from_hf(weights)


def load_bert_hf(spec: str, config: BertConfig | None = None, *, classifier: bool = False) -> nn.Module:
    """A :class:`BertForPretraining` (or, with ``classifier``, a :class:`BertForClassification`)
    with the weights of a BERT folder or hub id (``hf:...``), in eval mode. Heads the folder lacks
    (the pooler of a ``BertForMaskedLM``, NSP, a classifier) keep their random initialization."""
    config, state, heads = bert_from_hf(spec, config)
    model = BertForClassification(config) if classifier else BertForPretraining(config)
    full = {f"bert.{name}": value for name, value in state.items()} | heads
    if not classifier:
        full["mlm_head.token_embedding.weight"] = state["token_embedding.weight"]
    full = {name: value for name, value in full.items() if name in model.state_dict()}
    load_weights(model, full, spec, optional=("bert.pooler.", "mlm_head.", "nsp_head.", "classifier."))
    return model.eval()
