"""The text side of ``anyformer attention``: every head's attention in one layer over a sentence,
for ``gpt`` (causal) and ``bert`` / ``bert-classify`` (bidirectional) checkpoints.

The sentence is cut to its first :data:`MAX_TOKENS` tokens so the labels stay readable; for GPT
this changes nothing in the attention drawn, since no token attends to a later one. Characters
the tokenizer cannot encode are replaced (a warning is logged), as ``anyformer classify`` does.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch

from anyformer.core.attention import AttentionMaps
from anyformer.core.cli.attention import LayerAttention, figure_title, head_grid, layer_index
from anyformer.core.cli.errors import UsageError
from anyformer.text.bert.data import encode_sentence, sanitize_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from anyformer.core.train.base import TaskModule

logger = logging.getLogger(__name__)

MAX_TOKENS = 48
"""Longest sequence drawn; longer texts are cut from the right."""
DEFAULT_TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer"
"""The sentence drawn when no INPUT is given."""


def display_token(token: str) -> str:
    """A decoded token as a tick label: spaces as ``·``, newlines and tabs as ``\\n`` and ``\\t``."""
    return token.replace(" ", "\u00b7").replace("\n", "\\n").replace("\t", "\\t") or "''"


def _tokenizer(module: TaskModule) -> Any:
    if module.tokenizer is None:
        raise UsageError(
            f"the {module.task_name} checkpoint holds no tokenizer; was it written by `anyformer ... fit`?"
        )
    return module.tokenizer


def _check_text(text: str) -> str:
    if not text.strip():
        raise UsageError("INPUT is an empty sentence; give some text (or leave INPUT out for a built-in sentence)")
    return text


@torch.no_grad()
def gpt_attention(module: TaskModule, text: str, layer: int | None = None) -> LayerAttention:
    """Every head's causal attention in one layer of a GPT over ``text``.

    Args:
        module: a ``gpt`` module (e.g. from ``anyformer.core.train.checkpoint.load_task``).
        text: the sentence; its first ``min(MAX_TOKENS, max_seq_len)`` tokens are used.
        layer: 1-based layer (None: the last).

    Returns:
        (H, T, T) probabilities, zero above the diagonal, and the decoded tokens.
    """
    tokenizer, model = _tokenizer(module), module.model
    index = layer_index(model.cfg.transformer.n_layers, layer)
    text, n_replaced = sanitize_text(tokenizer, _check_text(text))
    if n_replaced:
        logger.warning("%d character(s) the tokenizer cannot encode were replaced", n_replaced)
    ids = tokenizer.encode(text)[: min(MAX_TOKENS, model.max_seq_len)]
    if not ids:
        raise UsageError("INPUT encodes to no token the checkpoint's tokenizer knows")
    maps = AttentionMaps()
    model.eval()
    model.decoder(model.token_embedding(torch.tensor([ids])), maps=maps)  # the LM head is not needed
    tokens = [tokenizer.decode([token_id]) for token_id in ids]
    return LayerAttention(maps.self_attn[index][0].float(), tokens, index, len(maps.self_attn))


@torch.no_grad()
def bert_attention(module: TaskModule, text: str, layer: int | None = None) -> LayerAttention:
    """Every head's (bidirectional) attention in one layer of a BERT over ``[CLS] text [SEP]``.

    Args:
        module: a ``bert`` or ``bert-classify`` module.
        text: the sentence, cut so that ``[CLS] text [SEP]`` has at most ``MAX_TOKENS`` tokens.
        layer: 1-based layer (None: the last).

    Returns:
        (H, T, T) probabilities and the decoded tokens, ``[CLS]`` first and ``[SEP]`` last.
    """
    tokenizer, bert = _tokenizer(module), module.model.bert
    index = layer_index(bert.cfg.transformer.n_layers, layer)
    max_len = min(MAX_TOKENS, bert.cfg.transformer.max_seq_len)
    ids, _, n_replaced = encode_sentence(tokenizer, _check_text(text), max_len)
    if n_replaced:
        logger.warning("%d character(s) the tokenizer cannot encode were replaced", n_replaced)
    ids_t = torch.tensor([ids])  # (1, T)
    maps = AttentionMaps()
    module.eval()
    # BertModel.forward's embedding, one segment and no padding: every token may attend to every token.
    bert.encoder(bert.token_embedding(ids_t) + bert.segment_embedding(torch.zeros_like(ids_t)), maps=maps)
    tokens = [tokenizer.decode([token_id]) for token_id in ids]
    return LayerAttention(maps.self_attn[index][0].float(), tokens, index, len(maps.self_attn))


def _figure(module: TaskModule, attention: LayerAttention, kind: str) -> Figure:
    what = f"{kind} self-attention of each head over {len(attention.labels)} tokens (rows attend to columns)"
    layers = f"layer {attention.layer + 1} of {attention.n_layers}"
    attention.labels = [display_token(token) for token in attention.labels]
    return head_grid(attention, figure_title(module.task_name, layers, what))


def gpt_figure(module: TaskModule, source: str | None, layer: int | None) -> Figure:
    """``anyformer attention`` for a ``gpt`` checkpoint; ``source`` is the sentence."""
    return _figure(module, gpt_attention(module, DEFAULT_TEXT if source is None else source, layer), "causal")


def bert_figure(module: TaskModule, source: str | None, layer: int | None) -> Figure:
    """``anyformer attention`` for a ``bert`` or ``bert-classify`` checkpoint; ``source`` is the sentence."""
    return _figure(module, bert_attention(module, DEFAULT_TEXT if source is None else source, layer), "bidirectional")
