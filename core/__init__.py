"""anyformer's shared transformer core: attention, positions, feed-forwards, blocks,
stacks, decoding and the training plumbing every task shares."""

from core.attention import AttentionMaps, MultiHeadAttention
from core.cache import DecoderCache, KVCache
from core.config import TransformerConfig
from core.masks import causal_mask, lengths_to_keep, merge_masks, padding_mask
from core.stack import Decoder, Encoder, EncoderDecoder, TransformerStack

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
