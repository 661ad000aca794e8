"""Fixtures shared by the test modules."""

import pytest
import torch

from labhelpers import models


@pytest.fixture(scope="module")
def one_thread():
    """The test models and SAEs are tiny: on a 2-core machine one torch thread is faster
    than two threads waiting on each other. Use with ``pytest.mark.usefixtures``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model():
    """The bundled tiny model, loaded once per test session (offline, CPU)."""
    return models.load_model("tiny", device="cpu")
