"""``anyformer data list`` and ``anyformer data fetch``: output and exit status."""

from __future__ import annotations

from anyformer.core.data import DATASETS
from anyformer.core.data.cli import main
from anyformer.core.data.locations import ENV_MIRROR, ENV_OFFLINE

from .helpers import file_spec

HELLO = b"hello, cli\n"


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("anyformer data: error: "), err
    return err


def test_list_names_every_dataset_and_the_mirror_layout(capsys, monkeypatch):
    monkeypatch.setenv(ENV_MIRROR, "https://mirror.example/anyformer")
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in DATASETS:
        assert f"\n{name} " in out
    for path in (
        "sst2/SST-2.zip",
        "multi30k/raw/test_2016_flickr.de.gz",
        "fsdd/free-spoken-digit-dataset-1.0.10.tar.gz",
    ):
        assert f"  {path}  " in out
    assert "https://mirror.example/anyformer" in out
    assert "yweweler" in out and "not extracted" in out  # fsdd's unpinned speaker is stated
    assert "test_labeled.tsv" in out and "never downloaded" in out


def test_list_exits_1_and_names_a_file_that_fails(capsys, isolated):
    folder = isolated / "tinyshakespeare"
    folder.mkdir(parents=True)
    (folder / "input.txt").write_text("not shakespeare\n")
    assert main(["list", "--quick"]) == 1
    out = capsys.readouterr().out
    assert "NO (1 bad)" in out
    assert f"{folder / 'input.txt'}: sha256 " in out


def test_fetch_downloads_and_reports(server, capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(DATASETS, "tiny", file_spec(server.put("hello.txt", HELLO), HELLO))
    assert main(["fetch", "tiny", "--no-progress"]) == 0
    assert "tiny: 1 pinned file(s) verified in " in capsys.readouterr().out
    assert main(["fetch", "tiny", "--root", str(tmp_path / "mine")]) == 0  # progress bar on stderr
    assert (tmp_path / "mine" / "hello.txt").read_bytes() == HELLO


def test_fetch_unknown_dataset_is_one_line_exit_2(capsys):
    assert main(["fetch", "nope"]) == 2
    assert "unknown dataset 'nope'" in one_error_line(capsys)


def test_fetch_offline_is_one_line_exit_2_with_url_and_path(capsys, monkeypatch, isolated):
    monkeypatch.setenv(ENV_OFFLINE, "1")
    assert main(["fetch", "tinyshakespeare"]) == 2
    err = one_error_line(capsys)
    assert "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt" in err
    assert str(isolated / "tinyshakespeare" / "input.txt") in err and "$ANYFORMER_DATA" in err


def test_bad_command_lines_are_one_line_exit_2(capsys):
    for argv in ([], ["bogus"], ["fetch"], ["list", "--nope"]):
        assert main(argv) == 2, argv
        one_error_line(capsys)
    assert main(["--help"]) == 0
    assert "fetch" in capsys.readouterr().out
