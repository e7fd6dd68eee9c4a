"""Round trips, special tokens, serialisation and atomic saving of the text tokenizers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import anyformer.core.train.atomic
from anyformer.text.corpus import load_corpus
from anyformer.text.tokenizer import (
    DEFAULT_SPECIALS,
    TOKENIZERS,
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    build_tokenizer,
    load_tokenizer,
    tokenizer_from_state,
)

BPE_VOCAB = 300


@pytest.fixture(scope="module")
def corpus() -> str:
    return load_corpus("pydoc")[:100_000]


@pytest.fixture(scope="module")
def bpe(corpus: str) -> BPETokenizer:
    return BPETokenizer.train([corpus], vocab_size=BPE_VOCAB)


@pytest.fixture(scope="module")
def char(corpus: str) -> CharTokenizer:
    return CharTokenizer.train([corpus])


@pytest.fixture(params=sorted(TOKENIZERS))
def any_tokenizer(request: pytest.FixtureRequest) -> Tokenizer:
    return request.getfixturevalue(request.param)


@given(st.text())
def test_bpe_round_trips_any_unicode(bpe: BPETokenizer, text: str) -> None:
    assert bpe.decode(bpe.encode(text)) == text


@given(st.lists(st.one_of(st.sampled_from(DEFAULT_SPECIALS), st.text(max_size=5))).map("".join))
def test_bpe_encodes_special_token_strings_as_plain_text(bpe: BPETokenizer, text: str) -> None:
    ids = bpe.encode(text)
    assert bpe.decode(ids) == text
    assert not set(ids) & {bpe.token_id(token) for token in DEFAULT_SPECIALS}


def test_bpe_vocab_has_requested_size_and_compresses(bpe: BPETokenizer, corpus: str) -> None:
    ids = bpe.encode(corpus)
    assert bpe.vocab_size == BPE_VOCAB
    assert max(ids) < BPE_VOCAB
    # Learned merges must beat one token per UTF-8 byte on the text they were learned from.
    assert len(ids) < 0.75 * len(corpus.encode("utf-8"))


def test_bpe_encode_batch_equals_encode(bpe: BPETokenizer) -> None:
    texts = ["def f(x):\n    return x", "", "héllo [PAD] wörld", "<|endoftext|>"]
    assert bpe.encode_batch(texts) == [bpe.encode(text) for text in texts]


def test_bpe_rejects_vocab_without_room_for_bytes_and_specials(corpus: str) -> None:
    with pytest.raises(ValueError, match=r"at least 262 \(256 bytes \+ 6 special tokens\)"):
        BPETokenizer.train([corpus], vocab_size=261)


def test_special_ids_come_first_for_bpe_and_last_for_char(bpe: BPETokenizer, char: CharTokenizer) -> None:
    bpe_ids = [bpe.eos_id, bpe.pad_id, bpe.cls_id, bpe.sep_id, bpe.mask_id, bpe.unk_id]
    assert bpe_ids == list(range(6))
    char_ids = [char.eos_id, char.pad_id, char.cls_id, char.sep_id, char.mask_id, char.unk_id]
    assert char_ids == list(range(char.vocab_size - 6, char.vocab_size))


def test_special_ids_decode_to_their_token(any_tokenizer: Tokenizer) -> None:
    for token in DEFAULT_SPECIALS:
        assert any_tokenizer.decode([any_tokenizer.token_id(token)]) == token


def test_token_id_of_unknown_token_raises(any_tokenizer: Tokenizer) -> None:
    with pytest.raises(KeyError, match="not-a-token"):
        any_tokenizer.token_id("not-a-token")


def test_tokenizers_satisfy_the_protocol(any_tokenizer: Tokenizer) -> None:
    assert isinstance(any_tokenizer, Tokenizer)
    assert TOKENIZERS[any_tokenizer.kind] is type(any_tokenizer)


@given(st.data())
def test_char_round_trips_text_over_its_alphabet(char: CharTokenizer, data: st.DataObject) -> None:
    alphabet = char.decode(range(char.vocab_size - len(DEFAULT_SPECIALS)))
    text = data.draw(st.text(alphabet=alphabet))
    assert char.decode(char.encode(text)) == text


def test_char_ids_are_sorted_characters_then_specials() -> None:
    tokenizer = CharTokenizer.train(["hello", "ol"])
    assert tokenizer.encode("ehlo") == [0, 1, 2, 3]
    assert tokenizer.vocab_size == 4 + len(DEFAULT_SPECIALS)
    assert tokenizer.eos_id == 4


def test_char_encodes_special_token_strings_as_characters() -> None:
    tokenizer = CharTokenizer.train(["[PAD]"])
    assert tokenizer.encode("[PAD]") == [3, 2, 0, 1, 4]  # alphabet "ADP[]"


def test_char_unknown_character_raises_naming_it_and_its_position() -> None:
    tokenizer = CharTokenizer.train(["abc"])
    with pytest.raises(ValueError, match=r"character 'é' \(U\+00E9\) at position 2"):
        tokenizer.encode("abé")


def test_char_maps_unknown_characters_to_unk_when_asked() -> None:
    tokenizer = CharTokenizer.train(["abc"], map_unknown_to_unk=True)
    assert tokenizer.encode("aéb") == [0, tokenizer.unk_id, 1]


def test_char_map_unknown_to_unk_needs_the_unk_token() -> None:
    with pytest.raises(ValueError, match=r"needs '\[UNK\]'"):
        CharTokenizer("abc", special_tokens=("[PAD]",), map_unknown_to_unk=True)


def test_char_rejects_special_token_equal_to_a_character() -> None:
    with pytest.raises(ValueError, match="must all be distinct"):
        CharTokenizer("ab", special_tokens=("a",))


def test_char_decode_rejects_ids_outside_vocabulary(char: CharTokenizer) -> None:
    with pytest.raises(ValueError, match="outside the vocabulary"):
        char.decode([0, char.vocab_size])


def test_state_round_trip_through_json_keeps_ids(any_tokenizer: Tokenizer, corpus: str) -> None:
    state = json.loads(json.dumps(any_tokenizer.to_state()))
    rebuilt = tokenizer_from_state(state)
    assert type(rebuilt) is type(any_tokenizer)
    assert rebuilt.vocab_size == any_tokenizer.vocab_size
    assert rebuilt.encode(corpus) == any_tokenizer.encode(corpus)
    assert rebuilt.to_state() == any_tokenizer.to_state()


def test_save_load_round_trip_keeps_ids(any_tokenizer: Tokenizer, corpus: str, tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    any_tokenizer.save(path)
    for loaded in (type(any_tokenizer).load(path), load_tokenizer(path)):
        assert loaded.encode(corpus) == any_tokenizer.encode(corpus)
        assert loaded.pad_id == any_tokenizer.pad_id


def test_load_rejects_a_file_of_another_kind(bpe: BPETokenizer, tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    bpe.save(path)
    with pytest.raises(TypeError, match="holds a 'bpe' tokenizer, not a CharTokenizer"):
        CharTokenizer.load(path)


def test_saved_tokenizer_is_readable_by_others_like_any_new_file(char: CharTokenizer, tmp_path: Path) -> None:
    """Not the 0600 of a bare mkstemp: a tokenizer shared with a colleague must stay readable."""
    (tmp_path / "reference.json").write_text("{}")
    char.save(tmp_path / "tokenizer.json")
    assert (tmp_path / "tokenizer.json").stat().st_mode == (tmp_path / "reference.json").stat().st_mode


def test_failed_save_leaves_the_previous_file_untouched(
    bpe: BPETokenizer, char: CharTokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tokenizer.json"
    char.save(path)
    before = path.read_bytes()

    def crash(fd: int) -> None:  # the new content is half on its way to disk
        raise OSError("disk full")

    monkeypatch.setattr(anyformer.core.train.atomic.os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        bpe.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["tokenizer.json"]  # no temporary file left behind


def test_build_tokenizer_dispatches_on_kind(corpus: str) -> None:
    assert isinstance(build_tokenizer("char", [corpus], vocab_size=0), CharTokenizer)
    assert build_tokenizer("bpe", [corpus], vocab_size=270).vocab_size == 270


def test_unknown_kind_error_lists_the_allowed_kinds(corpus: str) -> None:
    with pytest.raises(ValueError, match=r"'wordpiece'; allowed: \['bpe', 'char'\]"):
        build_tokenizer("wordpiece", [corpus], vocab_size=300)
    with pytest.raises(ValueError, match=r"allowed: \['bpe', 'char'\]"):
        tokenizer_from_state({"kind": "wordpiece"})


def test_bpe_rejects_lone_surrogates_with_a_clear_error(bpe: BPETokenizer) -> None:
    with pytest.raises(ValueError, match=r"text 1 has a lone surrogate '\\ud800' at position 2"):
        bpe.encode_batch(["fine", "ab\ud800"])
