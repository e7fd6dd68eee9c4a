"""Weight names of Hugging Face GPT-2 and BERT against anyformer's, both ways.

Pure state-dict functions (name -> tensor), no ``transformers`` needed: ``anyformer.text.hf`` reads
and writes the files with them, and the parity tests copy a ``transformers`` model's
``state_dict()`` into ours with them.

GPT-2 (``GPT2LMHeadModel``): its ``Conv1D`` layers store (in, out), transposed into ``Linear``'s
(out, in); the fused ``c_attn`` is our ``qkv_proj`` as is. BERT: the separate query/key/value are
concatenated into ``qkv_proj`` in that order; the MLM decoder is the (tied) word embedding.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

GPT_LAYER = {
    # HF name under transformer.h.{i}. -> ours under decoder.blocks.{i}.; True: a Conv1D (transposed)
    "ln_1": ("norm1", False),
    "attn.c_attn": ("attn.qkv_proj", True),
    "attn.c_proj": ("attn.out_proj", True),
    "ln_2": ("norm2", False),
    "mlp.c_fc": ("mlp.fc1", True),
    "mlp.c_proj": ("mlp.fc2", True),
}
BERT_LAYER = {
    # HF name under encoder.layer.{i}. -> ours under encoder.blocks.{i}. (query/key/value: see above)
    "attention.output.dense": "attn.out_proj",
    "attention.output.LayerNorm": "norm1",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "output.LayerNorm": "norm2",
}
BERT_EMBEDDINGS = {
    "embeddings.word_embeddings.weight": "token_embedding.weight",
    "embeddings.token_type_embeddings.weight": "segment_embedding.weight",
    "embeddings.position_embeddings.weight": "encoder.positions.embedding.weight",
    "embeddings.LayerNorm.weight": "encoder.input_norm.weight",
    "embeddings.LayerNorm.bias": "encoder.input_norm.bias",
}
BERT_HEADS = {
    # HF name -> ours, relative to BertForPretraining / BertForClassification
    "cls.predictions.transform.dense.weight": "mlm_head.dense.weight",
    "cls.predictions.transform.dense.bias": "mlm_head.dense.bias",
    "cls.predictions.transform.LayerNorm.weight": "mlm_head.norm.weight",
    "cls.predictions.transform.LayerNorm.bias": "mlm_head.norm.bias",
    "cls.predictions.bias": "mlm_head.bias",
    "cls.seq_relationship.weight": "nsp_head.weight",
    "cls.seq_relationship.bias": "nsp_head.bias",
    "classifier.weight": "classifier.weight",
    "classifier.bias": "classifier.bias",
}
PARAMS = ("weight", "bias")


class MissingWeightsError(KeyError):
    """The Hugging Face state dict lacks tensors the model needs (``args[0]``: their names)."""


def _take(state: Mapping[str, Tensor], name: str, missing: list[str]) -> Tensor | None:
    if name not in state:
        missing.append(name)
        return None
    return state[name]


def _renamed_legacy(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Old TF-converted checkpoints name LayerNorm parameters ``gamma`` / ``beta``."""
    out = {}
    for name, value in state.items():
        if name.endswith(".gamma"):
            name = name[: -len("gamma")] + "weight"
        elif name.endswith(".beta"):
            name = name[: -len("beta")] + "bias"
        out[name] = value
    return out


def gpt_state_from_hf(state: Mapping[str, Tensor], n_layers: int, *, tied: bool = True) -> dict[str, Tensor]:
    """A ``GPT2LMHeadModel`` (or ``GPT2Model``) state dict -> ``anyformer.text.gpt.gpt.GPT``'s.

    Args:
        state: HF names (with or without the ``transformer.`` prefix); buffers are ignored.
        n_layers: blocks to read.
        tied: the LM head is the token embedding; else ``lm_head.weight`` is read.

    Raises:
        MissingWeightsError: names the HF tensors that are absent.
    """
    prefix = "transformer." if any(k.startswith("transformer.") for k in state) else ""
    missing: list[str] = []
    out: dict[str, Tensor | None] = {
        "token_embedding.weight": _take(state, f"{prefix}wte.weight", missing),
        "decoder.positions.embedding.weight": _take(state, f"{prefix}wpe.weight", missing),
    }
    for i in range(n_layers):
        for theirs, (ours, conv) in GPT_LAYER.items():
            for param in PARAMS:
                value = _take(state, f"{prefix}h.{i}.{theirs}.{param}", missing)
                out[f"decoder.blocks.{i}.{ours}.{param}"] = (
                    value.T if conv and param == "weight" and value is not None else value
                )
    for param in PARAMS:
        out[f"decoder.final_norm.{param}"] = _take(state, f"{prefix}ln_f.{param}", missing)
    out["lm_head.weight"] = out["token_embedding.weight"] if tied else _take(state, "lm_head.weight", missing)
    if missing:
        raise MissingWeightsError(missing)
    return {k: v.contiguous() for k, v in out.items() if v is not None}


