"""Text tokenizers: strings to integer ids and back.

Two kinds share one interface (:class:`Tokenizer`):

- ``bpe``: byte-level BPE (GPT-2 style) built with HF ``tokenizers``. Every byte is in the
  vocabulary, so any Unicode string round-trips.
- ``char``: one id per character of the training corpus (nanoGPT's ``shakespeare_char``).

Both append the same special tokens (:data:`DEFAULT_SPECIALS`). Special tokens are only ever
produced by code (``tokenizer.eos_id``), never recognised in input text: encoding the string
``"[PAD]"`` gives the ids of its characters, so plain text always round-trips.

A tokenizer serialises to a JSON-friendly dict (:meth:`Tokenizer.to_state`) that records its
kind; :func:`tokenizer_from_state` rebuilds it, e.g. from a Lightning checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from anyformer.core.train.atomic import atomic_write_text

logger = logging.getLogger(__name__)

EOS = "<|endoftext|>"
PAD = "[PAD]"
CLS = "[CLS]"
SEP = "[SEP]"
MASK = "[MASK]"
UNK = "[UNK]"
DEFAULT_SPECIALS: tuple[str, ...] = (EOS, PAD, CLS, SEP, MASK, UNK)
"""Special tokens every tokenizer gets unless told otherwise."""

_N_BYTES = 256

_T = TypeVar("_T", bound="Tokenizer")


@runtime_checkable
class Tokenizer(Protocol):
    """Interface of every text tokenizer.

    Concrete tokenizers subclass this protocol explicitly to inherit the shared methods
    (special-token ids, ``encode_batch``, ``save`` / ``load``); they implement the rest.
    """

    kind: ClassVar[str]
    """Registry name, stored in :meth:`to_state` so the right class can be rebuilt."""

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included; ids are ``0 .. vocab_size - 1``."""
        ...

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special tokens in the text are encoded as plain text."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; special-token ids decode to the special token's string."""
        ...

    def token_id(self, token: str) -> int:
        """Id of one vocabulary entry, e.g. a special token such as ``"[PAD]"``.

        Raises:
            KeyError: ``token`` is not in the vocabulary.
        """
        ...

    def to_state(self) -> dict[str, Any]:
        """JSON-serialisable description, including ``"kind"``; see :func:`tokenizer_from_state`."""
        ...

    @classmethod
    def from_state(cls: type[_T], state: Mapping[str, Any]) -> _T:
        """Rebuild a tokenizer of this class from :meth:`to_state` output."""
        ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text in ``texts``."""
        return [self.encode(text) for text in texts]

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_state` as JSON; atomic, so a failure or a crash never leaves a half-written file.

        Raises:
            ValueError: The vocabulary holds a lone surrogate, which has no UTF-8 encoding; ``path``
                is left as it was.
        """
        text = json.dumps(self.to_state(), ensure_ascii=False)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(
                f"cannot save the tokenizer to {path}: its vocabulary holds the lone surrogate "
                f"{text[err.start]!r}, which has no UTF-8 encoding (train it on valid Unicode text)"
            ) from None
        atomic_write_text(path, text)

    @classmethod
    def load(cls: type[_T], path: str | os.PathLike[str]) -> _T:
        """Read a tokenizer written by :meth:`save`.

        Raises:
            TokenizerKindError: The file holds another kind of tokenizer than ``cls`` (a
                ``TypeError`` and a ``ValueError``).
        """
        tokenizer = load_tokenizer(path)
        if not isinstance(tokenizer, cls):
            raise TokenizerKindError(
                f"tokenizer file {path} holds a {tokenizer.kind!r} tokenizer, not a {cls.__name__}; expected "
                f"a file written by {cls.__name__}.save"
            )
        return tokenizer

    @property
    def eos_id(self) -> int:
        """Id of ``<|endoftext|>``, the document separator of causal LMs."""
        return self.token_id(EOS)

    @property
    def pad_id(self) -> int:
        """Id of ``[PAD]``."""
        return self.token_id(PAD)

    @property
    def cls_id(self) -> int:
        """Id of ``[CLS]``."""
        return self.token_id(CLS)

    @property
    def sep_id(self) -> int:
        """Id of ``[SEP]``."""
        return self.token_id(SEP)

    @property
    def mask_id(self) -> int:
        """Id of ``[MASK]``."""
        return self.token_id(MASK)

    @property
    def unk_id(self) -> int:
        """Id of ``[UNK]``."""
        return self.token_id(UNK)


