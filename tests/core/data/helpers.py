"""Builders of tiny datasets and archives for the data-layer tests."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import zipfile
from typing import ClassVar

from anyformer.core.data import DataFile, Dataset, Remote
from anyformer.core.data.locations import ENV_DATA

SHARED_DATA = os.environ.get(ENV_DATA, "")
"""The real offline data folder, read at import, before the isolation fixture clears ``$ANYFORMER_DATA``."""


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_spec(url: str, content: bytes, *, name: str = "tiny", pin: str | None = None, **extra) -> Dataset:
    """A one-file dataset ``name/hello.txt`` downloaded from ``url`` (pinned to ``content``)."""
    pin = pin or sha(content)
    remote = Remote(url, f"{name}/hello.txt", "file", target="hello.txt", sha256=pin)
    return Dataset(name, "a tiny test dataset", name, files=(DataFile("hello.txt", pin),), remotes=(remote,), **extra)


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def tar_bytes(members: dict[str, bytes], links: dict[str, tuple[bytes, str]] | None = None) -> bytes:
    """A .tar.gz of regular files, plus ``links``: name -> (tarfile.SYMTYPE or LNKTYPE, target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tf.addfile(info)
    return buffer.getvalue()


def archive_spec(url: str, kind: str, members: dict[str, bytes], *, name: str = "arc", pins=None) -> Dataset:
    """A dataset made of every member of one zip/tar: member ``dir/x`` becomes file ``x``."""
    pins = pins or {}
    table = tuple((member, member.rsplit("/", 1)[-1]) for member in members)
    files = tuple(DataFile(target, pins.get(target, sha(members[member]))) for member, target in table)
    remote = Remote(url, f"{name}/{url.rsplit('/', 1)[-1]}", kind, members=table)
    return Dataset(name, "a tiny archive dataset", name, files=files, remotes=(remote,))


class FakeLibraryDataset:
    """Stands in for a torchvision dataset class: ``download=True`` writes its marker file."""

    calls: ClassVar[list[dict]] = []

    def __init__(self, root: str, download: bool = False, **kwargs) -> None:
        FakeLibraryDataset.calls.append({"root": root, "download": download, **kwargs})
        if download:
            marker = os.path.join(root, "fake", "done.txt")
            os.makedirs(os.path.dirname(marker), exist_ok=True)
            with open(marker, "w") as file:
                file.write("done\n")
