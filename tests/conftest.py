"""Shared pytest set-up for the unit tests."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # The unit tests use small tensors: on a loaded 2-core machine intra-op threading makes them up
    # to 30x slower (threads wait on each other); one thread is fast either way. Restored after.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
