"""Hostile archives are refused before anything is written, inside or outside the dataset folder."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest

from anyformer.core.data import DataError, DataFile, Dataset, Remote, UnsafeArchiveError, resolve

from .helpers import archive_spec, sha, tar_bytes, zip_bytes


def written(tmp_path):
    """Every file under tmp_path except the server's folder."""
    return sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if "www" not in p.parts)


def test_zip_with_dotdot_member_is_refused(server, tmp_path, isolated):
    data = zip_bytes({"pkg/a.txt": b"a\n", "../../evil": b"owned"})
    spec = archive_spec(server.put("arc.zip", data), "zip", {"pkg/a.txt": b"a\n"})
    with pytest.raises(UnsafeArchiveError, match=r"'\.\./\.\./evil'.*outside"):
        resolve(spec)
    assert not list(tmp_path.rglob("evil"))
    assert list((isolated / "arc").iterdir()) == []


def test_zip_with_symlink_member_is_refused(server):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("pkg/a.txt", b"a\n")
        link = zipfile.ZipInfo("pkg/link")
        link.external_attr = 0o120777 << 16  # S_IFLNK
        zf.writestr(link, "/etc/passwd")
    spec = archive_spec(server.put("arc.zip", buffer.getvalue()), "zip", {"pkg/a.txt": b"a\n"})
    with pytest.raises(UnsafeArchiveError, match="link"):
        resolve(spec)


@pytest.mark.parametrize(
    ("regular", "links", "why"),
    [
        ({"pkg/a.txt": b"a\n", "/tmp/evil_abs": b"owned"}, {}, "outside"),
        ({"pkg/a.txt": b"a\n", "pkg/../../evil": b"owned"}, {}, "outside"),
        ({}, {"pkg/a.txt": (tarfile.SYMTYPE, "/etc/passwd")}, "link"),
        ({"pkg/a.txt": b"a\n"}, {"pkg/hard": (tarfile.LNKTYPE, "../../outside")}, "link"),
        ({"pkg/a.txt": b"a\n"}, {"pkg/fifo": (tarfile.FIFOTYPE, "")}, "special"),
    ],
    ids=["absolute", "dotdot", "symlink", "hardlink", "fifo"],
)
def test_tar_with_escaping_or_linked_member_is_refused(server, tmp_path, regular, links, why):
    spec = archive_spec(server.put("arc.tar.gz", tar_bytes(regular, links)), "tar", {"pkg/a.txt": b"a\n"})
    with pytest.raises(UnsafeArchiveError, match=why):
        resolve(spec)
    assert written(tmp_path) == ["cache", "cache/data", "cache/data/arc"]  # the temporary folder is gone too


def test_corrupt_archive_is_a_one_line_error(server, isolated):
    data = zip_bytes({"pkg/a.txt": b"a\n"})[:-30]
    spec = archive_spec(server.put("arc.zip", data), "zip", {"pkg/a.txt": b"a\n"})
    with pytest.raises(DataError, match="corrupt or truncated") as caught:
        resolve(spec)
    assert "\n" not in str(caught.value)
    assert list((isolated / "arc").iterdir()) == []


def test_archive_lacking_a_member_is_refused(server):
    data = zip_bytes({"pkg/a.txt": b"a\n"})
    files = (DataFile("a.txt", sha(b"a\n")), DataFile("b.txt", sha(b"b\n")))
    remote = Remote(
        server.put("arc.zip", data), "arc/arc.zip", "zip", members=(("pkg/a.txt", "a.txt"), ("pkg/b.txt", "b.txt"))
    )
    with pytest.raises(DataError, match="lacks 1 expected member"):
        resolve(Dataset("arc", "x", "arc", files=files, remotes=(remote,)))
