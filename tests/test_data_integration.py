"""Every real-data training command reads its dataset through ``anyformer.core.data``.

1. With no ``$ANYFORMER_DATA``, an empty user cache and ``$ANYFORMER_OFFLINE=1``, each README
   real-data command (``anyformer <task> fit --config X``) exits with status 2 and ONE stderr line
   that names the dataset, the URL to download and the path to save it as.
2. With an empty cache and a loopback mirror (``$ANYFORMER_DATA_MIRROR``) serving archives rebuilt
   from ``$ANYFORMER_DATA`` in the upstream layouts (GLUE's SST-2.zip, Multi30k's .gz files, the
   FSDD release tarball), SST-2, Multi30k and FSDD are downloaded, verified and trained on for two
   steps (skipped without ``$ANYFORMER_DATA``).

No test reaches beyond loopback: ``socket.connect`` refuses every other address.
"""

from __future__ import annotations

import functools
import io
import re
import socket
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from anyformer.core.data import DATASETS, status
from anyformer.core.data.locations import ENV_CACHE, ENV_DATA, ENV_MIRROR, ENV_OFFLINE
from tests.helpers import data_path, run_cli

REPO = Path(__file__).resolve().parents[1]
README_COMMANDS = {
    "text/gpt_shakespeare_char": "tinyshakespeare",
    "text/bert_pretrain_sst2": "sst2",
    "text/bert_finetune_sst2": "sst2",
    "text/bow_sst2": "sst2",
    "text/seq2seq_multi30k": "multi30k",
    "vision/vit_fashion_mnist": "fashion_mnist",
    "vision/vit_mnist": "mnist",
    "vision/cnn_fashion_mnist": "fashion_mnist",
    "speech/speech_fsdd": "fsdd",
    "speech/cnn_fsdd": "fsdd",
}
"""Config -> the dataset it trains on."""
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
TWO_STEPS = ["--trainer.max_steps=2", "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1", *QUIET]
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def task_of(config: Path) -> str:
    """The task of the config's own launch command ``anyformer <task> fit --config <it>``."""
    name = f"experiments/{config.parent.name}/{config.name}"
    return re.findall(rf"anyformer ([\w-]+) fit --config {re.escape(name)}\b", config.read_text())[0]


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current folder and user cache, no $ANYFORMER_DATA, and no connection beyond loopback."""
    for var in (ENV_DATA, ENV_MIRROR, ENV_OFFLINE):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(ENV_CACHE, str(tmp_path / "cache"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: tuple) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in _LOOPBACK:
            raise OSError(f"test tried to reach {address}: tests must stay on loopback")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return tmp_path / "cache" / "data"


@pytest.mark.parametrize("name", sorted(README_COMMANDS))
def test_offline_without_data_is_one_line_naming_dataset_url_and_path(
    name: str, empty_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ENV_OFFLINE, "1")
    config = REPO / "experiments" / f"{name}.yaml"
    run_cli(Path.cwd(), [task_of(config), "fit", "--config", str(config), "--trainer.fast_dev_run=true"], expect=2)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    line, dataset = lines[0], README_COMMANDS[name]
    if name == "text/bert_finetune_sst2" and "checkpoint" in line:  # init_from is read before the data
        assert "runs/bert_pretrain_sst2/checkpoints/last.ckpt" in line
        return
    assert line.startswith(f"anyformer {task_of(config)}: error: dataset {dataset!r} is not in {empty_cache}"), line
    assert "ANYFORMER_OFFLINE" in line
    assert re.search(r"https?://\S+", line), line  # the URL to download
    assert re.search(rf"{re.escape(str(empty_cache / DATASETS[dataset].folder))}/\S+", line), line  # where it goes


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_cache: Path) -> Iterator[Path]:
    """A loopback HTTP server over ``tmp/www``, named by $ANYFORMER_DATA_MIRROR; yields ``www``."""
    www = tmp_path / "www"
    www.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    monkeypatch.setenv(ENV_MIRROR, f"http://127.0.0.1:{httpd.server_address[1]}")
    yield www
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def _put(www: Path, path: str, data: bytes) -> None:
    (www / path).parent.mkdir(parents=True, exist_ok=True)
    (www / path).write_bytes(data)


def _serve_sst2(www: Path, shared: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:  # GLUE's layout
        for split in ("train", "dev", "test"):
            zf.write(shared / "sst2" / f"{split}.tsv", f"SST-2/{split}.tsv")
    _put(www, "sst2/SST-2.zip", buffer.getvalue())


def _serve_multi30k(www: Path, shared: Path) -> None:
    for gz in (shared / "multi30k" / "raw").glob("*.gz"):
        _put(www, f"multi30k/raw/{gz.name}", gz.read_bytes())


def _serve_fsdd(www: Path, shared: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tf:  # the release's layout
        for wav in sorted((shared / "fsdd" / "recordings").glob("*.wav")):
            tf.add(wav, f"free-spoken-digit-dataset-1.0.10/recordings/{wav.name}")
    _put(www, "fsdd/free-spoken-digit-dataset-1.0.10.tar.gz", buffer.getvalue())


MIRRORED = {
    # config, dataset, how to serve it, overrides that keep the run to a few seconds
    "text/bow_sst2": ("sst2", _serve_sst2, ["--data.vocab_size=300", "--model.config.bigram_buckets=256"]),
    "text/seq2seq_multi30k": (
        "multi30k",
        _serve_multi30k,
        ["--data.train_split=val", "--data.vocab_size=300", "--data.max_tokens=256", "--model.val_bleu_sentences=2"],
    ),
    "speech/cnn_fsdd": ("fsdd", _serve_fsdd, ["--data.batch_size=8"]),
}


@pytest.mark.parametrize("name", sorted(MIRRORED))
def test_fetched_from_a_mirror_verified_and_trained_on(name: str, mirror: Path, empty_cache: Path) -> None:
    shared = data_path()
    dataset, serve, shrink = MIRRORED[name]
    serve(mirror, shared)
    config = REPO / "experiments" / f"{name}.yaml"
    run_cli(Path.cwd(), [task_of(config), "fit", "--config", str(config), *TWO_STEPS, *shrink])
    state = status(dataset, full=True)
    assert (state.source, state.folder, state.present, state.verified) == (
        "cache",
        empty_cache / DATASETS[dataset].folder,
        True,
        True,
    )
    assert not list(state.folder.glob(".fetch-*"))  # no download leftovers
    assert (Path("runs") / Path(name).name / "checkpoints" / "last.ckpt").is_file()
