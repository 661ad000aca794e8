"""Tests for labhelpers.metrics on cases whose answers are known by hand."""

import pytest
import torch

from labhelpers import metrics
from labhelpers.sae import SAEConfig, TopKSAE


def test_fvu_is_around_the_mean_and_legacy_is_around_zero():
    x = torch.tensor([[10.0, 1.0], [10.0, -1.0], [10.0, 3.0], [10.0, -3.0]])
    mean_guess = x.mean(0).expand_as(x)
    assert metrics.fvu(x, mean_guess) == pytest.approx(1.0)
    assert metrics.explained_variance(x, mean_guess) == pytest.approx(0.0)
    assert metrics.fvu(x, x) == 0.0
    # Around zero the constant offset counts as "explained": far smaller than 1.
    assert metrics.fvu_around_zero_legacy(x, mean_guess) == pytest.approx(20 / 420)


def test_mse_l0_l2_ratio():
    x = torch.tensor([[3.0, 4.0]])
    assert metrics.mse(x, torch.zeros_like(x)) == pytest.approx(12.5)
    assert metrics.l2_ratio(x, 0.5 * x) == pytest.approx(0.5)
    z = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 0.5]])
    assert metrics.l0(z) == pytest.approx(1.5)


def test_density_dead_dense():
    z = torch.zeros(10, 4)
    z[:, 0] = 1.0  # always on
    z[0, 1] = 1.0  # on 10% of inputs
    density = metrics.feature_density(z)
    assert density.tolist() == pytest.approx([1.0, 0.1, 0.0, 0.0])
    assert metrics.dead_fraction(density) == 0.5
    assert metrics.dense_fraction(density, threshold=0.5) == 0.25
    counts, edges = metrics.density_histogram(density, bins=6, low=-3.0)
    assert counts.sum() == 2 and edges[0] == -3.0 and edges[-1] == 0.0


def test_ground_truth_alignment_counts_recovered_features():
    true = torch.eye(4)
    W_dec = torch.stack([torch.tensor([1.0, 0, 0, 0]), torch.tensor([0, -2.0, 0, 0]),
                         torch.tensor([0, 0, 1.0, 1.0])])  # fmt: skip
    result = metrics.ground_truth_alignment(W_dec, true)
    assert result["max_cos"].tolist() == pytest.approx([1.0, 1.0, 2**-0.5, 2**-0.5])
    assert result["n_recovered"] == 2  # sign does not matter: |cos|
    assert result["median_max_cos"] == pytest.approx(2**-0.5)


def test_evaluate_reports_everything_and_restores_mode():
    sae = TopKSAE(SAEConfig(d_in=6, d_sae=12, k=2))
    sae.train()
    x = torch.randn(100, 6, generator=torch.Generator().manual_seed(0))
    result = metrics.evaluate(sae, x, true_directions=torch.eye(6), batch_size=33)
    assert sae.training
    assert result["l0"] <= 2.0
    assert result["explained_variance"] == pytest.approx(1 - result["fvu"])
    assert {"mse", "l2_ratio", "dead_fraction", "dense_fraction", "n_recovered"} <= set(result)
