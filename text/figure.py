"""The text side of ``anyformer attention``: every head's attention in one layer over a sentence,
for ``gpt`` (causal), ``bert`` / ``bert-classify`` (bidirectional) and ``seq2seq`` (encoder,
decoder and cross-attention) checkpoints.

Each ``*_attention`` function runs the model's own ``forward_features(..., maps=...)`` and returns
exactly what its ``*_figure`` draws. Sequences are cut to their first :data:`MAX_TOKENS` tokens so
the labels stay readable; for GPT this changes nothing in the attention drawn, since no token
attends to a later one. Characters the tokenizer cannot encode are replaced (a warning is logged),
as ``anyformer classify`` does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from anyformer.core.attention import AttentionMaps
from anyformer.core.cli.attention import LayerAttention, figure_title, head_grid, head_grids, layer_index
from anyformer.core.cli.errors import UsageError
from anyformer.text.sentence_encoding import encode_sentence, sanitize_text
from anyformer.text.seq2seq.data import BOS_TOKEN, EOS_TOKEN, encode_source, encode_target
from anyformer.text.seq2seq.seq2seq import default_max_new_tokens, translate_ids

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from anyformer.core.train.base import TaskModule

logger = logging.getLogger(__name__)

MAX_TOKENS = 48
"""Longest sequence drawn; longer texts are cut from the right."""
DEFAULT_TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer"
"""The sentence drawn when no INPUT is given."""
DEFAULT_SOURCE = "the value of the attribute is returned"
"""The source sentence a ``seq2seq`` figure translates when no INPUT is given (a line of the demo data)."""
TARGET_SEPARATOR = "|||"
"""Splits a ``seq2seq`` INPUT into source and target: ``"the value ||| le valeur"``."""


def display_token(token: str) -> str:
    """A decoded token as a tick label: spaces as ``·``, newlines and tabs as ``\\n`` and ``\\t``."""
    return token.replace(" ", "\u00b7").replace("\n", "\\n").replace("\t", "\\t") or "''"


def _tokenizer(module: TaskModule, name: str = "tokenizer") -> Any:
    tokenizer = getattr(module, name)
    if tokenizer is None:
        raise UsageError(
            f"the {module.task_name} checkpoint holds no tokenizer; was it written by `anyformer ... fit`?"
        )
    return tokenizer


def _sanitized(tokenizer: Any, text: str) -> str:
    text, n_replaced = sanitize_text(tokenizer, text)
    if n_replaced:
        logger.warning("%d character(s) the tokenizer cannot encode were replaced", n_replaced)
    return text


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
    ids = tokenizer.encode(_sanitized(tokenizer, _check_text(text)))[: min(MAX_TOKENS, model.max_seq_len)]
    if not ids:
        raise UsageError("INPUT encodes to no token the checkpoint's tokenizer knows")
    maps = AttentionMaps()
    model.eval()
    model.forward_features(torch.tensor([ids]), maps=maps)  # the LM head is not needed
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
    tokenizer, model = _tokenizer(module), module.model
    index = layer_index(model.cfg.transformer.n_layers, layer)
    max_len = min(MAX_TOKENS, model.cfg.transformer.max_seq_len)
    ids, _, n_replaced = encode_sentence(tokenizer, _check_text(text), max_len)
    if n_replaced:
        logger.warning("%d character(s) the tokenizer cannot encode were replaced", n_replaced)
    ids_t = torch.tensor([ids])  # (1, T)
    maps = AttentionMaps()
    model.eval()
    # One segment, no padding: every token may attend to every token.
    model.forward_features(ids_t, torch.zeros_like(ids_t), torch.ones_like(ids_t, dtype=torch.bool), maps=maps)
    tokens = [tokenizer.decode([token_id]) for token_id in ids]
    return LayerAttention(maps.self_attn[index][0].float(), tokens, index, len(maps.self_attn))


@dataclass
class Seq2SeqAttention:
    """One layer of each attention of a translation model, over one source and one target."""

    encoder: LayerAttention
    """(H, S, S) bidirectional self-attention over the source tokens (EOS last)."""
    decoder: LayerAttention
    """(H, T, T) causal self-attention over the decoder inputs, BOS + target."""
    cross: LayerAttention
    """(H, T, S): each decoder input attending to the source tokens (``key_labels``)."""
    target_ids: list[int]
    """The target, without BOS and EOS: the greedy translation, or the given target encoded."""
    translated: bool
    """Whether the target is the model's greedy translation (else it was given)."""


