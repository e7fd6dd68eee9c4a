"""Corpus sources and their error messages."""

from __future__ import annotations

import io
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from anyformer.text.corpus import DOCUMENT_SEPARATOR, TINYSHAKESPEARE_URL, load_corpus

SHARED_TINYSHAKESPEARE = Path("../shared/data/tinyshakespeare/input.txt")


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


@pytest.mark.skipif(not SHARED_TINYSHAKESPEARE.exists(), reason="../shared/data is not present")
def test_tinyshakespeare_from_shared_data() -> None:
    text = load_corpus("tinyshakespeare")
    assert len(text) == 1_115_394
    assert len(set(text)) == 65
    assert text.startswith("First Citizen:")


@pytest.fixture
def no_local_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run where neither ../shared/data nor the user cache has tinyshakespeare; return the cache."""
    work = tmp_path / "work" / "repo"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home" / ".cache" / "anyformer" / "tinyshakespeare.txt"


def test_tinyshakespeare_is_downloaded_once_into_the_cache(
    no_local_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    requested = []

    def fake_urlopen(url: str, timeout: float) -> io.BytesIO:
        requested.append(url)
        return io.BytesIO("First Citizen: ✓\n".encode())

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    assert load_corpus("tinyshakespeare") == "First Citizen: ✓\n"
    assert no_local_copy.read_text(encoding="utf-8") == "First Citizen: ✓\n"
    assert load_corpus("tinyshakespeare") == "First Citizen: ✓\n"
    assert requested == [TINYSHAKESPEARE_URL]


def test_failed_download_says_where_to_put_the_file(no_local_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url: str, timeout: float) -> io.BytesIO:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(FileNotFoundError, match="no network") as error:
        load_corpus("tinyshakespeare")
    message = str(error.value)
    assert str(no_local_copy) in message
    assert "shared/data/tinyshakespeare/input.txt" in message
    assert "save that file as either path" in message
    assert not no_local_copy.exists()
