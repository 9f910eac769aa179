"""Shared by the worker's unit tests."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    """Building a model runtime sets torch's thread count for the process: undo it."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
