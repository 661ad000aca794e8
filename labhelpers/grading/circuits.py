"""Checks for the exercises of notebook 07 (ablation, attribution patching, circuits).

The cases use different sizes for batch, positions and features, and non-zero patch
values (mean ablation), so that a sum over the wrong axis, a missing patch or a flipped
sign each give a different answer that the check can name.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from labhelpers.grading.core import Mistake, check_function

__all__ = ["check_attribution_estimate", "check_faithfulness_score"]


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# --- Attribution patching -------------------------------------------------------------------


def _attribution(grad_z, z_clean, z_patched):
    return (grad_z * (z_clean - z_patched)).sum(dim=(0, 1))


def _flipped(grad_z, z_clean, z_patched):
    return (grad_z * (z_patched - z_clean)).sum(dim=(0, 1))


def _averaged(grad_z, z_clean, z_patched):
    return (grad_z * (z_clean - z_patched)).mean(dim=(0, 1))


def _gradient_only(grad_z, z_clean, z_patched):
    return grad_z.sum(dim=(0, 1))


def _patch_ignored(grad_z, z_clean, z_patched):
    return (grad_z * z_clean).sum(dim=(0, 1))


def _patch_after_sum(grad_z, z_clean, z_patched):
    return (grad_z * z_clean).sum(dim=(0, 1)) - grad_z.sum(dim=(0, 1)) * z_patched


def _attribution_case(
    batch: int, pos: int, d_sae: int, seed: int, per_position: bool = False
) -> tuple[torch.Tensor, ...]:
    """grad_z and sparse non-negative latents ``[batch, pos, d_sae]``, and mean latents:
    ``[d_sae]``, or ``[1, pos, d_sae]`` (one mean per position) when ``per_position``, a
    patch that only broadcasts, as the exercise allows."""
    z = torch.relu(_randn(batch, pos, d_sae, seed=seed + 1) - 0.5)
    means = z.mean(dim=0, keepdim=True) if per_position else z.mean(dim=(0, 1))
    return _randn(batch, pos, d_sae, seed=seed), z, means + 0.1  # never zero: the patch shows


def check_attribution_estimate(attribution_estimate: Callable) -> None:
    """Check ``attribution_estimate(grad_z, z_clean, z_patched) -> [d_sae]``."""
    __tracebackhide__ = True
    cases = [
        _attribution_case(2, 3, 5, seed=0),
        _attribution_case(4, 7, 6, seed=10, per_position=True),
        _attribution_case(1, 9, 16, seed=20),
    ]
    check_function(
        "attribution_estimate",
        attribution_estimate,
        _attribution,
        cases,
        mistakes=[
            Mistake(
                "a flipped sign",
                _flipped,
                "The effect of ablating is metric(clean) - metric(patched), so the step is "
                "z_clean - z_patched, not the other way round.",
            ),
            Mistake(
                "averaging over tokens instead of summing",
                _averaged,
                "Every token's latent is patched at once: add up the contributions of all "
                "batch rows and positions (sum, not mean).",
            ),
            Mistake(
                "the gradient alone",
                _gradient_only,
                "A first-order estimate multiplies the gradient by the size of the change "
                "(z_clean - z_patched).",
            ),
            Mistake(
                "ignoring the patch value",
                _patch_ignored,
                "Mean ablation moves z to z_patched, not to 0: use z_clean - z_patched.",
            ),
            Mistake(
                "the gradient summed before the patch is applied",
                _patch_after_sum,
                "z_patched may hold a value per position ([1, pos, d_sae], as in case 2), "
                "so multiply token by token first and sum over batch and positions last.",
            ),
        ],
    )


# --- Faithfulness ---------------------------------------------------------------------------


def _faithfulness(m_circuit, m_empty, m_full):
    return (m_circuit - m_empty) / (m_full - m_empty)


def _plain_ratio(m_circuit, m_empty, m_full):
    return m_circuit / m_full


def _lost_share(m_circuit, m_empty, m_full):
    return (m_full - m_circuit) / (m_full - m_empty)


def _over_full(m_circuit, m_empty, m_full):
    return (m_circuit - m_empty) / m_full


def _upside_down(m_circuit, m_empty, m_full):
    return (m_full - m_empty) / (m_circuit - m_empty)


def _clipped(m_circuit, m_empty, m_full):
    return min(max(_faithfulness(m_circuit, m_empty, m_full), 0.0), 1.0)


def check_faithfulness_score(faithfulness_score: Callable) -> None:
    """Check ``faithfulness_score(m_circuit, m_empty, m_full) -> float``."""
    __tracebackhide__ = True
    cases = [(3.0, 1.0, 5.0), (2.5, -1.5, 4.0), (-0.5, 2.0, 7.0), (6.0, 0.5, 5.5)]
    check_function(
        "faithfulness_score",
        faithfulness_score,
        _faithfulness,
        cases,
        mistakes=[
            Mistake(
                "a plain ratio m(C) / m(M)",
                _plain_ratio,
                "Measure both from the empty circuit: with everything ablated the metric is "
                "m(∅), not 0, so use (m(C) - m(∅)) / (m(M) - m(∅)).",
            ),
            Mistake(
                "the share the circuit misses",
                _lost_share,
                "Faithfulness is how much of the way from m(∅) to m(M) the circuit gets: "
                "m(C) - m(∅) on top, not m(M) - m(C).",
            ),
            Mistake(
                "dividing by m(M)",
                _over_full,
                "The denominator is the whole way from the empty circuit to the model: "
                "m(M) - m(∅).",
            ),
            Mistake(
                "the ratio upside down",
                _upside_down,
                "The circuit's share goes on top: what the circuit recovers, over what the "
                "whole model does, both measured from m(∅).",
            ),
            Mistake(
                "a score clipped to [0, 1]",
                _clipped,
                "Do not clip: a circuit can do worse than the empty one (below 0) or more "
                "than the model (above 1), and both are worth seeing.",
            ),
        ],
    )