@torch.no_grad()
def seq2seq_attention(
    module: TaskModule, source: str, target: str | None = None, layer: int | None = None
) -> Seq2SeqAttention:
    """Every head's attention in one layer of each stack of a translation model.

    The decoder reads BOS + target, teacher-forced, as in training: row t of its maps is the
    step that predicts target token t + 1 (EOS after the last).

    Args:
        module: a ``seq2seq`` module.
        source: the source sentence; its first ``min(MAX_TOKENS, max_source_len) - 1`` tokens, then EOS.
        target: the target sentence (None: the greedy translation of the source), cut so that
            BOS + target has at most ``min(MAX_TOKENS, max_target_len)`` tokens.
        layer: 1-based layer of both stacks (None: the last of each).

    Returns:
        The three layers' probabilities with their tokens.
    """
    src, tgt, model = _tokenizer(module, "src_tokenizer"), _tokenizer(module, "tgt_tokenizer"), module.model
    n_encoder, n_decoder = model.cfg.encoder.n_layers, model.cfg.decoder.n_layers
    encoder_index, decoder_index = layer_index(n_encoder, layer), layer_index(n_decoder, layer)
    [source_ids], _ = encode_source(src, [_sanitized(src, _check_text(source))], min(MAX_TOKENS, model.max_source_len))
    source_t = torch.tensor([source_ids])  # (1, S)
    source_keep = torch.ones_like(source_t, dtype=torch.bool)
    bos_id, max_target = tgt.token_id(BOS_TOKEN), min(MAX_TOKENS, model.max_target_len)
    model.eval()
    if target is None:  # the greedy translation of ``anyformer translate``, within MAX_TOKENS
        [target_ids] = translate_ids(
            model, source_t, source_keep, bos_id=bos_id, eos_id=tgt.token_id(EOS_TOKEN), strategy="greedy",
            max_new_tokens=min(max_target - 1, default_max_new_tokens(source_keep, model.max_target_len)),
        )  # fmt: skip
    else:
        [target_ids], _ = encode_target(tgt, [_sanitized(tgt, target)], max_target)
    decoder_in = [bos_id, *target_ids][:max_target]  # (T,)
    maps = AttentionMaps()  # self_attn: the encoder's layers, then the decoder's
    model.forward_features(source_t, torch.tensor([decoder_in]), source_keep=source_keep, maps=maps)
    source_tokens = [src.decode([token_id]) for token_id in source_ids]
    target_tokens = [tgt.decode([token_id]) for token_id in decoder_in]
    decoder_maps = maps.self_attn[n_encoder:]
    return Seq2SeqAttention(
        encoder=LayerAttention(maps.self_attn[encoder_index][0].float(), source_tokens, encoder_index, n_encoder),
        decoder=LayerAttention(decoder_maps[decoder_index][0].float(), target_tokens, decoder_index, n_decoder),
        cross=LayerAttention(
            maps.cross_attn[decoder_index][0].float(), target_tokens, decoder_index, n_decoder, source_tokens
        ),
        target_ids=target_ids[: len(decoder_in) - 1],
        translated=target is None,
    )


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


def split_source_target(text: str) -> tuple[str, str | None]:
    """``"source ||| target"`` -> (source, target); a text without the separator is a source alone."""
    source, separator, target = text.partition(TARGET_SEPARATOR)
    if not separator:
        return text, None
    if not target.strip():
        raise UsageError(f"INPUT has nothing after {TARGET_SEPARATOR!r}; give 'source {TARGET_SEPARATOR} target'")
    return source.strip(), target.strip()


def seq2seq_figure(module: TaskModule, source: str | None, layer: int | None) -> Figure:
    """``anyformer attention`` for a ``seq2seq`` checkpoint; ``source`` is a source sentence, or
    ``"source ||| target"``."""
    text, target = split_source_target(DEFAULT_SOURCE if source is None else source)
    attention = seq2seq_attention(module, text, target, layer)
    enc, dec, cross = attention.encoder, attention.decoder, attention.cross
    for part in (enc, dec, cross):
        part.labels = [display_token(token) for token in part.labels]
    cross.key_labels = enc.labels
    n_source, n_target = len(enc.labels), len(dec.labels)
    layers = f"encoder layer {enc.layer + 1} of {enc.n_layers}, decoder layer {dec.layer + 1} of {dec.n_layers}"
    kind = "greedy translation" if attention.translated else "given target"
    what = (
        f"attention of each head (rows attend to columns): {n_source} source tokens, {n_target} decoder "
        f"inputs (BOS + {kind}: {module.detokenize(attention.target_ids)!r})"
    )
    panels = [
        ("encoder self-attention over the source (bidirectional)", enc),
        ("decoder self-attention over BOS + target (causal)", dec),
        ("cross-attention from the decoder inputs (rows) to the source (columns)", cross),
    ]
    return head_grids(panels, figure_title(module.task_name, layers, what))