class BPETokenizer(Tokenizer):
    """Byte-level BPE: bytes are the base alphabet, merges are learned from a corpus.

    Ids ``0 .. len(special_tokens) - 1`` are the special tokens, then the 256 byte tokens,
    then the learned merges.

    Args:
        tokenizer: A byte-level HF tokenizer, as built by :meth:`train`.
    """

    kind: ClassVar[str] = "bpe"

    def __init__(self, tokenizer: HFTokenizer) -> None:
        self._tokenizer = tokenizer
        # Why: by default HF turns "<|endoftext|>" in the input text into the special id, so a
        # corpus could inject document boundaries or masks; like CharTokenizer, treat it as text.
        # HF does not serialise this flag, so it is set on every construction.
        self._tokenizer.encode_special_tokens = True

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        special_tokens: Sequence[str] = DEFAULT_SPECIALS,
    ) -> BPETokenizer:
        """Learn BPE merges from ``texts``.

        Args:
            texts: Training text, in one or more pieces.
            vocab_size: Target vocabulary size, special tokens and the 256 bytes included. A small
                corpus may yield fewer ids; :attr:`vocab_size` reports the real number.
            special_tokens: Tokens that get the first ids.

        Raises:
            ValueError: ``vocab_size`` cannot hold the bytes and the special tokens.
        """
        minimum = _N_BYTES + len(special_tokens)
        if vocab_size < minimum:
            raise ValueError(
                f"BPE vocab_size={vocab_size} is too small: it must be at least {minimum} "
                f"({_N_BYTES} bytes + {len(special_tokens)} special tokens)"
            )
        tokenizer = HFTokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(special_tokens),
            # Every byte gets an id even if the corpus lacks it, so unseen text still encodes.
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator(texts, trainer)
        logger.info("trained byte-level BPE with %d tokens", tokenizer.get_vocab_size())
        return cls(tokenizer)

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        texts = list(texts)
        try:
            # HF encodes a batch in parallel in Rust.
            encodings = self._tokenizer.encode_batch(texts, add_special_tokens=False)
        except TypeError:
            _raise_on_lone_surrogates(texts)
            raise
        return [encoding.ids for encoding in encodings]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=False)

    def token_id(self, token: str) -> int:
        token_id = self._tokenizer.token_to_id(token)
        if token_id is None:
            raise KeyError(f"token {token!r} is not in the BPE vocabulary")
        return token_id

    def to_state(self) -> dict[str, Any]:
        return {"kind": self.kind, "tokenizer": json.loads(self._tokenizer.to_str())}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> BPETokenizer:
        return cls(HFTokenizer.from_str(json.dumps(state["tokenizer"])))


def _raise_on_lone_surrogates(texts: Sequence[str]) -> None:
    """Explain HF's bare "TextInputSequence must be str" for strings UTF-8 cannot represent."""
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            continue  # HF's TypeError already says what is wrong
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(
                f"text {index} has a lone surrogate {text[err.start]!r} at position {err.start}: "
                "it is not a Unicode character and has no UTF-8 bytes for byte-level BPE"
            ) from None


