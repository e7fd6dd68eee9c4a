"""The real download code against a loopback server: success, bad sums, broken transfers, lookup order."""

from __future__ import annotations

import pytest

from anyformer.core.data import (
    ChecksumMismatchError,
    DataError,
    DataFile,
    Dataset,
    DataUnavailableError,
    Remote,
    fetch,
    resolve,
    status,
)
from anyformer.core.data import verify as verify_module
from anyformer.core.data.locations import ENV_CACHE, ENV_DATA, ENV_MIRROR, ENV_OFFLINE

from .helpers import archive_spec, file_spec, gz, sha, tar_bytes, zip_bytes

HELLO = b"hello, data layer\n"


def leftovers(folder):
    """Everything in a dataset folder (hidden temporaries included)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) if folder.exists() else []


def test_plain_file_is_downloaded_verified_and_cached(server, isolated):
    spec = file_spec(server.put("files/hello.txt", HELLO), HELLO)
    folder = resolve(spec)
    assert folder == isolated / "tiny"
    assert (folder / "hello.txt").read_bytes() == HELLO
    assert leftovers(folder) == ["hello.txt"]  # no .part, no .fetch-* folder
    state = status(spec)
    assert (state.source, state.present, state.verified) == ("cache", True, True)
    assert resolve(spec) == folder
    assert server.seen == ["/files/hello.txt"]  # the second resolve used the cache


def test_gz_is_checked_compressed_and_decompressed(server):
    packed = gz(HELLO)
    url = server.put("raw/hello.txt.gz", packed)
    remote = Remote(url, "gzd/raw/hello.txt.gz", "gz", target="hello.txt", sha256=sha(packed))
    spec = Dataset("gzd", "gz test", "gzd", files=(DataFile("hello.txt", sha(HELLO)),), remotes=(remote,))
    folder = resolve(spec, progress=True)
    assert leftovers(folder) == ["hello.txt"]
    assert (folder / "hello.txt").read_bytes() == HELLO


def test_zip_and_tar_extract_only_their_listed_members(server):
    members = {"pkg/a.txt": b"a\n", "pkg/sub/b.txt": b"b\n"}
    extra = {"pkg/unlisted.wav": b"held out"}
    for kind, data in (("zip", zip_bytes(members | extra)), ("tar", tar_bytes(members | extra))):
        spec = archive_spec(server.put(f"arc.{kind}", data), kind, members, name=f"arc_{kind}")
        folder = resolve(spec)
        assert leftovers(folder) == ["a.txt", "b.txt"], kind
        assert (folder / "b.txt").read_bytes() == b"b\n"


def test_download_with_wrong_sum_is_deleted_and_named(server, isolated):
    spec = file_spec(server.put("hello.txt", HELLO), HELLO, pin="0" * 64)
    with pytest.raises(ChecksumMismatchError) as caught:
        resolve(spec)
    message = str(caught.value)
    assert "hello.txt" in message and "0" * 64 in message and sha(HELLO) in message
    assert "\n" not in message
    assert (caught.value.expected, caught.value.actual) == ("0" * 64, sha(HELLO))
    assert leftovers(isolated / "tiny") == []


def test_archive_member_with_wrong_sum_saves_nothing(server, isolated):
    members = {"pkg/a.txt": b"a\n", "pkg/b.txt": b"b\n"}
    spec = archive_spec(server.put("arc.zip", zip_bytes(members)), "zip", members, pins={"b.txt": "1" * 64})
    with pytest.raises(ChecksumMismatchError, match=r"b\.txt .*expected 1{64}"):
        resolve(spec)
    assert leftovers(isolated / "arc") == []  # a.txt was fine but is not kept alone


def test_truncated_transfer_leaves_nothing(server, isolated):
    data = bytes(range(256)) * 64
    server.put("big.bin", data)
    spec = file_spec(f"{server.base}/truncated/big.bin", data)
    with pytest.raises(DataUnavailableError, match="broke off"):
        resolve(spec)
    assert leftovers(isolated / "tiny") == []


def test_server_gone_gives_one_line_with_url_and_path(closed_port, isolated):
    url = f"http://127.0.0.1:{closed_port}/tiny/hello.txt"
    with pytest.raises(DataUnavailableError) as caught:
        resolve(file_spec(url, HELLO))
    message = str(caught.value)
    assert "\n" not in message
    for part in ("'tiny'", url, str(isolated / "tiny" / "hello.txt"), "$ANYFORMER_DATA", "refused"):
        assert part in message
    assert (caught.value.url, caught.value.path) == (url, isolated / "tiny" / "hello.txt")
    assert isinstance(caught.value, ValueError)
    assert leftovers(isolated / "tiny") == []


def test_offline_never_connects_and_a_hand_saved_file_is_used(server, monkeypatch, isolated):
    monkeypatch.setenv(ENV_OFFLINE, "1")
    spec = archive_spec(server.put("arc.zip", zip_bytes({"pkg/a.txt": b"a\n"})), "zip", {"pkg/a.txt": b"a\n"})
    with pytest.raises(DataUnavailableError, match=r"\$ANYFORMER_OFFLINE is set.*save it as .*arc\.zip"):
        resolve(spec)
    assert server.seen == []
    # Saved by hand where the message says: used offline, verified member by member.
    (isolated / "arc").mkdir(parents=True)
    (isolated / "arc" / "arc.zip").write_bytes((server.www / "arc.zip").read_bytes())
    assert (resolve(spec) / "a.txt").read_bytes() == b"a\n"
    assert server.seen == []


def test_download_false_raises_without_connecting(server):
    spec = file_spec(server.put("hello.txt", HELLO), HELLO)
    with pytest.raises(DataUnavailableError, match="download=False"):
        resolve(spec, download=False)
    assert server.seen == []


def test_lookup_order_root_then_data_then_cache(tmp_path, monkeypatch, closed_port):
    spec = file_spec(f"http://127.0.0.1:{closed_port}/hello.txt", HELLO)
    root, data, cache = tmp_path / "mine", tmp_path / "shared", tmp_path / "cache" / "data"
    for folder in (root, data / "tiny", cache / "tiny"):
        folder.mkdir(parents=True)
        (folder / "hello.txt").write_bytes(HELLO)
    monkeypatch.setenv(ENV_DATA, str(data))
    assert resolve(spec, root=root) == root
    assert status(spec, root=root).source == "root"
    assert resolve(spec) == data / "tiny"
    assert status(spec).source == "$ANYFORMER_DATA"
    (data / "tiny" / "hello.txt").unlink()  # incomplete there: the cache is next
    assert resolve(spec) == cache / "tiny"
    monkeypatch.setenv(ENV_CACHE, str(tmp_path / "elsewhere"))
    assert status(spec).folder == tmp_path / "elsewhere" / "data" / "tiny"
    # A whole data folder passed as root: its tiny/ is taken rather than downloading into it.
    (data / "tiny" / "hello.txt").write_bytes(HELLO)
    assert resolve(spec, root=data, download=False) == data / "tiny"


def test_explicit_root_is_fetched_into(server, tmp_path, isolated):
    spec = file_spec(server.put("hello.txt", HELLO), HELLO)
    assert (fetch(spec, tmp_path / "mine", progress=False) / "hello.txt").read_bytes() == HELLO
    assert not (isolated / "tiny").exists()


def test_mirror_replaces_the_url_base(server, monkeypatch, closed_port):
    server.put("mirror/tiny/hello.txt", HELLO)
    spec = file_spec(f"http://127.0.0.1:{closed_port}/canonical/hello.txt", HELLO)
    monkeypatch.setenv(ENV_MIRROR, f"{server.base}/mirror/")
    assert (resolve(spec) / "hello.txt").read_bytes() == HELLO
    assert server.seen == ["/mirror/tiny/hello.txt"]


def test_mirror_must_be_http(monkeypatch, closed_port):
    monkeypatch.setenv(ENV_MIRROR, "/some/folder")
    with pytest.raises(DataError, match=r"ANYFORMER_DATA_MIRROR.*http"):
        resolve(file_spec(f"http://127.0.0.1:{closed_port}/x", HELLO))


def test_changed_file_on_disk_is_an_error_and_is_kept(tmp_path, closed_port):
    spec = file_spec(f"http://127.0.0.1:{closed_port}/hello.txt", HELLO)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "hello.txt").write_bytes(b"tampered\n")
    with pytest.raises(ChecksumMismatchError) as caught:
        resolve(spec, root=tmp_path / "mine")
    assert str(tmp_path / "mine" / "hello.txt") in str(caught.value)
    assert caught.value.actual == sha(b"tampered\n")
    assert (tmp_path / "mine" / "hello.txt").exists()  # the user's file: reported, not deleted
    state = status(spec, root=tmp_path / "mine")
    assert state.verified is False and state.mismatched[0][0] == "hello.txt"


def test_stamp_skips_rehashing_until_a_file_changes(tmp_path, monkeypatch, closed_port):
    spec = file_spec(f"http://127.0.0.1:{closed_port}/hello.txt", HELLO)
    (tmp_path / "mine").mkdir()
    path = tmp_path / "mine" / "hello.txt"
    path.write_bytes(HELLO)
    calls = []
    real = verify_module.sha256_file
    monkeypatch.setattr(verify_module, "sha256_file", lambda p: calls.append(p) or real(p))
    resolve(spec, root=tmp_path / "mine")
    resolve(spec, root=tmp_path / "mine")
    assert len(calls) == 1  # the second start trusted the stamp
    status(spec, root=tmp_path / "mine", full=True)
    assert len(calls) == 2  # full=True (data list) hashes anyway
    path.write_bytes(b"HELLO, DATA LAYER!\n")  # same size, new mtime
    with pytest.raises(ChecksumMismatchError):
        resolve(spec, root=tmp_path / "mine")


def test_optional_file_is_verified_only_when_present(tmp_path, closed_port):
    extra = b"labels\n"
    base = file_spec(f"http://127.0.0.1:{closed_port}/hello.txt", HELLO)
    spec = Dataset(
        "tiny", "x", "tiny", files=(*base.files, DataFile("extra.tsv", sha(extra), True)), remotes=base.remotes
    )
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "hello.txt").write_bytes(HELLO)
    assert status(spec, root=folder).verified is True
    (folder / "extra.tsv").write_bytes(b"wrong\n")
    assert status(spec, root=folder).verified is False
    (folder / "extra.tsv").write_bytes(extra)
    assert resolve(spec, root=folder) == folder


def test_unpinned_files_are_reported_not_verified(tmp_path, closed_port, caplog):
    spec = file_spec(f"http://127.0.0.1:{closed_port}/hello.txt", HELLO, unpinned_glob="*.txt")
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "hello.txt").write_bytes(HELLO)
    (folder / "9_yweweler_0.txt").write_bytes(b"not pinned")
    state = status(spec, root=folder)
    assert (state.verified, state.unpinned) == (True, ("9_yweweler_0.txt",))
    resolve(spec, root=folder)
    assert "not verified" in caplog.text


def test_spec_outputs_must_be_pinned():
    remote = Remote("http://127.0.0.1/x", "bad/x", "file", target="x.txt")
    with pytest.raises(ValueError, match="not pinned"):
        Dataset("bad", "x", "bad", files=(), remotes=(remote,))
    with pytest.raises(ValueError, match="relative"):
        DataFile("../x", "0" * 64)
