"""How good is an SAE? Reconstruction, sparsity, latent health and, when the truth is known,
how well the dictionary recovers it.

Conventions: ``x, x_hat: [batch, d_in]``, latents ``z: [batch, d_sae]``. Every function
returns a Python float (or a tensor for per-latent quantities) and is safe to call under
``torch.no_grad()``.

Sections: reconstruction, sparsity and latent health, ground truth, concept scores
against labelled tokens, ``evaluate`` which gathers the activation-level numbers for one
SAE, and the SAE spliced into the model (CE-loss recovered, KL).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from labhelpers import splice

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

__all__ = [
    "auc",
    "ce_loss_recovered",
    "concept_scores",
    "dead_fraction",
    "dense_fraction",
    "density_histogram",
    "evaluate",
    "explained_variance",
    "f1_matrix",
    "feature_density",
    "fit_probe",
    "fvu",
    "fvu_around_zero_legacy",
    "ground_truth_alignment",
    "group_scores",
    "l0",
    "l2_ratio",
    "mse",
    "precision_recall",
    "probe_scores",
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


def density_histogram(
    density: torch.Tensor, bins: int = 40, low: float = -6.0
) -> tuple[torch.Tensor, torch.Tensor]:
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


# --- concept scores: a unit as a detector of a labelled concept ----------------------------


def precision_recall(fires: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of a binary detector ``fires [n]`` against ``labels [n]``."""
    fires, labels = np.asarray(fires, bool), np.asarray(labels, bool)
    tp = float(np.sum(fires & labels))
    precision = tp / max(float(fires.sum()), 1.0)
    recall = tp / max(float(labels.sum()), 1.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Area under the ROC curve of a score: the chance that a random ``positive`` example
    scores above a random ``negative`` one (ties count half).

    1.0: some threshold separates the two groups perfectly; 0.5: the score cannot tell
    them apart. Unlike a rate at one threshold, it does not move when every score shifts
    by the same amount. positive: ``[n_pos]``; negative: ``[n_neg]``.
    """
    pos = np.asarray(positive, dtype=float)[:, None]
    neg = np.asarray(negative, dtype=float)[None, :]
    if pos.size == 0 or neg.size == 0:
        raise ValueError("auc needs at least one positive and one negative score")
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


def f1_matrix(
    acts: torch.Tensor,
    labels: torch.Tensor,
    threshold: torch.Tensor | float = 0.0,
    chunk: int = 8192,
) -> dict[str, torch.Tensor]:
    """Precision, recall and F1 of every unit as a detector of every concept.

    acts: [n_tokens, n_units]; labels: [n_tokens, n_concepts] bool. Unit ``u`` "detects" a
    token when ``acts[:, u] > threshold`` (a float, or one threshold per unit ``[n_units]``).
    Returns ``[n_units, n_concepts]`` tensors. Counts accumulate in chunks of tokens, so the
    binary matrix is never built whole.
    """
    labels = torch.as_tensor(labels).float()
    tp = torch.zeros(acts.shape[1], labels.shape[1])
    fired = torch.zeros(acts.shape[1])
    for start in range(0, len(acts), chunk):
        fires = (acts[start : start + chunk].float() > threshold).float()
        tp += fires.T @ labels[start : start + chunk]
        fired += fires.sum(0)
    precision = tp / fired.clamp(min=1)[:, None]
    recall = tp / labels.sum(0).clamp(min=1)[None, :]
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    return {"precision": precision, "recall": recall, "f1": f1}


def concept_scores(
    select_acts: torch.Tensor,
    select_labels: torch.Tensor,
    test_acts: torch.Tensor,
    test_labels: torch.Tensor,
    concepts: Sequence[str],
    fractions: Sequence[float] = (0.0, 0.1, 0.25, 0.5),
) -> list[dict[str, float | int | str]]:
    """For each concept, the best single unit as its detector, chosen on one split and scored on another.

    The unit and its firing threshold (a fraction of the unit's largest activation on the
    selection split) are picked by F1 on ``select_*``; precision, recall and F1 are then
    measured on ``test_*`` (held-out text), so a unit that only fits the selection data
    is caught. Use it alike for SAE latents, MLP neurons and residual directions (for
    signed units pass ``torch.cat([acts, -acts], 1)``), so the comparison is fair.
    acts: [n_tokens, n_units]; labels: [n_tokens, n_concepts] bool.
    """
    scale = select_acts.float().amax(0).clamp(min=1e-12)
    best = [(-1.0, 0, 0.0)] * len(concepts)  # (select F1, unit, threshold fraction)
    for fraction in fractions:
        f1 = f1_matrix(select_acts, select_labels, threshold=fraction * scale)["f1"]
        values, units = f1.max(0)
        for c in range(len(concepts)):
            if values[c] > best[c][0]:
                best[c] = (float(values[c]), int(units[c]), fraction)
    rows = []
    for c, (select_f1, unit, fraction) in enumerate(best):
        fires = (test_acts[:, unit].float() > fraction * scale[unit]).numpy()
        scores = precision_recall(fires, np.asarray(test_labels)[:, c])
        rows.append(
            {
                "concept": concepts[c],
                "unit": unit,
                "threshold_fraction": fraction,
                "select_f1": select_f1,
                **scores,
            }
        )
    return rows


def group_scores(
    select_acts: torch.Tensor,
    select_labels: torch.Tensor,
    test_acts: torch.Tensor,
    test_labels: torch.Tensor,
    concepts: Sequence[str],
    max_units: int = 8,
    fractions: Sequence[float] = (0.0, 0.1, 0.25, 0.5),
) -> list[dict[str, float | str | list[int]]]:
    """For each concept, a small *group* of units that detects it together: any one firing.

    Greedy, on the selection split: start from nothing, add the (unit, threshold fraction)
    whose firing, OR-ed with the group's, raises F1 the most; stop at ``max_units`` or
    when no unit raises it. Then score the group on the test split. With ``max_units=1``
    this is ``concept_scores``. A concept that the SAE splits over several latents (one
    per token of a span) scores low one latent at a time and higher as a group.
    acts: [n_tokens, n_units]; labels: [n_tokens, n_concepts] bool. Rows hold ``units``,
    ``fractions``, ``select_f1`` and the test split's precision, recall and F1.
    """
    scale = select_acts.float().amax(0).clamp(min=1e-12)
    n_units = select_acts.shape[1]
    # one 0/1 column per (fraction, unit); float, so each greedy step is two mat-vecs
    fires = torch.cat([(select_acts.float() > f * scale).float() for f in fractions], dim=1)
    select_float, test_bool = torch.as_tensor(select_labels).float(), np.asarray(test_labels, bool)
    rows = []
    for c, concept in enumerate(concepts):
        labels = select_float[:, c]
        group = torch.zeros(len(labels))  # 1 where the group already fires
        chosen: list[int] = []
        best_f1 = 0.0
        for _ in range(max_units):
            outside = 1 - group  # tokens a candidate could add
            tp = (group * labels).sum() + fires.T @ (outside * labels)
            fired = group.sum() + fires.T @ outside
            f1 = 2 * tp / (fired + labels.sum()).clamp(min=1)
            column = int(f1.argmax())
            if float(f1[column]) <= best_f1 + 1e-9:
                break
            best_f1 = float(f1[column])
            chosen.append(column)
            group = torch.maximum(group, fires[:, column])
        units = [col % n_units for col in chosen]
        cuts = [fractions[col // n_units] for col in chosen]
        detected = np.zeros(len(test_acts), dtype=bool)
        for unit, cut in zip(units, cuts):
            detected |= (test_acts[:, unit].float() > cut * scale[unit]).numpy()
        rows.append(
            {
                "concept": concept,
                "units": units,
                "fractions": cuts,
                "select_f1": best_f1,
                **precision_recall(detected, test_bool[:, c]),
            }
        )
    return rows


def fit_probe(
    x: torch.Tensor, labels: torch.Tensor, steps: int = 300, lr: float = 0.05
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Fit a logistic-regression probe of ``x`` for each column of ``labels``.

    Returns the probe as a function from new inputs ``[m, d]`` to probabilities
    ``[m, n_labels]``. Inputs are standardised with ``x``'s statistics; full-batch Adam
    from zero weights, so the same data give the same probe.
    x: [n, d]; labels: [n, n_labels] bool.
    """
    x, y = x.float(), torch.as_tensor(labels).float()
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    z = (x - mean) / std
    W = torch.zeros(x.shape[1], y.shape[1], requires_grad=True)  # [d, n_labels]
    b = torch.zeros(y.shape[1], requires_grad=True)
    optimizer = torch.optim.Adam([W, b], lr=lr)
    with torch.enable_grad():  # callers often run under no_grad; the probe still trains
        for _ in range(steps):
            optimizer.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ W + b, y)
            loss.backward()
            optimizer.step()

    def probabilities(new_x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.sigmoid((new_x.float() - mean) / std @ W + b)

    return probabilities


def probe_scores(
    select_x: torch.Tensor,
    select_labels: torch.Tensor,
    test_x: torch.Tensor,
    test_labels: torch.Tensor,
    concepts: Sequence[str],
    steps: int = 300,
    lr: float = 0.05,
    cutoffs: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5),
) -> list[dict[str, float | str]]:
    """For each concept, a logistic-regression probe of ``x`` trained *with* the labels.

    A thresholded ReLU SAE latent reading ``x`` is a linear classifier of ``x`` (a TopK
    latent nearly so: it must also be among its token's top ``k``), and so is a basis
    direction. A probe fitted to the labels is the best linear classifier supervision
    finds, so its held-out F1 says how much of a concept one direction of ``x`` carries on
    that text at all: a reference for the unsupervised units, not a strict bound (it fits
    the selection split, not the test one). The probe is ``fit_probe``'s on the selection
    split; the cutoff on its probability is chosen by F1 on the selection split, as
    ``concept_scores`` chooses thresholds.
    x: [n_tokens, d]; labels: [n_tokens, n_concepts] bool. Rows as ``concept_scores``'s.
    """
    probe = fit_probe(select_x, select_labels, steps, lr)
    p_select, p_test = probe(select_x).numpy(), probe(test_x).numpy()
    select_np, test_np = np.asarray(select_labels, bool), np.asarray(test_labels, bool)
    rows = []
    for c, concept in enumerate(concepts):
        f1_at = {
            cut: precision_recall(p_select[:, c] > cut, select_np[:, c])["f1"] for cut in cutoffs
        }
        cutoff = max(cutoffs, key=lambda cut: f1_at[cut])
        scores = precision_recall(p_test[:, c] > cutoff, test_np[:, c])
        rows.append({"concept": concept, "cutoff": cutoff, "select_f1": f1_at[cutoff], **scores})
    return rows


