"""Fixtures of the whole suite: where the real datasets are, and a data cache no test shares.

Tests that need a real dataset (Tiny Shakespeare, SST-2, Multi30k, FSDD, MNIST, ...) read it from
``$ANYFORMER_DATA`` (a data folder laid out as in ``anyformer.core.data.registry``; ``make test``
sets it to ``../shared/data`` when that folder exists) through :func:`shared_data` or
``tests.helpers.data_path``, and skip with a reason when it is absent. No test downloads: the
suite runs with ``$ANYFORMER_OFFLINE=1`` and the user cache replaced by a folder of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from anyformer.core.data.locations import ENV_CACHE, ENV_MIRROR, ENV_OFFLINE
from tests.helpers import data_path


@pytest.fixture
def shared_data() -> Path:
    """The real datasets' folder, ``$ANYFORMER_DATA``; skips the test when it is unset or absent."""
    return data_path()


@pytest.fixture(scope="session", autouse=True)
def private_data_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The user cache of anyformer.core.data is a folder of this session, and downloads are off."""
    with pytest.MonkeyPatch.context() as patch:
        cache = tmp_path_factory.mktemp("anyformer-cache")
        patch.setenv(ENV_CACHE, str(cache))
        patch.setenv(ENV_OFFLINE, "1")
        patch.delenv(ENV_MIRROR, raising=False)
        yield cache
