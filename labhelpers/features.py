"""Reading one SAE feature: where it fires, how strongly, and what it writes.

The tools of the reading workflow, each a small function:

* ``latent_acts``: the feature activations ``[n_rows, context, n_features]`` over token rows;
* ``top_examples`` and ``quantile_examples``: the strongest contexts, and contexts sampled
  across the whole activation range (top examples alone flatter a label);
* ``render_html`` / ``render_text``: a context with each token shaded by activation;
* ``plot_histogram``: how often and how strongly the feature fires;
* ``logit_effects``: the tokens its decoder direction promotes and suppresses;
* ``decoder_neighbours``: the features whose directions are closest (feature splitting);
* ``unit_activations`` and ``plot_concept_scores``: SAE latents, MLP neurons and residual
  directions side by side, for scoring each kind against labelled concepts.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from matplotlib.axes import Axes

from labhelpers import plotting

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from labhelpers.sae import SAE


@dataclass(frozen=True)
class Example:
    """One token in context: where it is and how strongly the feature fired on it."""

    row: int  # which token row
    position: int  # the token's position in that row
    activation: float


@torch.no_grad()
def latent_acts(
    model: TransformerBridge,
    sae: SAE,
    hook_name: str,
    tokens: torch.Tensor,
    features: Sequence[int] | None = None,
    batch_size: int = 16,
) -> torch.Tensor:
    """SAE latents at ``hook_name`` for token rows ``tokens: [n_rows, context]``.

    Returns ``[n_rows, context, len(features)]`` (all ``d_sae`` latents when ``features`` is
    None). Position 0 (BOS) is set to 0: the SAE never trained on it. The model runs in
    float32, as in splicing and ablation, so "where it fires" and "what ablating it does"
    see the same latents (bf16 autocast can change which ones TopK keeps).
    """
    from labhelpers.activations import harvest

    device = next(sae.parameters()).device
    chunks = []
    for start in range(0, len(tokens), batch_size):
        batch = tokens[start : start + batch_size]
        (acts,) = harvest(model, hook_name, [batch], exclude_bos=False, autocast=False)
        z = sae.encode(acts.to(device)).reshape(*batch.shape, -1)
        if features is not None:
            z = z[..., list(features)]
        z[:, 0] = 0.0
        chunks.append(z.cpu())
    return torch.cat(chunks)


def top_examples(acts: torch.Tensor, k: int = 10) -> list[Example]:
    """The ``k`` strongest activations of one feature, ``acts: [n_rows, context]``, strongest first."""
    flat = acts.reshape(-1)
    k = min(k, int((flat > 0).sum()))
    values, indices = flat.topk(k)
    context = acts.shape[1]
    return [Example(int(i) // context, int(i) % context, float(v)) for v, i in zip(values, indices)]


def quantile_examples(
    acts: torch.Tensor, n_bins: int = 5, per_bin: int = 3, seed: int = 0
) -> dict[str, list[Example]]:
    """Examples drawn at random from each activation quantile bin of the *firing* tokens.

    Bins split the range (0, max] into equal-count intervals, so a label has to fit the
    weak activations too, not just the handful at the top.
    """
    flat = acts.reshape(-1)
    firing = torch.nonzero(flat > 0).squeeze(-1)
    if len(firing) == 0:
        return {}
    order = firing[flat[firing].argsort()]
    generator = torch.Generator().manual_seed(seed)
    context = acts.shape[1]
    bins: dict[str, list[Example]] = {}
    for b, members in enumerate(order.tensor_split(n_bins)):
        if len(members) == 0:
            continue
        pick = members[torch.randperm(len(members), generator=generator)[:per_bin]]
        low, high = flat[members].min().item(), flat[members].max().item()
        name = f"bin {b + 1}/{n_bins}: {low:.2f}-{high:.2f}"
        bins[name] = [Example(int(i) // context, int(i) % context, float(flat[i])) for i in pick]
    return bins


def _window(n: int, position: int, left: int, right: int) -> range:
    return range(max(0, position - left), min(n, position + right + 1))


def render_text(
    tokens: Sequence[str], acts: Sequence[float], position: int, left: int = 12, right: int = 4
) -> str:
    """A context as plain text, the chosen token in [[brackets]] with its activation."""
    parts = []
    for i in _window(len(tokens), position, left, right):
        token = tokens[i].replace("\n", "⏎")
        parts.append(f"[[{token}]]({acts[i]:.2f})" if i == position else token)
    return "".join(parts)


def render_html(
    tokens: Sequence[str],
    acts: Sequence[float],
    position: int,
    left: int = 12,
    right: int = 4,
    scale: float | None = None,
) -> str:
    """A context as HTML: each token shaded by its activation, the chosen token outlined."""
    scale = scale or max(max(acts), 1e-6)
    spans = []
    for i in _window(len(tokens), position, left, right):
        alpha = min(max(acts[i] / scale, 0.0), 1.0)
        border = "border:1px solid #d62728;" if i == position else ""
        text = html.escape(tokens[i]).replace("\n", "⏎")
        spans.append(
            f'<span title="{acts[i]:.3f}" style="background:rgba(255,140,0,{alpha:.2f});'
            f'{border}white-space:pre">{text}</span>'
        )
    return '<div style="font-family:monospace;line-height:1.7">' + "".join(spans) + "</div>"


def token_strings(model: TransformerBridge, row: torch.Tensor) -> list[str]:
    """Each token of ``row`` as the text it stands for."""
    return [model.tokenizer.decode([int(t)]) for t in row]


def plot_histogram(acts: torch.Tensor, ax: Axes | None = None, title: str = "") -> Axes:
    """Histogram of a feature's non-zero activations, with its firing rate in the legend."""
    ax = plotting.axes(ax, (5, 3))
    flat = acts.reshape(-1)
    firing = flat[flat > 0].numpy()
    rate = len(firing) / max(len(flat), 1)
    ax.hist(firing, bins=40, color=plotting.COLORS[0], label=f"fires on {rate:.2%} of tokens")
    ax.set_xlabel("activation (when firing)")
    ax.set_ylabel("tokens")
    ax.set_yscale("log")
    ax.legend(frameon=False, loc="upper right")
    ax.set_title(title)
    return ax