# --- everything for one SAE -------------------------------------------------------------


@torch.no_grad()
def evaluate(
    sae: torch.nn.Module,
    x: torch.Tensor,
    true_directions: torch.Tensor | None = None,
    batch_size: int = 4096,
) -> dict[str, float]:
    """Evaluate an SAE on activations ``x: [n, d_in]`` (in eval mode, then restored).

    For a transcoder ``x`` holds (input, output) pairs, ``[n, 2, d_in]``, and every figure
    compares its prediction with the output.
    """
    was_training = sae.training
    sae.eval()
    inputs, x = sae.split_batch(x)
    x_hat_parts, z_parts = [], []
    for start in range(0, len(x), batch_size):
        z = sae.encode(inputs[start : start + batch_size])
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


# --- the SAE inside the model --------------------------------------------------------------


@torch.no_grad()
def ce_loss_recovered(
    model: TransformerBridge,
    sae: torch.nn.Module,
    hook_name: str | tuple[str, str],
    tokens: torch.Tensor,
    batch_size: int = 16,
) -> dict[str, float]:
    """How much of the model's next-token loss survives when the SAE replaces the activation.

    ``recovered = (L_zero - L_sae) / (L_zero - L_clean)``: 1 when splicing in the SAE costs
    nothing, 0 when it is as bad as zeroing the activation. Also returns the three losses
    and ``kl``, the mean KL(clean || spliced) of the next-token distributions (over every
    position, BOS's included, where it is 0).
    tokens: [n_rows, context], each row starting with BOS (which the splice leaves alone).
    For a transcoder, ``hook_name`` is the pair (MLP input, MLP output): the transcoder
    replaces the MLP's output, and the zero baseline zeroes that output.
    """
    if isinstance(hook_name, str):
        out_hook, spliced_hooks = hook_name, [(hook_name, splice.sae_hook(sae))]
    else:
        out_hook, spliced_hooks = hook_name[1], splice.transcoder_hooks(sae, *hook_name)
    totals = {"clean": 0.0, "sae": 0.0, "zero": 0.0, "kl": 0.0}
    for start in range(0, len(tokens), batch_size):
        batch = tokens[start : start + batch_size].to(model.cfg.device)
        clean = model(batch)
        spliced = splice.run_with_hooks(model, batch, spliced_hooks)
        zeroed = splice.logits_with(model, batch, out_hook, splice.zero_hook)
        # each batch's means weighted by its rows, so a short last batch counts for less
        rows = len(batch)
        totals["clean"] += rows * float(splice.next_token_loss(clean, batch))
        totals["sae"] += rows * float(splice.next_token_loss(spliced, batch))
        totals["zero"] += rows * float(splice.next_token_loss(zeroed, batch))
        totals["kl"] += rows * float(splice.kl_divergence(clean, spliced))
    result = {f"loss_{k}" if k != "kl" else k: v / len(tokens) for k, v in totals.items()}
    result["recovered"] = (result["loss_zero"] - result["loss_sae"]) / (
        result["loss_zero"] - result["loss_clean"]
    )
    return result
