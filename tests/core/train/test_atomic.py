"""anyformer.core.train.atomic: complete files or none, with the permissions ``open()`` would give."""

import os
import stat

import numpy as np
import pytest

import anyformer.core.train.atomic
from anyformer.core.train.atomic import atomic_open, atomic_write_text


@pytest.fixture
def umask_027():
    """A umask other than the usual 022, so a right mode cannot come from a coincidence."""
    previous = os.umask(0o027)
    yield 0o027
    os.umask(previous)


def test_new_files_get_the_mode_open_gives_not_mkstemps_0600(tmp_path, umask_027):
    (tmp_path / "reference").write_text("x")  # made by open(): 0o666 & ~umask
    atomic_write_text(tmp_path / "text.txt", "x")
    with atomic_open(tmp_path / "data.npz") as file:
        np.savez_compressed(file, a=np.arange(3))
    expected = stat.S_IMODE((tmp_path / "reference").stat().st_mode)
    assert expected == 0o666 & ~umask_027
    for name in ("text.txt", "data.npz"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name


def test_content_round_trips_in_text_and_binary_mode(tmp_path):
    atomic_write_text(tmp_path / "t.txt", "héllo\n")
    assert (tmp_path / "t.txt").read_bytes() == "héllo\n".encode()
    with atomic_open(tmp_path / "a.npz") as file:
        np.savez_compressed(file, a=np.arange(5))
    np.testing.assert_array_equal(np.load(tmp_path / "a.npz")["a"], np.arange(5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "t.txt"]  # no temporary file left


def test_a_failure_on_the_way_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    atomic_write_text(path, "old")

    with pytest.raises(RuntimeError, match="killed"):
        with atomic_open(path, "w", encoding="utf-8") as file:
            file.write("half of the new")
            raise RuntimeError("killed while writing")
    assert path.read_text() == "old"

    def crash(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(anyformer.core.train.atomic.os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_bad_mode_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"mode='a' must be 'w' or 'wb'"):
        with atomic_open(tmp_path / "x", "a"):
            pass


def test_both_writers_create_missing_parent_folders(tmp_path, umask_027):
    atomic_write_text(tmp_path / "a" / "b" / "t.txt", "x")
    with atomic_open(tmp_path / "c" / "d.npz") as file:
        np.savez_compressed(file, a=np.arange(2))
    assert (tmp_path / "a" / "b" / "t.txt").read_text() == "x"
    np.testing.assert_array_equal(np.load(tmp_path / "c" / "d.npz")["a"], np.arange(2))
    # the folders get the mode mkdir gives (0o777 minus the umask), and no temporary file is left
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o777 & ~umask_027
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["d.npz"]


def test_a_parent_that_is_a_file_is_an_os_error(tmp_path):
    (tmp_path / "taken").write_text("a file, not a folder")
    with pytest.raises(OSError):
        atomic_write_text(tmp_path / "taken" / "t.txt", "x")
    assert (tmp_path / "taken").read_text() == "a file, not a folder"
