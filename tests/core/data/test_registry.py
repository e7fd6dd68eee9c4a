"""The real registry: its pins, its layout, the torchvision/torchaudio datasets, the shared copy."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from anyformer.core.data import DATASETS, Dataset, DataUnavailableError, fetch, resolve, status
from anyformer.core.data.locations import ENV_DATA, ENV_MIRROR, ENV_OFFLINE
from anyformer.core.data.registry import FSDD_LIST_SHA256

from .helpers import SHARED_DATA, FakeLibraryDataset

PINNED = ("tinyshakespeare", "sst2", "multi30k", "fsdd", "mnist", "fashion_mnist")


@pytest.fixture
def shared_data() -> Path:
    """The offline copy named by $ANYFORMER_DATA when the tests started; skip without it."""
    if not SHARED_DATA or not Path(SHARED_DATA).is_dir():
        pytest.skip("$ANYFORMER_DATA does not name the offline data folder")
    return Path(SHARED_DATA)


def test_registry_layout_and_pins():
    mirror_paths = [remote.mirror_path for spec in DATASETS.values() for remote in spec.remotes]
    assert len(mirror_paths) == len(set(mirror_paths))
    for spec in DATASETS.values():
        assert spec.note and spec.description
        assert bool(spec.managed_by) != bool(spec.remotes), spec.name  # downloaded by us xor by a library
        assert spec.files or spec.markers, spec.name
    fsdd = DATASETS["fsdd"]
    speakers = {f.path.split("_")[1] for f in fsdd.files}
    assert (len(fsdd.files), speakers) == (2500, {"george", "jackson", "lucas", "nicolas", "theo"})
    table = "".join(f"{f.sha256}  {f.path}\n" for f in sorted(fsdd.files, key=lambda f: f.path.encode()))
    assert hashlib.sha256(table.encode()).hexdigest() == FSDD_LIST_SHA256
    sst2 = DATASETS["sst2"]
    assert [f.path for f in sst2.files if f.optional] == ["test_labeled.tsv"]
    assert all(remote.sha256 for remote in DATASETS["multi30k"].remotes)
    assert len(DATASETS["multi30k"].remotes) == 12


def test_library_datasets_resolve_to_their_root(isolated, monkeypatch):
    with pytest.raises(DataUnavailableError, match=r"torchvision downloads it.*MNIST/raw"):
        resolve("mnist", download=False)
    monkeypatch.setenv(ENV_OFFLINE, "1")
    with pytest.raises(DataUnavailableError, match="ANYFORMER_OFFLINE"):
        resolve("cifar10")
    monkeypatch.delenv(ENV_OFFLINE)
    # Online: the folder to hand to torchvision(root, download=True); nothing is downloaded here.
    assert resolve("cifar10") == isolated / "torchvision"
    assert (isolated / "torchvision").is_dir()
    assert status("speech_commands").missing == ("SpeechCommands/speech_commands_v0.02/testing_list.txt",)


def test_fetch_runs_the_library_download(isolated):
    spec = Dataset(
        "fake", "x", "fakelib", managed_by="fakelib", markers=("fake/done.txt",), note="x",
        factory="tests.core.data.helpers:FakeLibraryDataset", factory_calls=({"train": True}, {"train": False}),
    )  # fmt: skip
    FakeLibraryDataset.calls.clear()
    assert fetch(spec) == isolated / "fakelib"
    assert [call["train"] for call in FakeLibraryDataset.calls] == [True, False]
    assert status(spec).present


def test_shared_folder_matches_every_pin(shared_data, monkeypatch):
    monkeypatch.setenv(ENV_DATA, str(shared_data))
    for name in PINNED:
        state = status(name, full=True)
        found = (state.source, state.present, state.verified, state.unpinned)
        assert found == ("$ANYFORMER_DATA", True, True, ()), name
        assert resolve(name, download=False) == shared_data / DATASETS[name].folder


def test_real_registry_round_trips_through_a_mirror(shared_data, server, monkeypatch, isolated):
    """The real specs' archives, rebuilt from the shared copy, fetched through $ANYFORMER_DATA_MIRROR."""
    server.put("tinyshakespeare/input.txt", (shared_data / "tinyshakespeare" / "input.txt").read_bytes())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:  # GLUE's layout, plus a member we do not take
        for split in ("train", "dev", "test"):
            zf.write(shared_data / "sst2" / f"{split}.tsv", f"SST-2/{split}.tsv")
        zf.writestr("SST-2/original/README.txt", "x")
    server.put("sst2/SST-2.zip", buffer.getvalue())
    for gz in (shared_data / "multi30k" / "raw").glob("*.gz"):
        server.put(f"multi30k/raw/{gz.name}", gz.read_bytes())
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tf:  # the release's layout, plus an unpinned speaker
        for wav in sorted((shared_data / "fsdd" / "recordings").glob("*.wav")):
            tf.add(wav, f"free-spoken-digit-dataset-1.0.10/recordings/{wav.name}")
        info = tarfile.TarInfo("free-spoken-digit-dataset-1.0.10/recordings/0_yweweler_0.wav")
        info.size = 4
        tf.addfile(info, io.BytesIO(b"RIFF"))
    server.put("fsdd/free-spoken-digit-dataset-1.0.10.tar.gz", buffer.getvalue())
    monkeypatch.setenv(ENV_MIRROR, server.base)
    for name in ("tinyshakespeare", "sst2", "multi30k", "fsdd"):
        folder = fetch(name, progress=False)
        assert folder == isolated / DATASETS[name].folder
        assert status(name, full=True).verified is True
    assert not (isolated / "fsdd" / "recordings" / "0_yweweler_0.wav").exists()
    assert not (isolated / "sst2" / "test_labeled.tsv").exists()
    assert len(server.seen) == 1 + 1 + 12 + 1
