"""Toy models of superposition, after Elhage et al. (2022), "Toy Models of Superposition".

A toy model squeezes ``n_features`` sparse synthetic features through ``d_hidden < n_features``
dimensions and tries to read them back out:

    h = W x            (W: [d_hidden, n_features])
    x' = ReLU(W^T h + b_final)

The loss weights each feature's squared error by its *importance*. When features are
dense, the model keeps the few most important ones on orthogonal directions and drops
the rest; when they are sparse, it packs more features than dimensions into the hidden
space (superposition), accepting some interference because two features rarely fire at
once.

Every model here trains several *instances* at once, one per setting of a sweep (for
example one per feature sparsity): weights carry a leading ``n_instances`` axis, so that
``W`` is ``[n_instances, d_hidden, n_features]`` and a batch is
``[batch, n_instances, n_features]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

__all__ = [
    "ToyModel",
    "best_of_seeds",
    "dimensions_per_feature",
    "feature_dimensionality",
    "feature_norms",
    "feature_probability",
    "generate_batch",
    "geometry_angles",
    "importance_weighted_loss",
    "interference",
    "neuron_features",
    "neuron_responses",
    "plot_dimensionality",
    "plot_feature_geometry",
    "plot_feature_norms",
    "plot_interference",
    "plot_neurons",
    "relu_hidden_forward",
    "relu_output_forward",
    "superposition",
    "train_toy",
]

# --- data ------------------------------------------------------------------------------


def feature_probability(sparsity: float | Sequence[float] | Tensor) -> Tensor:
    """The chance that a feature is non-zero, ``1 - S``, for one or several sparsities S."""
    return 1.0 - torch.as_tensor(sparsity, dtype=torch.float32)


def generate_batch(
    batch_size: int,
    n_features: int,
    probability: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Sparse synthetic features: each is 0 with chance ``1 - p``, else uniform on [0, 1].

    probability: [n_instances], one firing probability per instance (shared by its features).
    Returns x: [batch_size, n_instances, n_features].
    """
    p = probability[None, :, None]
    u = torch.rand(batch_size, probability.shape[0], n_features, generator=generator)
    # One uniform draw does both jobs: the feature fires when u < p, and then u / p is
    # itself uniform on [0, 1]. Half the random numbers of drawing the two separately.
    return torch.where(u < p, u / p, 0.0)


# --- the models --------------------------------------------------------------------------


def relu_output_forward(W: Tensor, b_final: Tensor, x: Tensor) -> Tensor:
    """The ReLU output model, ``x' = ReLU(W^T W x + b_final)``, for every instance at once.

    W: [n_instances, d_hidden, n_features]; b_final: [n_instances, n_features];
    x: [batch, n_instances, n_features]. Returns x': [batch, n_instances, n_features].
    """
    h = torch.einsum("ihf,bif->bih", W, x)
    return torch.relu(torch.einsum("ihf,bih->bif", W, h) + b_final)


def relu_hidden_forward(W: Tensor, b_final: Tensor, x: Tensor) -> Tensor:
    """The privileged-basis model: a ReLU on the hidden layer too, ``ReLU(W^T ReLU(W x) + b)``.

    The hidden ReLU makes each hidden unit a *neuron* whose basis direction means something,
    so we can ask which features a neuron responds to. Shapes as in ``relu_output_forward``.
    """
    h = torch.relu(torch.einsum("ihf,bif->bih", W, x))
    return torch.relu(torch.einsum("ihf,bih->bif", W, h) + b_final)


def importance_weighted_loss(x_hat: Tensor, x: Tensor, importance: Tensor) -> Tensor:
    """Importance-weighted squared error, summed over features and averaged over the batch.

    x_hat, x: [batch, n_instances, n_features]; importance: [n_features] or
    [n_instances, n_features]. Returns one loss per instance: [n_instances].
    """
    return (importance * (x - x_hat) ** 2).sum(-1).mean(0)