class CharTokenizer(Tokenizer):
    """One id per character: the sorted characters of the corpus, then the special tokens.

    With the default specials, character ids equal nanoGPT's ``shakespeare_char`` ids.

    Args:
        chars: The alphabet, one id per character in this order.
        special_tokens: Tokens appended after the alphabet.
        map_unknown_to_unk: Encode characters outside the alphabet as ``[UNK]`` instead of
            raising; ``[UNK]`` must then be among ``special_tokens``.

    Raises:
        ValueError: Repeated characters, or a special token that is also a character, or
            ``map_unknown_to_unk`` without ``[UNK]``.
    """

    kind: ClassVar[str] = "char"

    def __init__(
        self,
        chars: str,
        special_tokens: Sequence[str] = DEFAULT_SPECIALS,
        map_unknown_to_unk: bool = False,
    ) -> None:
        self._tokens = [*chars, *special_tokens]
        self._ids = {token: i for i, token in enumerate(self._tokens)}
        if len(self._ids) != len(self._tokens):
            raise ValueError(
                "CharTokenizer: characters and special tokens must all be distinct, got "
                f"chars={chars!r} special_tokens={list(special_tokens)!r}"
            )
        if map_unknown_to_unk and UNK not in special_tokens:
            raise ValueError(f"CharTokenizer: map_unknown_to_unk=True needs {UNK!r} in special_tokens")
        self._chars = chars
        self._special_tokens = tuple(special_tokens)
        self._map_unknown_to_unk = map_unknown_to_unk

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int | None = None,
        special_tokens: Sequence[str] = DEFAULT_SPECIALS,
        map_unknown_to_unk: bool = False,
    ) -> CharTokenizer:
        """Collect the alphabet of ``texts``.

        Args:
            texts: Training text, in one or more pieces.
            vocab_size: Ignored (the alphabet decides the size); accepted so that every
                tokenizer kind trains through the same call, see :func:`build_tokenizer`.
            special_tokens: Tokens appended after the alphabet.
            map_unknown_to_unk: See the class docstring.
        """
        alphabet: set[str] = set()
        for text in texts:
            alphabet.update(text)
        tokenizer = cls("".join(sorted(alphabet)), special_tokens, map_unknown_to_unk)
        logger.info("built character vocabulary of %d tokens", tokenizer.vocab_size)
        return tokenizer

    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    def encode(self, text: str) -> list[int]:
        if self._map_unknown_to_unk:
            unk_id = self.unk_id
            return [self._ids.get(char, unk_id) for char in text]
        try:
            return [self._ids[char] for char in text]
        except KeyError:
            position, char = next((i, c) for i, c in enumerate(text) if c not in self._ids)
            raise ValueError(
                f"character {char!r} (U+{ord(char):04X}) at position {position} is not in the "
                "CharTokenizer alphabet; build the tokenizer with map_unknown_to_unk=True to "
                f"encode unknown characters as {UNK}"
            ) from None

    def decode(self, ids: Sequence[int]) -> str:
        bad = [i for i in ids if not 0 <= i < len(self._tokens)]
        if bad:
            raise ValueError(f"ids {bad[:5]} are outside the vocabulary 0..{len(self._tokens) - 1}")
        return "".join(self._tokens[i] for i in ids)

    def token_id(self, token: str) -> int:
        try:
            return self._ids[token]
        except KeyError:
            raise KeyError(f"token {token!r} is not in the character vocabulary") from None

    def to_state(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "chars": self._chars,
            "special_tokens": list(self._special_tokens),
            "map_unknown_to_unk": self._map_unknown_to_unk,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> CharTokenizer:
        return cls(state["chars"], state["special_tokens"], state["map_unknown_to_unk"])


TOKENIZERS: dict[str, type[BPETokenizer] | type[CharTokenizer]] = {
    BPETokenizer.kind: BPETokenizer,
    CharTokenizer.kind: CharTokenizer,
}
"""Tokenizer classes by kind, the strings used in configs and in :meth:`Tokenizer.to_state`."""


def _tokenizer_class(kind: str) -> type[BPETokenizer] | type[CharTokenizer]:
    try:
        return TOKENIZERS[kind]
    except KeyError:
        raise ValueError(f"unknown tokenizer kind {kind!r}; allowed: {sorted(TOKENIZERS)}") from None


def build_tokenizer(kind: str, texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train a tokenizer of the given kind with the default special tokens.

    Args:
        kind: A key of :data:`TOKENIZERS`.
        texts: Training text.
        vocab_size: Target vocabulary size (ignored by ``char``, whose alphabet decides).

    Raises:
        ValueError: Unknown ``kind``.
    """
    return _tokenizer_class(kind).train(texts, vocab_size)


class TokenizerKindError(TypeError, ValueError):
    """A tokenizer file of another kind than the one asked for. A ``TypeError`` as before, and a
    ``ValueError`` like every other bad tokenizer file, so commands report it as a usage error."""


def tokenizer_from_state(state: Mapping[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer of any kind from :meth:`Tokenizer.to_state` output.

    Raises:
        ValueError: ``state`` names no known kind.
    """
    return _tokenizer_class(state.get("kind", "<missing>")).from_state(state)


def load_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    """Read a tokenizer of any kind written by :meth:`Tokenizer.save`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is not a tokenizer file written by :meth:`Tokenizer.save`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file {path} does not exist (expected JSON written by Tokenizer.save)")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"tokenizer file {path} is not UTF-8 JSON written by Tokenizer.save ({err})") from None
    if not isinstance(state, dict):
        raise ValueError(f"tokenizer file {path} holds a JSON {type(state).__name__}, not a tokenizer state object")
    if "kind" not in state:
        raise ValueError(
            f"tokenizer file {path} has no 'kind' key; expected JSON written by anyformer's Tokenizer.save (kind "
            f"one of {sorted(TOKENIZERS)}), not another library's tokenizer file"
        )
    try:
        return tokenizer_from_state(state)
    except Exception as err:  # a missing field (KeyError), an unknown kind (ValueError), HF's bare Exception
        raise ValueError(
            f"tokenizer file {path} is not a valid tokenizer state ({type(err).__name__}: {err})"
        ) from None
