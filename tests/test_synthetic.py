"""Tests for labhelpers.synthetic: the ground truth an SAE is scored against."""

import pytest
import torch

from labhelpers.sae import SAEConfig, make_sae
from labhelpers.synthetic import SyntheticSource, make_synthetic


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_an_sae_with_the_same_seed_does_not_start_on_the_true_directions(seed):
    # Both draw randn(n, d_in) first; with one shared stream the SAE's first decoder rows
    # were the true directions, and every feature counted as recovered before training.
    features = make_synthetic(n_features=64, d_in=16, seed=seed)
    sae = make_sae("topk", SAEConfig(d_in=16, d_sae=128, k=4, seed=seed))
    W_dec = torch.nn.functional.normalize(sae.W_dec.detach(), dim=1)
    best = (features.directions @ W_dec.T).abs().max(dim=1).values
    assert int((best >= 0.9).sum()) == 0, best.max()


def test_same_seed_same_ground_truth_and_batches():
    a, b = make_synthetic(seed=3), make_synthetic(seed=3)
    assert torch.equal(a.directions, b.directions) and torch.equal(a.pairs, b.pairs)
    assert not torch.equal(a.directions, make_synthetic(seed=4).directions)
    first, second = SyntheticSource(a, seed=0), SyntheticSource(b, seed=0)
    assert torch.equal(first.next_batch(32), second.next_batch(32))


def test_a_follower_fires_with_its_leader_at_pair_prob():
    features = make_synthetic(seed=0)
    _, c = SyntheticSource(features, seed=0).sample(20_000)
    leader, follower = features.pairs[:, 0], features.pairs[:, 1]
    on = c > 0
    with_leader = on[:, follower][on[:, leader]].float().mean()
    # pair_prob, plus the follower's own small chance of firing anyway
    assert features.pair_prob <= float(with_leader) < features.pair_prob + 0.05