@torch.no_grad()
def logit_effects(
    model: TransformerBridge, sae: SAE, feature: int, k: int = 10
) -> dict[str, list[tuple[str, float]]]:
    """Tokens whose logits the feature's decoder direction raises and lowers most.

    The direct path to the unembedding: the final LayerNorm centres the direction and
    multiplies it by its weight, then ``W_U`` maps it to logits. Left out are later layers
    and LayerNorm's scale sigma, which depends on the token (the effect is per unit of
    ``1 / sigma``). A quick hint at what the feature writes, not a measurement of its total
    effect (steering and ablation measure that).
    """
    W_U = model.W_U.float().cpu()  # [d_model, d_vocab]
    ln_weight = model.ln_final.w.float().cpu()  # the bridge is not folded: apply it here
    direction = sae.W_dec[feature].float().cpu()
    # LayerNorm's bias adds b @ W_U at every token whether or not the feature fires: not its effect.
    effect = ((direction - direction.mean()) * ln_weight) @ W_U
    effect = effect - effect.mean()  # softmax ignores a shift shared by every token

    def named(values: torch.Tensor, indices: torch.Tensor) -> list[tuple[str, float]]:
        return [(model.tokenizer.decode([int(i)]), float(v)) for v, i in zip(values, indices)]

    return {"promoted": named(*effect.topk(k)), "suppressed": named(*(-effect).topk(k))}


@torch.no_grad()
def decoder_neighbours(sae: SAE, feature: int, k: int = 5) -> list[tuple[int, float]]:
    """The ``k`` features whose decoder directions have the highest cosine with ``feature``'s."""
    W = sae.W_dec.float()
    W = W / W.norm(dim=1, keepdim=True)
    cos = W @ W[feature]
    cos[feature] = -2.0  # not its own neighbour
    values, indices = cos.topk(k)
    return [(int(i), float(v)) for v, i in zip(values, indices)]


def describe(
    examples: Sequence[Example],
    tokens: torch.Tensor,
    acts: torch.Tensor,
    model: Any,
    as_html: bool = False,
) -> list[str]:
    """Render each example's context from ``tokens [n_rows, context]`` and one feature's
    ``acts [n_rows, context]``: HTML for a notebook, plain text elsewhere."""
    render = render_html if as_html else render_text
    return [
        render(token_strings(model, tokens[ex.row]), acts[ex.row].tolist(), ex.position)
        for ex in examples
    ]


