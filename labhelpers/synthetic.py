"""Synthetic activations built from known features, so an SAE's dictionary can be graded.

Each activation is a sparse sum of ``n_features`` fixed unit directions in ``d_in``
dimensions, plus a constant offset and a little noise:

    x = sum_i c_i * direction_i + bias + noise,   c_i > 0 only when feature i fires.

Like real features, the firing rates follow a power law (a few common features, many
rare ones), and some pairs are correlated: when a "leader" fires, its "follower" fires
with high probability. With more features than dimensions the directions cannot all be
orthogonal: this is superposition, the situation SAEs exist for.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["SyntheticFeatures", "SyntheticSource", "make_synthetic"]

_SEED_OFFSET = 1_000_003  # keeps the ground truth's random stream apart from any SAE's


@dataclass
class SyntheticFeatures:
    """The ground truth: directions, firing probabilities and correlated pairs."""

    directions: torch.Tensor  # [n_features, d_in], unit rows
    probs: torch.Tensor  # [n_features], independent firing probability of each feature
    pairs: torch.Tensor  # [n_pairs, 2] (leader, follower) feature indices
    pair_prob: float  # P(follower fires | leader fires)
    bias: torch.Tensor  # [d_in], the mean offset every activation carries
    noise_std: float

    @property
    def n_features(self) -> int:
        return self.directions.shape[0]

    @property
    def d_in(self) -> int:
        return self.directions.shape[1]

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw n activations. Returns ``x: [n, d_in]`` and coefficients ``c: [n, n_features]``."""
        fires = torch.rand(n, self.n_features, generator=generator) < self.probs
        follow = torch.rand(n, len(self.pairs), generator=generator) < self.pair_prob
        leader, follower = self.pairs[:, 0], self.pairs[:, 1]
        fires[:, follower] |= fires[:, leader] & follow
        # Magnitudes between 0.5 and 1.5: a feature is either clearly on or off.
        magnitude = 0.5 + torch.rand(n, self.n_features, generator=generator)
        c = fires * magnitude
        noise = self.noise_std * torch.randn(n, self.d_in, generator=generator)
        return c @ self.directions + self.bias + noise, c


def make_synthetic(
    n_features: int = 256,
    d_in: int = 48,
    avg_active: float = 5.0,
    alpha: float = 1.0,
    n_pairs: int = 16,
    pair_prob: float = 0.8,
    bias_norm: float = 1.0,
    noise_std: float = 0.01,
    seed: int = 0,
) -> SyntheticFeatures:
    """Random unit directions; firing probabilities ``∝ rank^-alpha``, scaled to sum to
    ``avg_active``, then each capped at 0.5.

    Correlated pairs link a frequent leader to a rarer follower, chosen at random. The cap
    lowers the expected number of active features and the pairs raise it again, so
    ``avg_active`` is a target, not the exact average: 4.68 after the cap and 5.18 with
    the pairs for the defaults.
    """
    # Offset from ``seed``: an SAE built with SAEConfig(seed=seed) also starts by drawing
    # randn(d_sae, d_in) from manual_seed(seed), so with the same seed its first decoder
    # rows would *be* these directions, and "recovering" them would take no training.
    gen = torch.Generator().manual_seed(_SEED_OFFSET + seed)
    directions = torch.randn(n_features, d_in, generator=gen)
    directions /= directions.norm(dim=1, keepdim=True)
    ranks = torch.arange(1, n_features + 1, dtype=torch.float32)
    probs = ranks.pow(-alpha)
    probs = (probs * avg_active / probs.sum()).clamp(max=0.5)
    # Feature i has rank i + 1, so the first half are the frequent ones: they lead.
    half = n_features // 2
    leaders = torch.randperm(half, generator=gen)[:n_pairs]
    followers = half + torch.randperm(n_features - half, generator=gen)[:n_pairs]
    pairs = torch.stack([leaders, followers], dim=1)
    bias = torch.randn(d_in, generator=gen)
    bias = bias_norm * bias / bias.norm()
    return SyntheticFeatures(directions, probs, pairs, pair_prob, bias, noise_std)


class SyntheticSource:
    """Batches of synthetic activations, deterministic and resumable.

    Batch number ``i`` is drawn from a generator seeded with ``(seed, i)``, so the source's
    whole state is the batch counter ``position``.
    """

    def __init__(self, features: SyntheticFeatures, seed: int = 0) -> None:
        self.features = features
        self.seed = seed
        self.position = 0

    def _generator(self, stream: int, i: int) -> torch.Generator:
        # One seed per (source seed, stream, batch index): no batch depends on another.
        return torch.Generator().manual_seed(((self.seed * 1009 + stream) << 32) + i)

    def next_batch(self, batch_size: int) -> torch.Tensor:
        """x: [batch_size, d_in]; advances the position by one batch."""
        x, _ = self.features.sample(batch_size, self._generator(0, self.position))
        self.position += 1
        return x

    def sample(self, n: int, stream: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """A held-out sample (another stream: never a training batch); does not move position."""
        return self.features.sample(n, self._generator(stream, 0))

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.position = int(state["position"])
