"""Sparse autoencoders in torch: one small base class and one class per architecture.

Every SAE here shares the same parameters and the same two halves:

* encode: ``pre = (x - b_dec) @ W_enc + b_enc`` then an architecture's activation, giving
  the latents ``z: [batch, d_sae]``;
* decode: ``x_hat = z @ W_dec + b_dec``.

Shapes follow SAELens: ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_in]``,
``b_dec [d_in]``, so a row of ``W_dec`` is one feature's direction in activation space.
The architectures differ in the activation, in the encoder (Gated adds a magnitude path)
and in their extra losses (a sparsity penalty, AuxK, Gated's auxiliary reconstruction):

* ``ReLUSAE``: ReLU; L1 penalty on z weighted by each decoder row's norm; decoder free.
* ``TopKSAE``: keep the k largest per input; no penalty (k fixes L0); AuxK gives dead
  latents a gradient; unit-norm decoder rows.
* ``MatryoshkaSAE``: TopK, trained so that the first latents also reconstruct on their
  own (nested dictionaries); at inference a plain TopK SAE.
* ``BatchTopKSAE``: keep the k x batch largest in the batch; at inference a single
  threshold estimated during training (an average of the smallest kept activation); AuxK;
  unit-norm rows.
* ``JumpReLUSAE``: ``z = pre * (pre > threshold)`` with a learned threshold per latent;
  L0 penalty trained through a straight-through estimator; unit-norm rows.
* ``GatedSAE``: a gate decides which latents fire, a magnitude path how much; L1 on the
  gate plus an auxiliary reconstruction through the gate; unit-norm rows.

``forward(x)`` returns an :class:`SAEOutput` with the reconstruction, the latents and the
loss terms, so a training loop is the same for all six.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ARCHITECTURES",
    "SAE",
    "BatchTopKSAE",
    "GatedSAE",
    "JumpReLUSAE",
    "MatryoshkaSAE",
    "ReLUSAE",
    "SAEConfig",
    "SAEOutput",
    "TopKSAE",
    "make_sae",
]


@dataclass
class SAEConfig:
    """Sizes and hyper-parameters of one SAE; each architecture reads the fields it needs."""

    d_in: int
    d_sae: int
    k: int = 32  # TopK: active latents per input; BatchTopK: per input on average
    sparsity_coeff: float = 1.0  # ReLU, Gated: L1 coefficient; JumpReLU: L0 coefficient
    # TopK, BatchTopK: weight of AuxK (0 turns it off). Gao et al.'s value, but their losses
    # are normalised and ours are not, so this AuxK is weaker (see TopKSAE).
    aux_coeff: float = 1 / 32
    k_aux: int | None = None  # latents AuxK may use; None means d_in // 2 (Gao et al.)
    bandwidth: float = (
        0.1  # JumpReLU: width of the straight-through kernel (inputs with E||x||^2 = d_in)
    )
    threshold_init: float = (
        0.1  # JumpReLU: starting threshold (the paper: 1e-3, for far longer runs)
    )
    threshold_momentum: float = 0.01  # BatchTopK: EMA rate of the inference threshold
    # Matryoshka: the nested dictionary sizes below d_sae, smallest first; None means
    # d_sae // 16 and d_sae // 4
    prefixes: tuple[int, ...] | None = None
    dec_init_norm: float = 0.1  # ReLU's initial decoder row norm (others start at 1)
    apply_b_dec_to_input: bool = True
    seed: int = 0  # initial weights come from this seed, not from the global RNG

    def __post_init__(self) -> None:
        if self.d_in < 1 or self.d_sae < 1:
            raise ValueError(f"d_in and d_sae must be positive, got {self.d_in} and {self.d_sae}")
        if self.prefixes is not None:
            self.prefixes = tuple(int(m) for m in self.prefixes)  # a list when read from JSON

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SAEOutput(NamedTuple):
    """What ``SAE.forward`` returns. ``losses`` always has "mse", "sparsity" and "aux"."""

    x_hat: torch.Tensor  # [batch, d_in]
    z: torch.Tensor  # [batch, d_sae]
    loss: torch.Tensor  # scalar: the sum of the terms in losses
    losses: dict[str, torch.Tensor]


class SAE(nn.Module):
    """The shared part: parameters, encode/decode, the loss and decoder-norm handling.

    Subclasses set ``architecture`` (the name ``labhelpers.io`` saves them under, SAELens's
    where it has one) and implement ``activation`` and, when they have one,
    ``sparsity_loss``; those with per-latent parameters of their own restart them in
    ``reset_latents_``.
    """

    architecture = "base"
    unit_norm_decoder = True  # renormalise W_dec rows after every optimiser step

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        gen = torch.Generator().manual_seed(cfg.seed)
        # Random unit directions for the decoder; the encoder starts as its transpose
        # ("tied init"), which keeps latents alive early on (Gao et al., Conerly et al.).
        W_dec = torch.randn(cfg.d_sae, cfg.d_in, generator=gen)
        W_dec = W_dec / W_dec.norm(dim=1, keepdim=True)
        if not self.unit_norm_decoder:
            W_dec = W_dec * cfg.dec_init_norm
        self.W_enc = nn.Parameter(W_dec.T.clone().contiguous())
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.W_dec = nn.Parameter(W_dec)
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))

    # --- the two halves -------------------------------------------------------------
    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., d_in] -> pre-activations [..., d_sae]."""
        if x.shape[-1] != self.cfg.d_in:
            raise ValueError(
                f"this SAE reads activations of width d_in={self.cfg.d_in}, got shape "
                f"{tuple(x.shape)}: is it the SAE for this hook point and this model?"
            )
        if self.cfg.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define activation(pre)")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., d_in] -> latents z: [..., d_sae]."""
        return self.activation(self.pre_acts(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z: [..., d_sae] -> reconstruction [..., d_in]."""
        return z @ self.W_dec + self.b_dec

    # --- training -----------------------------------------------------------------------
    def split_batch(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A training batch -> (input, target). An SAE's target is its input; a
        transcoder's (``labhelpers.transcoder``) is the MLP output paired with it."""
        return batch, batch

    def sparsity_loss(self, pre: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return pre.new_zeros(())

    def aux_loss(
        self,
        x: torch.Tensor,
        x_hat: torch.Tensor,
        pre: torch.Tensor,
        dead_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        return x.new_zeros(())

    def forward(
        self,
        x: torch.Tensor,
        dead_mask: torch.Tensor | None = None,
        sparsity_scale: float = 1.0,
    ) -> SAEOutput:
        """x: [batch, d_in]. ``dead_mask: [d_sae]`` feeds AuxK; ``sparsity_scale`` warms up the penalty."""
        pre = self.pre_acts(x)
        z = self.activation(pre)
        x_hat = self.decode(z)
        return self._output(x, x_hat, pre, z, dead_mask, sparsity_scale)

    def _output(self, x, x_hat, pre, z, dead_mask, sparsity_scale) -> SAEOutput:
        # MSE summed over d_in and averaged over the batch, as SAELens and most papers do.
        mse = (x_hat - x).pow(2).sum(-1).mean()
        losses = {
            "mse": mse,
            "sparsity": sparsity_scale * self.sparsity_loss(pre, z),
            "aux": self.aux_loss(x, x_hat, pre, dead_mask),
        }
        return SAEOutput(x_hat, z, losses["mse"] + losses["sparsity"] + losses["aux"], losses)

    @torch.no_grad()
    def remove_parallel_grads_(self) -> None:
        """Before a step: drop the part of W_dec's gradient that would only change row norms."""
        if self.unit_norm_decoder and self.W_dec.grad is not None:
            W_dec_unit = self.W_dec / self.W_dec.norm(dim=1, keepdim=True)
            parallel = (self.W_dec.grad * W_dec_unit).sum(1, keepdim=True)
            self.W_dec.grad -= parallel * W_dec_unit

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """After a step: put W_dec rows back on the unit sphere (architectures that need it)."""
        if self.unit_norm_decoder:
            self.W_dec /= self.W_dec.norm(dim=1, keepdim=True)

    @torch.no_grad()
    def fold_input_scale_(self, scale: float, target_scale: float | None = None) -> None:
        """Make an SAE trained on ``x * scale`` work on raw ``x`` with the same latents.

        ``pre = (s x - b_dec) W_enc + b_enc = (x - b_dec/s)(s W_enc) + b_enc`` and the
        reconstruction is divided by ``s``, so W_enc *= s, W_dec /= s, b_dec /= s.
        A transcoder's targets may have had their own scale, ``target_scale``: its
        output, ``z W_dec + b_dec``, is divided by that one.
        """
        self.W_enc *= scale
        self.W_dec /= target_scale or scale
        self.b_dec /= target_scale or scale

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        """Architecture tensors beyond W_enc, b_enc, W_dec, b_dec, for saving."""
        return {}

    @torch.no_grad()
    def reset_latents_(self, latents: torch.Tensor) -> None:
        """Restart the per-latent parameters beyond W_enc, W_dec and b_enc (which resampling
        sets) at their initial values; ``latents: [d_sae]`` bool. Nothing to do here."""


class ReLUSAE(SAE):
    """The original SAE: ReLU latents, L1 penalty weighted by decoder row norms.

    Weighting by ``||W_dec row||`` makes the penalty blind to trading encoder scale for
    decoder scale, so the decoder needs no norm constraint (Anthropic, April 2024 update).
    """

    architecture = "standard"
    unit_norm_decoder = False

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return F.relu(pre)

    def sparsity_loss(self, pre: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.cfg.sparsity_coeff * (z * self.W_dec.norm(dim=1)).sum(-1).mean()


class TopKSAE(SAE):
    """Keep the k largest pre-activations of each input (after a ReLU); zero the rest.

    k sets L0 directly, so there is no sparsity loss. AuxK (Gao et al. 2024) lets the
    ``k_aux`` largest *dead* latents reconstruct what the live ones missed: a gradient meant
    to pull dead latents back into use.

    Our AuxK is weaker than Gao et al.'s. Their code divides the reconstruction loss by
    the data's variance and the AuxK loss by the variance of the residual it reconstructs;
    here both are plain squared errors, and AuxK is also scaled by ``min(n_dead / k_aux, 1)``.
    With the same ``aux_coeff`` (1/32), AuxK's weight relative to the reconstruction loss is
    therefore smaller by a factor of about Var(x) / Var(residual), roughly 1 / FVU.
    """

    architecture = "topk"

    def __init__(self, cfg: SAEConfig) -> None:
        if not 1 <= cfg.k <= cfg.d_sae:
            raise ValueError(f"k must be between 1 and d_sae={cfg.d_sae}, got k={cfg.k}")
        super().__init__(cfg)

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        values, indices = pre.topk(self.cfg.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter_(-1, indices, F.relu(values))

    def forward(
        self, x: torch.Tensor, dead_mask: torch.Tensor | None = None, sparsity_scale: float = 1.0
    ) -> SAEOutput:
        pre = self.pre_acts(x)
        values, indices = pre.topk(self.cfg.k, dim=-1, sorted=False)
        values = F.relu(values)
        z = torch.zeros_like(pre).scatter_(-1, indices, values)
        # Sparse decode: only k rows of W_dec per input, gathered and summed by embedding_bag
        # (which takes 2-D input, so any positions axis is flattened in and out again);
        # far cheaper than the dense z @ W_dec when d_sae is large.
        k = self.cfg.k
        x_hat = F.embedding_bag(
            indices.reshape(-1, k), self.W_dec, per_sample_weights=values.reshape(-1, k), mode="sum"
        ).reshape(*x.shape[:-1], -1)
        return self._output(x, x_hat + self.b_dec, pre, z, dead_mask, sparsity_scale)

    def aux_loss(
        self,
        x: torch.Tensor,
        x_hat: torch.Tensor,
        pre: torch.Tensor,
        dead_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        if dead_mask is None or self.cfg.aux_coeff == 0:
            return x.new_zeros(())
        n_dead = int(dead_mask.sum())
        if n_dead == 0:
            return x.new_zeros(())
        k_aux = self.cfg.k_aux or self.cfg.d_in // 2
        scale = min(n_dead / k_aux, 1.0)  # a few dead latents get a gentler push
        residual = (x - x_hat).detach()
        dead_pre = pre.masked_fill(~dead_mask, float("-inf"))
        values, indices = dead_pre.topk(min(k_aux, n_dead), dim=-1, sorted=False)
        # ReLU as in Gao et al.'s code: with raw negative values the loss could be met by a
        # latent that stays negative and a flipped decoder row, which never revives it.
        aux_hat = F.embedding_bag(
            indices, self.W_dec, per_sample_weights=F.relu(values), mode="sum"
        )
        return self.cfg.aux_coeff * scale * (aux_hat - residual).pow(2).sum(-1).mean()


class MatryoshkaSAE(TopKSAE):
    """TopK latents trained so that each prefix of the dictionary reconstructs on its own.

    The loss adds the reconstruction error of the first m latents, for each m in
    ``cfg.prefixes``, to that of all ``d_sae`` (Nabeshima 2024; Bussmann et al. 2025, who
    use BatchTopK). The first latents must then carry directions that every reconstruction
    needs, so a broad concept should be less often split into, or absorbed by, narrower
    latents further down. Inference is unchanged: it is a TopK SAE, and saved as one.
    ``losses["mse"]`` is the whole dictionary's error, as for the others; the prefixes'
    errors, summed, are ``losses["prefix_mse"]``.
    """

    architecture = "matryoshka"

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__(cfg)
        default = tuple(m for m in (cfg.d_sae // 16, cfg.d_sae // 4) if m > 0)
        sizes = cfg.prefixes if cfg.prefixes is not None else default
        if not all(0 < a < b for a, b in zip(sizes, (*sizes[1:], cfg.d_sae))):
            raise ValueError(
                f"prefixes must increase, each between 1 and d_sae={cfg.d_sae} - 1; got {sizes}"
            )
        self.sizes = (*sizes, cfg.d_sae)  # every nested dictionary, the whole one last

    def forward(
        self, x: torch.Tensor, dead_mask: torch.Tensor | None = None, sparsity_scale: float = 1.0
    ) -> SAEOutput:
        pre = self.pre_acts(x)
        z = self.activation(pre)
        x_hat, errors, start = self.b_dec.expand_as(x), [], 0
        for end in self.sizes:  # each prefix's reconstruction adds the next group of latents
            x_hat = x_hat + z[..., start:end] @ self.W_dec[start:end]
            errors.append((x_hat - x).pow(2).sum(-1).mean())
            start = end
        out = self._output(x, x_hat, pre, z, dead_mask, sparsity_scale)
        prefix_mse = sum(errors[:-1], x.new_zeros(()))
        return SAEOutput(x_hat, z, out.loss + prefix_mse, {**out.losses, "prefix_mse": prefix_mse})


class BatchTopKSAE(TopKSAE):
    """TopK over the whole batch: keep the ``k * batch`` largest activations (Bussmann et al.).

    Inputs may then use more or fewer than k latents. Because a batch is not available at
    inference, training also tracks a single threshold: an exponential moving average of
    the smallest kept activation, bias-corrected as Adam corrects its moments, so that it
    is a true average from the first batch on rather than one pulled towards its zero
    start. In ``eval()`` mode the SAE is a JumpReLU with that threshold for every latent,
    and it is saved as one.
    """

    architecture = "batchtopk"

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__(cfg)
        self.register_buffer("threshold", torch.zeros(()))
        self.register_buffer("threshold_updates", torch.zeros((), dtype=torch.long))

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return pre * (pre > self.threshold)
        acts = F.relu(pre)
        flat = acts.reshape(-1)
        values, indices = flat.topk(self.cfg.k * acts.shape[:-1].numel(), sorted=False)
        z = torch.zeros_like(flat).scatter_(-1, indices, values).reshape(acts.shape)
        with torch.no_grad():
            kept = values[values > 0]
            if kept.numel():
                # EMA e_n = (1-m) e_(n-1) + m x_n from e_0 = 0, divided by 1 - (1-m)^n;
                # in one update: t_n = t_(n-1) + w (x_n - t_(n-1)), w = m / (1 - (1-m)^n)
                self.threshold_updates += 1
                m = self.cfg.threshold_momentum
                w = m / (1 - (1 - m) ** int(self.threshold_updates))
                self.threshold.add_(w * (kept.min() - self.threshold))
        return z

    def forward(
        self, x: torch.Tensor, dead_mask: torch.Tensor | None = None, sparsity_scale: float = 1.0
    ) -> SAEOutput:
        return SAE.forward(self, x, dead_mask, sparsity_scale)

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        return {"threshold": self.threshold.expand(self.cfg.d_sae).clone()}


class _JumpReLU(torch.autograd.Function):
    """z = pre * H(pre - threshold); a rectangle kernel gives the threshold a gradient."""

    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        near = ((pre - threshold).abs() < eps / 2).to(grad.dtype)  # K((pre - θ)/ε), rectangle
        grad_pre = grad * (pre > threshold)
        grad_threshold = (-(threshold / eps) * near * grad).reshape(-1, pre.shape[-1]).sum(0)
        return grad_pre, grad_threshold, None


class _Step(torch.autograd.Function):
    """H(pre - threshold), whose straight-through gradient reaches only the threshold."""

    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        near = ((pre - threshold).abs() < eps / 2).to(grad.dtype)
        grad_threshold = (-(1.0 / eps) * near * grad).reshape(-1, pre.shape[-1]).sum(0)
        return torch.zeros_like(pre), grad_threshold, None


class JumpReLUSAE(SAE):
    """A learned threshold per latent; below it the latent is zero, above it passes unchanged.

    The penalty is L0 itself. Its gradient (and the threshold's) is zero almost
    everywhere, so a straight-through estimator with a kernel of width ``bandwidth``
    stands in for it (Rajamanoharan et al. 2024). The threshold is stored as its log so
    that it stays positive.
    """

    architecture = "jumprelu"

    def __init__(self, cfg: SAEConfig) -> None:
        # At threshold 0 (log -inf) the threshold's gradient, threshold * dL/dthreshold,
        # is 0 for good: the SAE would silently train as a plain ReLU.
        if cfg.threshold_init <= 0 or cfg.bandwidth <= 0:
            raise ValueError(
                f"threshold_init and bandwidth must be positive, got {cfg.threshold_init} "
                f"and {cfg.bandwidth}"
            )
        super().__init__(cfg)
        self.log_threshold = nn.Parameter(torch.full((cfg.d_sae,), float(cfg.threshold_init)).log())

    @property
    def threshold(self) -> torch.Tensor:
        return self.log_threshold.exp()

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return _JumpReLU.apply(pre, self.threshold, self.cfg.bandwidth)

    def sparsity_loss(self, pre: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        l0 = _Step.apply(pre, self.threshold, self.cfg.bandwidth).sum(-1).mean()
        return self.cfg.sparsity_coeff * l0

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        return {"threshold": self.threshold.detach().clone()}

    @torch.no_grad()
    def reset_latents_(self, latents: torch.Tensor) -> None:
        # A latent often dies because the L0 penalty raised its threshold: left there, a
        # resampled latent's small pre-activations never cross it, and it gets no gradient.
        self.log_threshold[latents] = math.log(self.cfg.threshold_init)


class GatedSAE(SAE):
    """Separate *which* latents fire (a gate) from *how much* (a magnitude path).

    Both paths share W_enc; the magnitude path rescales it per latent by ``exp(r_mag)``.
    The L1 penalty acts on the gate only, so it no longer shrinks the magnitudes; an aux
    loss through a frozen decoder trains the gate to reconstruct (Rajamanoharan et al.).
    The encoder bias ``b_enc`` is the gate's bias, called ``b_gate`` by SAELens.
    """

    architecture = "gated"

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__(cfg)
        self.r_mag = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_mag = nn.Parameter(torch.zeros(cfg.d_sae))

    def _gate_and_magnitude(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cfg.apply_b_dec_to_input:
            x = x - self.b_dec
        pre_gate = x @ self.W_enc + self.b_enc
        pre_mag = (x @ self.W_enc) * self.r_mag.exp() + self.b_mag
        return pre_gate, pre_mag

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """The gate's pre-activations: they decide which latents fire."""
        return self._gate_and_magnitude(x)[0]

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(
            "a Gated SAE's latents need the magnitude path too, which the gate's "
            "pre-activations do not carry: use encode(x) instead of activation(pre_acts(x))"
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre_gate, pre_mag = self._gate_and_magnitude(x)
        return (pre_gate > 0).to(pre_mag.dtype) * F.relu(pre_mag)

    def forward(
        self, x: torch.Tensor, dead_mask: torch.Tensor | None = None, sparsity_scale: float = 1.0
    ) -> SAEOutput:
        pre_gate, pre_mag = self._gate_and_magnitude(x)
        z = (pre_gate > 0).to(pre_mag.dtype) * F.relu(pre_mag)
        x_hat = self.decode(z)
        gate = F.relu(pre_gate)
        sparsity = self.cfg.sparsity_coeff * gate.sum(-1).mean()
        # The gate alone must reconstruct x through a decoder it cannot change.
        x_gate = gate @ self.W_dec.detach() + self.b_dec.detach()
        aux = (x_gate - x).pow(2).sum(-1).mean()
        mse = (x_hat - x).pow(2).sum(-1).mean()
        losses = {"mse": mse, "sparsity": sparsity_scale * sparsity, "aux": aux}
        return SAEOutput(x_hat, z, mse + losses["sparsity"] + aux, losses)

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        return {"r_mag": self.r_mag.detach().clone(), "b_mag": self.b_mag.detach().clone()}

    @torch.no_grad()
    def reset_latents_(self, latents: torch.Tensor) -> None:
        self.r_mag[latents] = 0.0
        self.b_mag[latents] = 0.0


ARCHITECTURES: dict[str, type[SAE]] = {
    "relu": ReLUSAE,
    "topk": TopKSAE,
    "matryoshka": MatryoshkaSAE,
    "batchtopk": BatchTopKSAE,
    "jumprelu": JumpReLUSAE,
    "gated": GatedSAE,
}


def make_sae(name: str, cfg: SAEConfig) -> SAE:
    """Build an SAE by short name: relu, topk, matryoshka, batchtopk, jumprelu or gated."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name](cfg)
