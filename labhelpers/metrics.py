"""How good is an SAE? Reconstruction, sparsity, latent health and, when the truth is known,
how well the dictionary recovers it.

Conventions: ``x, x_hat: [batch, d_in]``, latents ``z: [batch, d_sae]``. Every function
returns a Python float (or a tensor for per-latent quantities) and is safe to call under
``torch.no_grad()``.

Sections: reconstruction, sparsity and latent health, ground truth, and ``evaluate`` which
gathers them for one SAE. (Concept scores against labelled tokens belong in a section of
their own below ground truth.)
"""

from __future__ import annotations

import torch

__all__ = [
    "dead_fraction",
    "dense_fraction",
    "density_histogram",
    "evaluate",
    "explained_variance",
    "feature_density",
    "fvu",
    "fvu_around_zero_legacy",
    "ground_truth_alignment",
    "l0",
    "l2_ratio",
    "mse",
]

# --- reconstruction -------------------------------------------------------------------


def mse(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Mean squared error per element."""
    return float((x_hat - x).pow(2).mean())


def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Fraction of variance unexplained: ``sum ||x - x_hat||^2 / sum ||x - mean(x)||^2``.

    The denominator is the error of the best *constant* guess, so 1.0 means "no better
    than predicting the mean" and 0.0 is perfect.
    """
    residual = (x - x_hat).pow(2).sum()
    total = (x - x.mean(0)).pow(2).sum()
    return float(residual / total)


def explained_variance(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """``1 - fvu``, around the mean."""
    return 1.0 - fvu(x, x_hat)


def fvu_around_zero_legacy(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """LEGACY form, shown for comparison only: ``sum ||x - x_hat||^2 / sum ||x||^2``.

    Dividing by the raw norm credits the SAE for the data's mean (which ``b_dec`` learns
    for free), so it looks better than ``fvu`` whenever activations have an offset.
    """
    return float((x - x_hat).pow(2).sum() / x.pow(2).sum())


def l2_ratio(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Mean of ``||x_hat|| / ||x||``: below 1 means shrinkage (the L1 penalty's side effect)."""
    return float((x_hat.norm(dim=-1) / x.norm(dim=-1).clamp(min=1e-12)).mean())


# --- sparsity and latent health -------------------------------------------------------


def l0(z: torch.Tensor) -> float:
    """Mean number of non-zero latents per input."""
    return float((z != 0).sum(-1).float().mean())


def feature_density(z: torch.Tensor) -> torch.Tensor:
    """Fraction of inputs on which each latent fires: ``[d_sae]``."""
    return (z != 0).float().mean(0)


def dead_fraction(density: torch.Tensor) -> float:
    """Fraction of latents that never fired (density exactly 0 on the sample given)."""
    return float((density == 0).float().mean())


def dense_fraction(density: torch.Tensor, threshold: float = 0.1) -> float:
    """Fraction of latents firing on more than ``threshold`` of inputs (too dense to read)."""
    return float((density > threshold).float().mean())


def density_histogram(density: torch.Tensor, bins: int = 40, low: float = -6.0):
    """Histogram of ``log10(density)`` for the latents that fired; returns (counts, edges)."""
    alive = density[density > 0]
    return torch.histogram(alive.log10().clamp(min=low).float(), bins=bins, range=(low, 0.0))


# --- ground truth -----------------------------------------------------------------------


def ground_truth_alignment(
    W_dec: torch.Tensor, true_directions: torch.Tensor, threshold: float = 0.9
) -> dict[str, float | torch.Tensor]:
    """How well the decoder rows recover known feature directions.

    W_dec: [d_sae, d_in]; true_directions: [n_features, d_in]. For every true feature,
    its best match is ``max |cos|`` over latents. Returns the median best match, the
    number of features with a match >= ``threshold``, and the per-feature best matches.
    """
    dec = W_dec / W_dec.norm(dim=1, keepdim=True).clamp(min=1e-12)
    true = true_directions / true_directions.norm(dim=1, keepdim=True)
    best = (true @ dec.T).abs().max(dim=1).values
    return {
        "median_max_cos": float(best.median()),
        "n_recovered": int((best >= threshold).sum()),
        "max_cos": best,
    }


# --- everything for one SAE -------------------------------------------------------------


@torch.no_grad()
def evaluate(
    sae: torch.nn.Module,
    x: torch.Tensor,
    true_directions: torch.Tensor | None = None,
    batch_size: int = 4096,
) -> dict[str, float]:
    """Evaluate an SAE on activations ``x: [n, d_in]`` (in eval mode, then restored)."""
    was_training = sae.training
    sae.eval()
    x_hat_parts, z_parts = [], []
    for start in range(0, len(x), batch_size):
        z = sae.encode(x[start : start + batch_size])
        z_parts.append(z)
        x_hat_parts.append(sae.decode(z))
    sae.train(was_training)
    z, x_hat = torch.cat(z_parts), torch.cat(x_hat_parts)
    density = feature_density(z)
    result = {
        "l0": l0(z),
        "mse": mse(x, x_hat),
        "fvu": fvu(x, x_hat),
        "explained_variance": explained_variance(x, x_hat),
        "fvu_around_zero_legacy": fvu_around_zero_legacy(x, x_hat),
        "l2_ratio": l2_ratio(x, x_hat),
        "dead_fraction": dead_fraction(density),
        "dense_fraction": dense_fraction(density),
    }
    if true_directions is not None:
        alignment = ground_truth_alignment(sae.W_dec, true_directions)
        result["median_max_cos"] = alignment["median_max_cos"]
        result["n_recovered"] = alignment["n_recovered"]
    return result