def gpt_state_to_hf(state: Mapping[str, Tensor], n_layers: int, *, tied: bool = True) -> dict[str, Tensor]:
    """``GPT``'s state dict -> ``GPT2LMHeadModel``'s (tied: no ``lm_head.weight``, HF ties it on load)."""
    out = {
        "transformer.wte.weight": state["token_embedding.weight"],
        "transformer.wpe.weight": state["decoder.positions.embedding.weight"],
    }
    for i in range(n_layers):
        for theirs, (ours, conv) in GPT_LAYER.items():
            for param in PARAMS:
                value = state[f"decoder.blocks.{i}.{ours}.{param}"]
                out[f"transformer.h.{i}.{theirs}.{param}"] = value.T if conv and param == "weight" else value
    for param in PARAMS:
        out[f"transformer.ln_f.{param}"] = state[f"decoder.final_norm.{param}"]
    if not tied:
        out["lm_head.weight"] = state["lm_head.weight"]
    return {
        k: v.detach().clone().contiguous() for k, v in out.items()
    }  # own storage: safetensors refuses shared tensors


def bert_state_from_hf(state: Mapping[str, Tensor], n_layers: int, *, pooler: bool = True) -> dict[str, Tensor]:
    """A ``BertModel`` state dict (or the ``bert.`` part of ``BertFor*``) -> ``BertModel``'s (ours).

    Args:
        state: HF names with or without the ``bert.`` prefix; ``gamma``/``beta`` are read as
            ``weight``/``bias``; heads and buffers are ignored.
        n_layers: blocks to read.
        pooler: read ``pooler.dense`` (``BertForMaskedLM`` saves none).

    Raises:
        MissingWeightsError: names the HF tensors that are absent.
    """
    state = _renamed_legacy(state)
    prefix = "bert." if any(k.startswith("bert.") for k in state) else ""
    missing: list[str] = []
    out: dict[str, Tensor | None] = {
        ours: _take(state, prefix + theirs, missing) for theirs, ours in BERT_EMBEDDINGS.items()
    }
    for i in range(n_layers):
        layer, block = f"{prefix}encoder.layer.{i}.", f"encoder.blocks.{i}."
        for param in PARAMS:
            qkv = [_take(state, f"{layer}attention.self.{name}.{param}", missing) for name in ("query", "key", "value")]
            out[f"{block}attn.qkv_proj.{param}"] = torch.cat(qkv) if all(t is not None for t in qkv) else None
            for theirs, ours in BERT_LAYER.items():
                out[f"{block}{ours}.{param}"] = _take(state, f"{layer}{theirs}.{param}", missing)
    if pooler:
        for param in PARAMS:
            out[f"pooler.{param}"] = _take(state, f"{prefix}pooler.dense.{param}", missing)
    if missing:
        raise MissingWeightsError(missing)
    return {k: v.contiguous() for k, v in out.items() if v is not None}


def bert_heads_from_hf(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The heads present in a HF ``BertFor*`` state dict (MLM transform and bias, NSP, classifier), our names."""
    state = _renamed_legacy(state)
    return {ours: state[theirs].contiguous() for theirs, ours in BERT_HEADS.items() if theirs in state}


def bert_state_to_hf(state: Mapping[str, Tensor], n_layers: int) -> dict[str, Tensor]:
    """Our ``BertModel`` state dict -> HF ``bert.*`` names (pooler included), plus any heads
    (``mlm_head.*``, ``nsp_head.*``, ``classifier.*``) given under their names in ``state``."""
    out = {"bert." + theirs: state[ours] for theirs, ours in BERT_EMBEDDINGS.items()}
    for i in range(n_layers):
        layer, block = f"bert.encoder.layer.{i}.", f"encoder.blocks.{i}."
        for param in PARAMS:
            query, key, value = state[f"{block}attn.qkv_proj.{param}"].chunk(3)
            for name, part in zip(("query", "key", "value"), (query, key, value)):
                out[f"{layer}attention.self.{name}.{param}"] = part
            for theirs, ours in BERT_LAYER.items():
                out[f"{layer}{theirs}.{param}"] = state[f"{block}{ours}.{param}"]
    for param in PARAMS:
        out[f"bert.pooler.dense.{param}"] = state[f"pooler.{param}"]
    for theirs, ours in BERT_HEADS.items():
        if ours in state:
            out[theirs] = state[ours]
    return {
        k: v.detach().clone().contiguous() for k, v in out.items()
    }  # own storage: safetensors refuses shared tensors
