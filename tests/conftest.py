"""Fixtures shared by the test modules."""

import pytest

from labhelpers import models


@pytest.fixture(scope="session")
def tiny_model():
    """The bundled tiny model, loaded once per test session (offline, CPU)."""
    return models.load_model("tiny", device="cpu")
