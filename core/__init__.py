"""anyformer's shared transformer core: attention, positions, feed-forwards, blocks,
stacks, decoding and the training plumbing every task shares."""

from anyformer.core.attention import AttentionMaps, MultiHeadAttention
from anyformer.core.cache import DecoderCache, KVCache
from anyformer.core.config import TransformerConfig
from anyformer.core.masks import causal_mask, lengths_to_keep, merge_masks, padding_mask
from anyformer.core.stack import Decoder, Encoder, EncoderDecoder, TransformerStack

__all__ = [
    "AttentionMaps",
    "Decoder",
    "DecoderCache",
    "Encoder",
    "EncoderDecoder",
    "KVCache",
    "MultiHeadAttention",
    "TransformerConfig",
    "TransformerStack",
    "causal_mask",
    "lengths_to_keep",
    "merge_masks",
    "padding_mask",
]
