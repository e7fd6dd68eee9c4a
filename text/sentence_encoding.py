"""One sentence -> ``[CLS] text [SEP]`` ids: how sentence classification, ``anyformer classify`` and
``anyformer attention`` encode a text, so a tool sees a sentence exactly as training did."""

from __future__ import annotations

from anyformer.text.tokenizer import Tokenizer


def sanitize_text(tokenizer: Tokenizer, text: str) -> tuple[str, int]:
    """``text`` with the characters ``tokenizer`` cannot encode replaced by U+FFFD (or dropped
    when U+FFFD itself cannot be encoded), and how many were replaced."""
    try:
        tokenizer.encode(text)
        return text, 0
    except ValueError:
        pass
    bad = set()
    for char in set(text):
        try:
            tokenizer.encode(char)
        except ValueError:
            bad.add(char)
    try:
        tokenizer.encode("\ufffd")
        replacement = "\ufffd"
    except ValueError:
        replacement = ""
    return "".join(replacement if char in bad else char for char in text), sum(char in bad for char in text)


def encode_sentence(tokenizer: Tokenizer, text: str, max_seq_len: int) -> tuple[list[int], int, int]:
    """``[CLS] text [SEP]`` ids, cropped from the right to ``max_seq_len``.

    Returns:
        ``(ids, n_cropped, n_replaced)``: the ids, how many text tokens were cut off the end,
        and how many characters the tokenizer could not encode (see :func:`sanitize_text`).
    """
    text, n_replaced = sanitize_text(tokenizer, text)
    body = tokenizer.encode(text)
    keep = max_seq_len - 2
    return [tokenizer.cls_id, *body[:keep], tokenizer.sep_id], max(0, len(body) - keep), n_replaced