class ToyModel(nn.Module):
    """Several toy models trained side by side, one per instance of a sweep.

    W: [n_instances, d_hidden, n_features], Xavier-normal initialised per instance;
    b_final: [n_instances, n_features], zeros. ``hidden_relu=True`` gives the
    privileged-basis model (``relu_hidden_forward``).
    """

    def __init__(
        self,
        n_features: int,
        d_hidden: int,
        n_instances: int,
        *,
        hidden_relu: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        std = math.sqrt(2.0 / (n_features + d_hidden))
        W = torch.randn(n_instances, d_hidden, n_features, generator=generator) * std
        self.W = nn.Parameter(W)
        self.b_final = nn.Parameter(torch.zeros(n_instances, n_features))
        self.hidden_relu = hidden_relu

    @property
    def n_instances(self) -> int:
        return self.W.shape[0]

    @property
    def n_features(self) -> int:
        return self.W.shape[2]

    def forward(self, x: Tensor) -> Tensor:
        """x: [batch, n_instances, n_features] -> x': same shape."""
        forward = relu_hidden_forward if self.hidden_relu else relu_output_forward
        return forward(self.W, self.b_final, x)


def train_toy(
    model: ToyModel,
    probability: Tensor,
    importance: Tensor,
    *,
    steps: int,
    batch_size: int = 1024,
    lr: float = 1e-3,
    seed: int = 0,
) -> Tensor:
    """Train every instance at once with Adam and a cosine learning-rate decay.

    probability: [n_instances]; importance: [n_features] or [n_instances, n_features].
    The instances do not interact: the summed loss gives each its own gradient.
    Returns the loss per instance over the last 5% of steps, averaged: [n_instances].
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    tail = max(1, steps // 20)
    final = torch.zeros(model.n_instances)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the matrices are tiny: a second thread costs more than it saves
    try:
        for step in range(steps):
            x = generate_batch(batch_size, model.n_features, probability, generator)
            loss = importance_weighted_loss(model(x), x, importance)
            optimizer.zero_grad()
            loss.sum().backward()
            optimizer.step()
            schedule.step()
            if step >= steps - tail:
                final += loss.detach() / tail
    finally:
        torch.set_num_threads(threads)
    return final


def best_of_seeds(loss: Tensor, n_seeds: int) -> Tensor:
    """Pick, in each run of ``n_seeds`` consecutive instances, the one with the lowest loss.

    Gradient descent on a toy model can stall in a worse arrangement (a local minimum), so a
    sweep trains each setting from several seeds and keeps the best: that lowers the odds of a
    local minimum, it does not rule one out (notebook 01 measures one that survives).
    loss: [n_settings * n_seeds] -> the chosen instance indices: [n_settings].
    """
    groups = loss.view(-1, n_seeds)
    return groups.argmin(dim=1) + n_seeds * torch.arange(groups.shape[0])


# --- measurements --------------------------------------------------------------------------


def feature_norms(W: Tensor) -> Tensor:
    """||W_i||, how strongly each feature is represented. W: [n_instances, d_hidden, n_features]
    -> [n_instances, n_features]."""
    return W.detach().norm(dim=1)


def interference(W: Tensor) -> Tensor:
    """W^T W: the diagonal is each feature's squared norm, the rest how much feature j
    leaks into feature i's read-out. W: [n_instances, d_hidden, n_features] ->
    [n_instances, n_features, n_features]."""
    W = W.detach()
    return torch.einsum("ihf,ihg->ifg", W, W)


def superposition(W: Tensor) -> Tensor:
    """How much of each feature's direction is shared: sum over j != i of (Ŵ_i · W_j)^2.

    Zero for a feature with a direction to itself. W: [n_instances, d_hidden, n_features]
    -> [n_instances, n_features].
    """
    W = W.detach()
    unit = W / W.norm(dim=1, keepdim=True).clamp_min(1e-8)
    overlap = torch.einsum("ihf,ihg->ifg", unit, W) ** 2
    return overlap.sum(-1) - overlap.diagonal(dim1=1, dim2=2)


def feature_dimensionality(W: Tensor) -> Tensor:
    """Per-feature dimensionality D_i = ||W_i||^2 / sum_j (Ŵ_i · W_j)^2 (Elhage et al. 2022).

    1 for a feature with a dimension to itself, 1/2 for one of an antipodal pair, 0 for a
    feature the model ignores. W: [n_instances, d_hidden, n_features] -> [n_instances, n_features].
    """
    W = W.detach()
    norms = W.norm(dim=1)
    unit = W / norms[:, None, :].clamp_min(1e-8)
    overlap = torch.einsum("ihf,ihg->ifg", unit, W) ** 2
    return norms**2 / overlap.sum(-1).clamp_min(1e-8)


def dimensions_per_feature(W: Tensor) -> Tensor:
    """d_hidden / ||W||_F^2: the hidden dimensions spent per represented feature.

    W: [n_instances, d_hidden, n_features] -> [n_instances].
    """
    W = W.detach()
    return W.shape[1] / (W**2).sum(dim=(1, 2))


def geometry_angles(W: Tensor, min_norm: float = 0.5) -> list[np.ndarray]:
    """For 2-D models: the angles in degrees between neighbouring represented features.

    Features with norm below ``min_norm`` are skipped; the rest are sorted by their polar
    angle, and the gaps between neighbours (wrapping round) are returned, one array per
    instance. Five features evenly spread give five gaps of 72°; a lone feature, one gap of
    360°; none, an empty array.
    W: [n_instances, 2, n_features].
    """
    W = W.detach()
    gaps = []
    for Wi in W:
        keep = Wi.norm(dim=0) >= min_norm
        theta = np.sort(np.degrees(np.arctan2(Wi[1, keep].numpy(), Wi[0, keep].numpy())))
        gaps.append(np.diff(np.append(theta, theta[:1] + 360.0)))
    return gaps


def neuron_responses(W: Tensor) -> Tensor:
    """Privileged-basis model: each neuron's activation when one feature alone is on at 1.

    With x = e_f the hidden layer is ReLU(W e_f) = ReLU(W[:, f]), so the responses are the
    positive part of W. W: [n_instances, d_hidden, n_features] -> [n_instances, d_hidden, n_features].
    """
    x = torch.eye(W.shape[2])[:, None, :].expand(
        -1, W.shape[0], -1
    )  # [n_features, n_instances, n_features]
    h = torch.relu(torch.einsum("ihf,bif->bih", W.detach(), x))
    return h.permute(1, 2, 0)


def neuron_features(W: Tensor, threshold: float = 0.5) -> list[list[list[int]]]:
    """Privileged-basis model: the features each neuron responds to, at least ``threshold``.

    W: [n_instances, d_hidden, n_features]. Returns, per instance and neuron, the feature
    indices whose lone activation (``neuron_responses``) reaches ``threshold``.
    """
    responds = neuron_responses(W) >= threshold
    return [[torch.nonzero(row).flatten().tolist() for row in inst] for inst in responds]


# --- figures ---------------------------------------------------------------------------------


def _grid(n_panels: int, width: float = 2.6, height: float = 2.6, cols: int | None = None):
    cols = cols or n_panels
    rows = math.ceil(n_panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n_panels:]:
        ax.axis("off")
    return fig, list(axes.flat)


def plot_feature_geometry(
    W: Tensor, importance: Tensor, titles: Sequence[str], cols: int | None = None
) -> Figure:
    """One panel per instance of a 2-D model: each feature's column W_i as an arrow,
    coloured by importance (yellow = most, purple = least). W: [n_instances, 2, n_features]."""
    W = W.detach()
    spread = (importance - importance.min()) / (importance.max() - importance.min()).clamp_min(1e-8)
    colours = plt.cm.viridis(spread.numpy())
    fig, axes = _grid(len(W), cols=cols)
    for ax, Wi, title in zip(axes, W, titles):
        ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, color="0.85"))
        for f in range(Wi.shape[1]):
            ax.plot([0, Wi[0, f]], [0, Wi[1, f]], color=colours[f], lw=2)
            ax.scatter(Wi[0, f], Wi[1, f], color=colours[f], s=25, zorder=3)
        ax.set(xlim=(-1.5, 1.5), ylim=(-1.5, 1.5), aspect="equal", xticks=[], yticks=[])
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_feature_norms(W: Tensor, row_labels: Sequence[str]) -> Figure:
    """A heatmap of ||W_i||: rows are instances (sparsities), columns features in
    decreasing importance. W: [n_instances, d_hidden, n_features]."""
    norms = feature_norms(W).numpy()
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(norms) + 1.2))
    image = ax.imshow(norms, aspect="auto", cmap="viridis", vmin=0, vmax=max(1.0, norms.max()))
    ax.set_yticks(range(len(norms)), row_labels, fontsize=8)
    ax.set_xlabel("feature (most important on the left)")
    ax.set_ylabel("sparsity S")
    fig.colorbar(image, ax=ax, label="||W_i||")
    fig.tight_layout()
    return fig


def plot_interference(W: Tensor, titles: Sequence[str]) -> Figure:
    """Per instance, W^T W (top) and each feature's norm coloured by how much it shares its
    direction with others (bottom; dark = its own dimension, yellow = in superposition).
    W: [n_instances, d_hidden, n_features]."""
    gram, norms, shared = interference(W), feature_norms(W), superposition(W)
    colours = plt.cm.viridis((shared / shared.clamp_min(1e-8).max().clamp_min(1.0)).numpy())
    n = len(gram)
    fig, axes = plt.subplots(2, n, figsize=(4 * n, 6), height_ratios=[3, 1], squeeze=False)
    for k in range(n):
        limit = gram[k].abs().max().item()
        axes[0, k].imshow(gram[k].numpy(), cmap="RdBu", vmin=-limit, vmax=limit)
        axes[0, k].set_title(f"{titles[k]}: $W^TW$", fontsize=9)
        axes[0, k].set(xticks=[], yticks=[])
        axes[1, k].bar(range(norms.shape[1]), norms[k].numpy(), color=colours[k], width=1.0)
        axes[1, k].set(ylim=(0, 1.2), xlabel="feature", ylabel="||W_i||")
    fig.tight_layout()
    return fig


def plot_dimensionality(W: Tensor, sparsities: Sequence[float]) -> Figure:
    """Feature dimensionality against 1/(1-S): one dot per feature (jittered), and the line
    d_hidden / ||W||_F^2 per instance; dashed lines mark the fractions the paper found
    (1, 3/4, 2/3, 1/2, 2/5, 3/8, 1/3). W: [n_instances, d_hidden, n_features]."""
    x = 1.0 / (1.0 - np.asarray(sparsities, dtype=float))
    dims = feature_dimensionality(W).numpy()
    rng = np.random.default_rng(0)  # jitter only, so that dots on one plateau do not overlap
    fig, ax = plt.subplots(figsize=(8, 4))
    for fraction in (1, 3 / 4, 2 / 3, 1 / 2, 2 / 5, 3 / 8, 1 / 3):
        ax.axhline(fraction, color="0.8", ls="--", lw=0.8)
    for xi, di in zip(x, dims):
        jitter = xi * np.exp(rng.normal(0, 0.03, size=di.shape))
        ax.scatter(jitter, di, s=6, alpha=0.4, color="tab:blue")
    ax.plot(
        x,
        dimensions_per_feature(W).numpy(),
        color="black",
        marker="o",
        lw=2,
        label="$d_{hidden} / \\|W\\|_F^2$",
    )
    ax.set(xscale="log", xlabel="1 / (1 - S)", ylabel="dimensions per feature", ylim=(-0.05, 1.1))
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


def plot_neurons(W: Tensor, titles: Sequence[str]) -> Figure:
    """Per instance of the privileged-basis model, each neuron's response to each feature
    switched on alone (``neuron_responses``), neurons x features: a row with several dark
    cells is a polysemantic neuron. W: [n_instances, d_hidden, n_features]."""
    responses = neuron_responses(W)
    fig, axes = _grid(len(W), width=3.4, height=2.2)
    for ax, rows, title in zip(axes, responses, titles):
        image = ax.imshow(rows.numpy(), cmap="Reds", vmin=0, vmax=responses.max().item())
        ax.set(xlabel="feature", ylabel="neuron", title=title, xticks=range(rows.shape[1]))
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.colorbar(image, ax=axes, shrink=0.8, label="activation")
    return fig
