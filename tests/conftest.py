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


@pytest.fixture(scope="session")
def random_tokens(tiny_model):
    """``random_tokens(n_rows, n_ctx, seed=0)``: seeded random token rows ``[n_rows, n_ctx]``
    that start with BOS, as every row the model sees does."""

    def make(n_rows: int, n_ctx: int, seed: int = 0) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        tokens = torch.randint(1, tiny_model.cfg.d_vocab, (n_rows, n_ctx), generator=gen)
        tokens[:, 0] = tiny_model.tokenizer.bos_token_id
        return tokens

    return make
