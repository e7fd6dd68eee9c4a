"""anyformer.core.checks: the per-call input checks of the models."""

import pytest
import torch

from anyformer.core.checks import check_index_range


def test_in_range_ids_and_empty_tensors_pass():
    check_index_range(torch.tensor([[0, 4, 2]]), 5)
    check_index_range(torch.zeros(0, dtype=torch.long), 5)


def test_out_of_range_ids_name_what_they_are_the_bound_and_the_range_seen():
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 5\), got range \[0, 5\]"):
        check_index_range(torch.tensor([0, 5]), 5)
    with pytest.raises(ValueError, match=r"segment ids must be in \[0, 2\), got range \[-1, 1\]"):
        check_index_range(torch.tensor([1, -1]), 2, "segment ids")


def test_the_check_off_the_cpu_never_reads_the_device_back():
    """A host read would stall the GPU every step. A meta tensor has no data to read back, so the
    check passes here only because it queues a device assert instead of reading the range."""
    check_index_range(torch.tensor([[0, 99]], device="meta"), 11)
