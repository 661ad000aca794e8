"""A sparse autoencoder in NumPy, with the backward pass written by hand.

Everything a learner needs to see an SAE without autograd: a synthetic data set with
known directions in superposition, the ReLU SAE with an L1 penalty and its manual
gradients, a finite-difference gradient check, the diagnostics that tell whether the
dictionary found the true directions, and a stronger trainer that does.

Shapes follow SAELens's layout (``labhelpers.io``):

    W_enc [d_in, d_sae]   b_enc [d_sae]   W_dec [d_sae, d_in]   b_dec [d_in]
    x [batch, d_in]       pre, z [batch, d_sae]                 x_hat [batch, d_in]

The seed lab's numbers (``seed_lab``) depend on the order of the random draws, so
``superposition_data`` and ``init_params`` draw in exactly the order the course's
source lesson does: directions, then per sample (count, indices, coefficients), then
all the noise, then ``W_enc``, then ``W_dec``.

References: Bricken et al. 2023 (Towards Monosemanticity), Cunningham et al. 2023
(SAEs find interpretable features), Gao et al. 2024 (Scaling and evaluating SAEs:
TopK, tied initialisation, AuxK); matching pursuit: Mallat & Zhang 1993; orthogonal
matching pursuit: Pati et al. 1993.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from matplotlib.axes import Axes

from labhelpers.plotting import COLORS, axes

Params = dict[str, np.ndarray]
Grads = dict[str, np.ndarray]
PARAM_NAMES = ("W_enc", "b_enc", "W_dec", "b_dec")
Encoder = Literal["topk", "mp", "omp"]

# --- the data: known directions in superposition -----------------------------------------


@dataclass
class SyntheticData:
    """Activations built from known directions, so a dictionary can be graded."""

    directions: np.ndarray  # [n_features, d_in], unit rows: the ground truth
    x: np.ndarray  # [n_samples, d_in]: the activations the SAE sees
    codes: np.ndarray  # [n_samples, n_features]: the true coefficients (0 when off)


def superposition_data(
    n_samples: int,
    rng: np.random.Generator,
    *,
    n_features: int = 24,
    d_in: int = 8,
    min_active: int = 2,
    max_active: int = 4,
    coeff_mean: float = 1.5,
    coeff_std: float = 0.4,
    noise: float = 0.03,
) -> SyntheticData:
    """Draw ``n_features`` unit directions, then samples with ``min_active``-``max_active`` of them on.

    The same ``rng`` seed always gives the same directions (they are drawn first), so
    ``superposition_data(20_000, default_rng(42))`` is more data from the seed lab's process.
    """
    directions = rng.normal(size=(n_features, d_in))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    codes = np.zeros((n_samples, n_features))
    for i in range(n_samples):  # one sample at a time: this order of draws is the source's
        active = rng.choice(
            n_features, size=rng.integers(min_active, max_active + 1), replace=False
        )
        codes[i, active] = rng.normal(loc=coeff_mean, scale=coeff_std, size=len(active))
    x = codes @ directions
    x += noise * rng.normal(size=x.shape)
    return SyntheticData(directions, x, codes)


# --- the model: a ReLU SAE --------------------------------------------------------------


def normalize_rows(W: np.ndarray) -> np.ndarray:
    """Each row scaled to unit norm. W: [d_sae, d_in] -> same shape."""
    return W / (np.linalg.norm(W, axis=1, keepdims=True) + 1e-12)


def init_params(rng: np.random.Generator, d_in: int, d_sae: int, scale: float = 0.1) -> Params:
    """Small random encoder, unit-norm random decoder rows, zero biases (the source's draws)."""
    W_enc = rng.normal(scale=scale, size=(d_sae, d_in)).T.copy()
    W_dec = normalize_rows(rng.normal(scale=scale, size=(d_in, d_sae)).T.copy())
    return {"W_enc": W_enc, "b_enc": np.zeros(d_sae), "W_dec": W_dec, "b_dec": np.zeros(d_in)}


def copy_params(params: Params) -> Params:
    """A deep copy, so that training one copy leaves the other untouched."""
    return {name: value.copy() for name, value in params.items()}


def forward(x: np.ndarray, params: Params) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x: [batch, d_in] -> (pre [batch, d_sae], z [batch, d_sae], x_hat [batch, d_in])."""
    pre = x @ params["W_enc"] + params["b_enc"]
    z = np.maximum(pre, 0.0)
    x_hat = z @ params["W_dec"] + params["b_dec"]
    return pre, z, x_hat


def loss_terms(x: np.ndarray, params: Params, l1_coeff: float) -> tuple[float, float, float]:
    """(total, reconstruction, sparsity): mean squared error + l1_coeff * mean |z|."""
    _, z, x_hat = forward(x, params)
    recon = float(np.mean((x - x_hat) ** 2))
    sparsity = float(np.mean(np.abs(z)))
    return recon + l1_coeff * sparsity, recon, sparsity


def backward(
    x: np.ndarray,
    params: Params,
    pre: np.ndarray,
    z: np.ndarray,
    x_hat: np.ndarray,
    l1_coeff: float,
) -> Grads:
    """Gradients of ``loss_terms(...)[0]`` for every parameter, by the chain rule."""
    d_x_hat = 2.0 * (x_hat - x) / x.size  # d mean((x_hat - x)^2) / d x_hat
    d_z = d_x_hat @ params["W_dec"].T + (l1_coeff / z.size) * np.sign(z)
    d_pre = d_z * (pre > 0)  # ReLU passes gradient only where it was open
    return {
        "W_enc": x.T @ d_pre,
        "b_enc": d_pre.sum(axis=0),
        "W_dec": z.T @ d_x_hat,
        "b_dec": d_x_hat.sum(axis=0),
    }


def sgd_step(params: Params, grads: Grads, lr: float, renormalize: bool = True) -> None:
    """One plain gradient step, in place; then decoder rows back to unit norm.

    Without the renormalisation the L1 penalty can be dodged: shrink z, grow W_dec.
    """
    for name in PARAM_NAMES:
        params[name] -= lr * grads[name]
    if renormalize:
        params["W_dec"] = normalize_rows(params["W_dec"])


ForwardFn = Callable[[np.ndarray, Params], tuple[np.ndarray, np.ndarray, np.ndarray]]
BackwardFn = Callable[..., Grads]


def train_l1_sae(
    x: np.ndarray,
    params: Params,
    *,
    l1_coeff: float,
    lr: float,
    epochs: int,
    renormalize: bool = True,
    forward_fn: ForwardFn = forward,
    backward_fn: BackwardFn = backward,
) -> list[dict[str, float]]:
    """Full-batch SGD on the whole of ``x`` (in place); returns the losses of every epoch.

    ``forward_fn`` and ``backward_fn`` let a notebook train with the learner's own code.
    """
    history = []
    for epoch in range(epochs):
        pre, z, x_hat = forward_fn(x, params)
        recon = float(np.mean((x - x_hat) ** 2))
        sparsity = float(np.mean(np.abs(z)))
        history.append(
            {
                "epoch": epoch,
                "total": recon + l1_coeff * sparsity,
                "recon": recon,
                "sparsity": sparsity,
            }
        )
        grads = backward_fn(x, params, pre, z, x_hat, l1_coeff)
        sgd_step(params, grads, lr, renormalize)
    return history


def time_full_batch_step(
    x: np.ndarray, params: Params, l1_coeff: float, repeats: int = 500
) -> dict[str, float]:
    """Seconds for one forward + backward + SGD step on all of ``x`` (on a copy of params).

    Returns the best and the median of ``repeats`` runs: the best is the cost on an idle
    machine, the median the cost on a busy (shared) one.
    """
    params = copy_params(params)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        pre, z, x_hat = forward(x, params)
        sgd_step(params, backward(x, params, pre, z, x_hat, l1_coeff), lr=0.0)
        times.append(time.perf_counter() - start)
    return {"best": float(np.min(times)), "median": float(np.median(times))}


# --- gradient checking -------------------------------------------------------------------


def numerical_gradient(f: Callable[[], float], a: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Central differences of ``f()`` with respect to every entry of ``a`` (nudged in place, restored)."""
    grad = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        original = a[i]
        a[i] = original + eps
        up = f()
        a[i] = original - eps
        down = f()
        a[i] = original
        grad[i] = (up - down) / (2 * eps)
    return grad


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / (||a|| + ||b||): scale-free, 0 when equal (and when both are zero)."""
    denominator = np.linalg.norm(a) + np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / denominator) if denominator > 0 else 0.0


def gradient_check(
    x: np.ndarray,
    params: Params,
    l1_coeff: float,
    *,
    eps: float = 1e-5,
    forward_fn: ForwardFn = forward,
    backward_fn: BackwardFn = backward,
    numerical_fn: Callable[..., np.ndarray] = numerical_gradient,
) -> dict[str, float]:
    """Relative error between the manual and the numerical gradient, per parameter.

    Keep x small: the numerical gradient costs two forward passes per parameter entry.
    """
    params = copy_params(params)
    pre, z, x_hat = forward_fn(x, params)
    manual = backward_fn(x, params, pre, z, x_hat, l1_coeff)

    def total_loss() -> float:
        return loss_terms(x, params, l1_coeff)[0]

    return {
        name: relative_error(manual[name], numerical_fn(total_loss, params[name], eps))
        for name in PARAM_NAMES
    }


# --- did the dictionary find the true directions? ----------------------------------------


def max_abs_cosine(directions: np.ndarray, W_dec: np.ndarray) -> np.ndarray:
    """For each true direction [n_features, d_in], its best |cosine| over decoder rows [d_sae, d_in]."""
    return np.abs(normalize_rows(directions) @ normalize_rows(W_dec).T).max(axis=1)


def direction_alignment(
    directions: np.ndarray, W_dec: np.ndarray, threshold: float = 0.9
) -> tuple[float, int]:
    """(median best |cosine|, how many true directions reach ``threshold``): the source's measure."""
    best = max_abs_cosine(directions, W_dec)
    return float(np.median(best)), int((best >= threshold).sum())


def firing_rates(z: np.ndarray) -> np.ndarray:
    """Fraction of samples on which each latent is non-zero. z: [batch, d_sae] -> [d_sae]."""
    return (z > 0).mean(axis=0)


def dead_and_rare(rates: np.ndarray, rare_below: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Indices of dead latents (never fire) and rare ones (fire, but on < ``rare_below``)."""
    dead = np.flatnonzero(rates == 0)
    rare = np.flatnonzero((rates > 0) & (rates < rare_below))
    return dead, rare


def duplicate_pairs(W_dec: np.ndarray, threshold: float = 0.9) -> np.ndarray:
    """Pairs (i, j), i < j, of decoder rows with |cosine| >= threshold: near-duplicate latents."""
    cos = np.abs(normalize_rows(W_dec) @ normalize_rows(W_dec).T)
    i, j = np.triu_indices(len(W_dec), k=1)
    keep = cos[i, j] >= threshold
    return np.stack([i[keep], j[keep]], axis=1)


def fvu(x: np.ndarray, x_hat: np.ndarray) -> float:
    """Fraction of variance unexplained: squared error over the variance around x's mean."""
    return float(np.sum((x - x_hat) ** 2) / np.sum((x - x.mean(axis=0)) ** 2))


def shrinkage(x: np.ndarray, x_hat: np.ndarray) -> float:
    """Mean of <x_hat, x> / ||x||^2: 1 when reconstructions keep their length, < 1 when shrunk."""
    return float(np.mean((x_hat * x).sum(axis=1) / (x * x).sum(axis=1)))


# --- a stronger trainer: a better encoder, Adam, resampling ------------------------------


def topk_encode(x: np.ndarray, params: Params, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Linear encoder, then keep the k largest positive pre-activations per sample.

    x: [batch, d_in] -> (pre [batch, d_sae], z [batch, d_sae]).
    """
    pre = (x - params["b_dec"]) @ params["W_enc"] + params["b_enc"]
    top = np.argpartition(-pre, k - 1, axis=1)[:, :k]
    keep = np.zeros(pre.shape, dtype=bool)
    np.put_along_axis(keep, top, True, axis=1)
    return pre, np.where(keep & (pre > 0), pre, 0.0)


def matching_pursuit(
    x: np.ndarray, W_dec: np.ndarray, k: int, orthogonal: bool = True
) -> np.ndarray:
    """Encode by k rounds of "pick the latent that best explains what is left".

    Each round picks the decoder row with the largest dot product with the residual.
    Plain matching pursuit adds that dot product (clipped at 0) to its coefficient, and
    may pick the same latent again in a later round. The orthogonal variant (OMP) never
    picks a latent twice; after each pick it refits all picked coefficients by least
    squares, then clips negatives to 0 (a cheap stand-in for non-negative least squares),
    so overlapping directions stop double-counting each other. A clipped pick leaves fewer
    than k latents active. x: [batch, d_in], W_dec: [d_sae, d_in] with unit rows
    -> z: [batch, d_sae].
    """
    n = len(x)
    rows = np.arange(n)
    z = np.zeros((n, len(W_dec)))
    picked = np.zeros((n, k), dtype=int)
    residual = x.copy()
    for step in range(k):
        scores = residual @ W_dec.T
        if orthogonal:
            # OMP picks each latent once: after the clip at 0 its residual need not be
            # orthogonal to the picks, so a picked latent could otherwise score > 0 again
            scores[rows[:, None], picked[:, :step]] = -np.inf
        picked[:, step] = scores.argmax(axis=1)
        if orthogonal:
            chosen = W_dec[picked[:, : step + 1]]  # [n, step+1, d_in]
            gram = chosen @ chosen.transpose(0, 2, 1) + 1e-8 * np.eye(step + 1)
            coeffs = np.linalg.solve(gram, chosen @ x[:, :, None])[..., 0]
            coeffs = np.maximum(coeffs, 0.0)  # the latents are ReLU-like: never negative
            residual = x - np.einsum("nk,nkd->nd", coeffs, chosen)
        else:
            coeff = np.maximum(scores[rows, picked[:, step]], 0.0)
            z[rows, picked[:, step]] += coeff
            residual = residual - coeff[:, None] * W_dec[picked[:, step]]
    if orthogonal:
        z[rows[:, None], picked] = coeffs
    return z


def encode_with(encoder: Encoder, x: np.ndarray, params: Params, k: int) -> np.ndarray:
    """z [batch, d_sae] from the named encoder: "topk" (linear), "mp" or "omp" (iterative)."""
    if encoder == "topk":
        return topk_encode(x, params, k)[1]
    return matching_pursuit(x - params["b_dec"], params["W_dec"], k, orthogonal=encoder == "omp")


class Adam:
    """Adam (Kingma & Ba 2015) for a dict of arrays, with per-row moment reset for resampling."""

    def __init__(
        self,
        params: Params,
        names: tuple[str, ...],
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
    ) -> None:
        self.names, self.beta1, self.beta2, self.eps, self.t = names, beta1, beta2, eps, 0
        self.m = {n: np.zeros_like(params[n]) for n in names}
        self.v = {n: np.zeros_like(params[n]) for n in names}

    def step(self, params: Params, grads: Grads, lr: float) -> None:
        """One bias-corrected Adam update of the named params, in place."""
        self.t += 1
        for n in self.names:
            self.m[n] = self.beta1 * self.m[n] + (1 - self.beta1) * grads[n]
            self.v[n] = self.beta2 * self.v[n] + (1 - self.beta2) * grads[n] ** 2
            m_hat = self.m[n] / (1 - self.beta1**self.t)
            v_hat = self.v[n] / (1 - self.beta2**self.t)
            params[n] -= lr * m_hat / (np.sqrt(v_hat) + self.eps)

    def reset_latents(self, latents: np.ndarray) -> None:
        """Forget the moments of resampled latents (W_dec rows, W_enc columns, b_enc)."""
        for n in self.names:
            axis = 1 if n == "W_enc" else 0
            for state in (self.m[n], self.v[n]):
                np.moveaxis(state, axis, 0)[latents] = 0.0


def dictionary_grads(x: np.ndarray, z: np.ndarray, params: Params, encoder: Encoder) -> Grads:
    """Gradients of the mean squared reconstruction error (no L1: sparsity comes from k).

    For "topk" the gradient reaches the encoder through the kept latents; "mp"/"omp"
    have no encoder weights to learn, so only W_dec moves.
    """
    d_x_hat = 2.0 * (z @ params["W_dec"] + params["b_dec"] - x) / x.size
    grads = {"W_dec": z.T @ d_x_hat}
    if encoder == "topk":
        d_pre = (d_x_hat @ params["W_dec"].T) * (z > 0)
        grads["W_enc"] = (x - params["b_dec"]).T @ d_pre
        grads["b_enc"] = d_pre.sum(axis=0)
    return grads


def resample_dead(
    x: np.ndarray, z: np.ndarray, params: Params, dead: np.ndarray, optimizer: Adam
) -> None:
    """Point each dead latent at what the worst-reconstructed samples of x still miss."""
    residual = x - (z @ params["W_dec"] + params["b_dec"])
    worst = np.argsort(-(residual**2).sum(axis=1))[: len(dead)]
    new_rows = normalize_rows(residual[worst])
    params["W_dec"][dead] = new_rows
    params["W_enc"][:, dead] = new_rows.T  # tied, as at initialisation
    params["b_enc"][dead] = 0.0
    optimizer.reset_latents(dead)


def train_dictionary(
    x: np.ndarray,
    *,
    d_sae: int,
    k: int,
    encoder: Encoder = "omp",
    steps: int = 1000,
    lr: float = 1e-2,
    batch_size: int = 1024,
    seed: int = 0,
    resample_every: int = 200,
    directions: np.ndarray | None = None,
    log_every: int = 50,
) -> tuple[Params, list[dict[str, float]]]:
    """Train a k-sparse dictionary with Adam on minibatches of x [n_samples, d_in].

    Recipe: tied initialisation (W_enc = W_dec.T, Gao et al. 2024); b_dec fixed at 0
    (the data have no offset); linear learning-rate decay to 0; decoder rows kept at
    unit norm; latents that did not fire for ``resample_every`` steps are resampled
    toward high-error samples (until 80% of training). With ``directions`` given, the
    history logs the alignment to them every ``log_every`` steps.
    """
    rng = np.random.default_rng(seed)
    d_in = x.shape[1]
    W_dec = normalize_rows(rng.normal(size=(d_sae, d_in)))
    params = {
        "W_enc": W_dec.T.copy(),
        "b_enc": np.zeros(d_sae),
        "W_dec": W_dec,
        "b_dec": np.zeros(d_in),
    }
    names = ("W_enc", "b_enc", "W_dec") if encoder == "topk" else ("W_dec",)
    optimizer = Adam(params, names)
    fired = np.zeros(d_sae)
    history = []
    for step in range(1, steps + 1):
        batch = x[rng.integers(0, len(x), batch_size)]
        z = encode_with(encoder, batch, params, k)
        fired += (z > 0).sum(axis=0)
        optimizer.step(params, dictionary_grads(batch, z, params, encoder), lr * (1 - step / steps))
        params["W_dec"] = normalize_rows(params["W_dec"])
        if encoder != "topk":
            params["W_enc"] = params["W_dec"].T.copy()  # the iterative encoder reads W_dec
        if resample_every and step % resample_every == 0:
            dead = np.flatnonzero(fired == 0)
            if len(dead) and step < 0.8 * steps:
                resample_dead(batch, z, params, dead, optimizer)
            fired[:] = 0
        if log_every and (step % log_every == 0 or step == 1):
            row = {"step": step, "mse": float(np.mean((z @ params["W_dec"] - batch) ** 2))}
            if directions is not None:
                row["median_cos"], row["recovered"] = direction_alignment(
                    directions, params["W_dec"]
                )
            history.append(row)
    return params, history


# --- figures -----------------------------------------------------------------------------


def plot_alignment_history(
    histories: dict[str, list[dict[str, float]]], n_true: int, ax: Axes | None = None
) -> Axes:
    """Recovered true directions (|cos| >= 0.9) against training step, one line per run."""
    ax = axes(ax, (6, 4))
    for (label, history), color in zip(histories.items(), COLORS):
        ax.plot(
            [r["step"] for r in history],
            [r["recovered"] for r in history],
            color=color,
            label=label,
        )
    ax.axhline(n_true, color="0.5", ls="--", lw=0.8)
    ax.set_xlabel("training step")
    ax.set_ylabel("true directions recovered (|cos| ≥ 0.9)")
    ax.set_ylim(0, n_true + 1)
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    return ax


def plot_firing_rates(
    rates: np.ndarray, rare_below: float = 0.01, ax: Axes | None = None, title: str = ""
) -> Axes:
    """Firing rate of every latent, sorted; dead latents drawn at the bottom in red."""
    ax = axes(ax, (6, 3.5))
    order = np.sort(rates)[::-1]
    floor = 1e-4
    colors = [COLORS[1] if r == 0 else COLORS[0] for r in order]
    ax.bar(np.arange(len(order)), np.maximum(order, floor), color=colors, width=1.0)
    ax.axhline(rare_below, color="0.4", ls="--", lw=0.8, label=f"rare below {rare_below:g}")
    ax.set_yscale("log")
    ax.set_ylim(floor * 0.8, 1.2)
    ax.set_xlabel("latent (sorted by firing rate)")
    ax.set_ylabel("firing rate (red: dead)")
    ax.set_title(title)
    ax.legend(frameon=False)
    return ax


def plot_best_cosines(
    best: dict[str, np.ndarray], threshold: float = 0.9, ax: Axes | None = None
) -> Axes:
    """Each true direction's best |cosine| to a decoder row, sorted, one line per model."""
    ax = axes(ax, (6, 3.5))
    for (label, values), color in zip(best.items(), COLORS):
        ax.plot(np.sort(values)[::-1], marker="o", ms=3, color=color, label=label)
    ax.axhline(threshold, color="0.4", ls="--", lw=0.8)
    ax.set_xlabel("true direction (sorted)")
    ax.set_ylabel("best |cosine| to a decoder row")
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    return ax