# --- the three kinds of unit, scored against concepts ------------------------------------


@torch.no_grad()
def unit_activations(
    model: TransformerBridge,
    sae: SAE,
    hook_name: str,
    neuron_hook: str,
    tokens: torch.Tensor,
    batch_size: int = 32,
) -> dict[str, torch.Tensor]:
    """Three candidate "units" on the same tokens, ``tokens: [n_rows, context]``, BOS dropped.

    Returns ``[n_rows * (context - 1), n_units]`` tensors keyed by kind: the SAE's latents at
    ``hook_name``; the MLP neurons at ``neuron_hook`` (e.g. ``blocks.1.mlp.hook_post``, the
    neurons that write into the residual stream the SAE reads); and the residual stream's
    basis directions, each in both signs (a direction can carry a concept either way), so
    all three are scored by the same "unit > threshold" rule.
    """
    from labhelpers.activations import token_acts

    device = next(sae.parameters()).device
    out: dict[str, list[torch.Tensor]] = {"SAE latent": [], "MLP neuron": [], "residual basis": []}
    for start in range(0, len(tokens), batch_size):
        acts = token_acts(model, tokens[start : start + batch_size], [hook_name, neuron_hook])
        resid, neurons = acts[hook_name].float(), acts[neuron_hook].float()
        out["SAE latent"].append(sae.encode(resid.to(device)).cpu())
        out["MLP neuron"].append(neurons.cpu())
        out["residual basis"].append(torch.cat([resid, -resid], dim=1).cpu())
    return {kind: torch.cat(chunks) for kind, chunks in out.items()}


def plot_concept_scores(
    tables: dict[str, list[dict[str, Any]]], ax: Axes | None = None, goal: float = 0.8
) -> Axes:
    """Grouped bars: held-out F1 of the best unit of each kind, per concept.

    ``tables`` maps a unit kind to ``metrics.concept_scores`` rows (same concept order).
    """
    kinds = list(tables)
    concepts = [row["concept"] for row in tables[kinds[0]]]
    ax = ax or plotting.axes(figsize=(10, 3.2))
    width = 0.8 / len(kinds)
    for i, kind in enumerate(kinds):
        f1 = [row["f1"] for row in tables[kind]]
        x = [c + (i - (len(kinds) - 1) / 2) * width for c in range(len(concepts))]
        ax.bar(x, f1, width, label=kind, color=plotting.COLORS[i])
    ax.axhline(goal, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(concepts)), concepts, rotation=30, ha="right")
    ax.set_ylabel("held-out F1")
    ax.set_ylim(0, 1.02)
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # clear of the bars
    return ax


def token_matches(model: TransformerBridge, tokens: torch.Tensor, pattern: str) -> torch.Tensor:
    """``[n_rows, context]`` bool: which tokens' text matches the regular expression ``pattern``.

    A label written as a rule ("the token is part of a credential word") can be tested on
    any text, including text nobody labelled.
    """
    import re

    regex = re.compile(pattern)
    vocab = [bool(regex.search(model.tokenizer.decode([i]))) for i in range(model.cfg.d_vocab)]
    return torch.tensor(vocab)[tokens]


@torch.no_grad()
def firing_rates(
    model: TransformerBridge,
    sae: SAE,
    hook_name: str,
    tokens: torch.Tensor,
    mask: torch.Tensor | None = None,
    batch_size: int = 16,
) -> torch.Tensor:
    """``[d_sae]``: the fraction of tokens on which each latent fires, BOS excluded.

    ``mask: [n_rows, context]`` marks real tokens when rows are padded (padding excluded
    too). Computed batch by batch, so the full ``[n_rows, context, d_sae]`` tensor never
    exists (for GPT-2's 24,576 latents it would not fit in memory).
    """
    keep = torch.ones(tokens.shape, dtype=torch.bool) if mask is None else mask.bool().cpu()
    keep = keep[:, 1:]
    counts = torch.zeros(sae.W_dec.shape[0])
    for start in range(0, len(tokens), batch_size):
        z = latent_acts(model, sae, hook_name, tokens[start : start + batch_size])[:, 1:]
        counts += (z[keep[start : start + batch_size]] > 0).sum(0).float()
    return counts / keep.sum()
