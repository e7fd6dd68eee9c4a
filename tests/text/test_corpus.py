"""Corpus sources and their error messages."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from anyformer.core.data import ChecksumMismatchError, DataUnavailableError
from anyformer.core.data.locations import ENV_CACHE, ENV_DATA, ENV_OFFLINE
from anyformer.text.corpus import DOCUMENT_SEPARATOR, load_corpus
from tests.helpers import data_path

TINYSHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"


def test_pydoc_corpus_is_offline_english_and_deterministic() -> None:
    text = load_corpus("pydoc")
    assert len(text) > 100_000
    assert "Assert statements are a convenient way to insert debugging" in text
    assert load_corpus("pydoc") == text


def test_reads_a_utf8_file_verbatim(tmp_path: Path) -> None:
    path = tmp_path / "poem.txt"
    path.write_text("héllo\nwörld ✓\n", encoding="utf-8")
    assert load_corpus(str(path)) == "héllo\nwörld ✓\n"


def test_folder_joins_its_txt_files_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("second", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first", encoding="utf-8")
    (tmp_path / "notes.md").write_text("ignored", encoding="utf-8")
    assert load_corpus(str(tmp_path)) == f"first{DOCUMENT_SEPARATOR}second"


def test_missing_path_is_named_in_the_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match=rf"{missing}.*is not 'pydoc', 'tinyshakespeare'"):
        load_corpus(str(missing))


@pytest.mark.parametrize("content", ["", " \n\t\n"])
def test_empty_corpus_is_rejected(tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=r"empty\.txt' is empty"):
        load_corpus(str(path))


def test_undecodable_bytes_name_the_file_and_byte_offset(tmp_path: Path) -> None:
    (tmp_path / "a_good.txt").write_text("fine", encoding="utf-8")
    (tmp_path / "b_bad.txt").write_bytes("ok é".encode() + b"\xff rest")
    with pytest.raises(ValueError, match=r"b_bad\.txt is not valid UTF-8: .*'\\xff'.* offset 5"):
        load_corpus(str(tmp_path))


def test_folder_without_txt_files_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("a,b", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path} contains no \*\.txt files"):
        load_corpus(str(tmp_path))


def test_tinyshakespeare_from_anyformer_data() -> None:
    data_path("tinyshakespeare/input.txt")
    text = load_corpus("tinyshakespeare")
    assert len(text) == 1_115_394
    assert len(set(text)) == 65
    assert text.startswith("First Citizen:")


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No $ANYFORMER_DATA, an empty user cache, offline; returns the cache's data folder."""
    monkeypatch.delenv(ENV_DATA, raising=False)
    monkeypatch.setenv(ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.setenv(ENV_OFFLINE, "1")
    return tmp_path / "cache" / "data"


def test_offline_without_a_copy_names_the_url_and_where_to_save_it(empty_cache: Path) -> None:
    with pytest.raises(DataUnavailableError) as error:
        load_corpus("tinyshakespeare")
    message = str(error.value)
    assert "\n" not in message and "'tinyshakespeare'" in message
    assert f"download {TINYSHAKESPEARE_URL} and save it as {empty_cache / 'tinyshakespeare' / 'input.txt'}" in message
    assert "ANYFORMER_OFFLINE" in message and "ANYFORMER_DATA" in message
    assert error.value.url == TINYSHAKESPEARE_URL
    assert not (empty_cache / "tinyshakespeare" / "input.txt").exists()


def test_the_file_saved_where_the_error_says_is_read_offline(empty_cache: Path) -> None:
    real = data_path("tinyshakespeare/input.txt")
    with pytest.raises(DataUnavailableError) as error:
        load_corpus("tinyshakespeare")
    assert error.value.path is not None
    error.value.path.parent.mkdir(parents=True)
    shutil.copyfile(real, error.value.path)
    assert load_corpus("tinyshakespeare") == real.read_text(encoding="utf-8")


def test_a_copy_in_anyformer_data_or_root_is_read_and_verified(
    empty_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = data_path("tinyshakespeare/input.txt")
    copy = tmp_path / "data" / "tinyshakespeare" / "input.txt"
    copy.parent.mkdir(parents=True)
    shutil.copyfile(real, copy)
    assert load_corpus("tinyshakespeare", root=copy.parent).startswith("First Citizen:")  # explicit root
    monkeypatch.setenv(ENV_DATA, str(tmp_path / "data"))
    assert load_corpus("tinyshakespeare").startswith("First Citizen:")
    assert not (empty_cache / "tinyshakespeare").exists()  # read in place, nothing copied
    with copy.open("a", encoding="utf-8") as handle:
        handle.write("an added line\n")
    with pytest.raises(ChecksumMismatchError, match=r"input\.txt has sha256 \w+, expected 86c4e6aa"):
        load_corpus("tinyshakespeare")
