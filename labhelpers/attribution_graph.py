"""Attribution graphs: one prompt's computation as a graph of transcoder latents.

Replace every MLP by its transcoder (``labhelpers.transcoder``) and hold three things at
their values on this prompt: the attention patterns, the LayerNorm scales, and which
latents are active (not how strongly: an active latent passes a change in its
pre-activation on linearly). What is left is *linear*: every active latent's
pre-activation, and the logit difference we want to explain, is a sum of contributions
from the token embeddings, from earlier latents (through the residual stream and
attention's value and output maps), from each transcoder's error (what it failed to
predict of its MLP, held as a fixed vector), plus a constant (biases, and position 0,
which the transcoders never read). Each contribution is one edge, and summing a node's
edges gives back its value exactly. This is the "local replacement model" of Ameisen et
al. (2025, *Circuit Tracing*), with one transcoder per layer instead of their
cross-layer transcoders.

The graph is a hypothesis about a *replacement* model, not the model: the latents
stand in for the MLPs, and what they miss sits in error nodes. ``ablation_check`` tests
what the graph predicts against real ablations.

Nodes, in an order where every edge points forward (``adjacency`` is strictly lower
triangular): token embeddings (positions 1 onwards), then per layer the active latents
and the error nodes, then the logit target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from labhelpers import splice

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from transformer_lens.model_bridge import TransformerBridge

    from labhelpers.transcoder import Transcoder

__all__ = [
    "AttributionGraph",
    "GraphNode",
    "ablation_check",
    "build_graph",
    "plot_graph",
    "prune",
]


@dataclass(frozen=True)
class GraphNode:
    """``kind``: "embed", "latent", "error" or "logit"; ``layer`` -1 for embeddings and the
    logit; ``pos`` the token position; ``feature`` the latent's index (-1 otherwise)."""

    kind: str
    layer: int
    pos: int
    feature: int = -1

    @property
    def label(self) -> str:
        names = {"embed": "emb", "error": f"err{self.layer}", "logit": "logit"}
        return names.get(self.kind, f"L{self.layer}/{self.feature}")


@dataclass
class AttributionGraph:
    """One prompt's graph. ``adjacency[t, s]``: node s's contribution to node t's value;
    ``values[t]``: a latent's activation, the logit difference (else 0); ``constant[t]``: what
    no node explains, so that ``adjacency[t].sum() + constant[t] == values[t]`` for targets."""

    tokens: torch.Tensor  # [pos]
    nodes: list[GraphNode]
    adjacency: torch.Tensor  # [n_nodes, n_nodes]
    values: torch.Tensor  # [n_nodes]
    constant: torch.Tensor  # [n_nodes]

    @property
    def logit(self) -> int:
        return len(self.nodes) - 1

    def influence(self) -> torch.Tensor:
        """``[n_nodes]``: each node's share of the logit, direct and through other nodes.

        Edges are taken by magnitude and normalised so that each target's incoming edges sum
        to 1; a node's influence adds up, over every path to the logit, the product of those
        shares (Ameisen et al.). It ranks nodes for pruning; it is not an effect size.
        """
        weights = self.adjacency.abs()
        weights = weights / weights.sum(1, keepdim=True).clamp_min(1e-12)
        return _path_sum(weights, self.logit)

    def total_effects(self) -> torch.Tensor:
        """``[n_nodes]``: how much the logit target drops when a node is zeroed, as the graph
        predicts it (every path, latents downstream responding linearly and staying active).

        An edge is a contribution, ``d(target)/d(source) * source value``; along a path the
        derivatives multiply, so the intermediate latents' values are divided back out.
        """
        through = self.values.clone()
        through[[i for i, n in enumerate(self.nodes) if n.kind != "latent"]] = 1.0
        derivative = self.adjacency / through[None, :]  # d(target)/d(latent); else contributions
        return _path_sum(derivative, self.logit) * through


def _path_sum(weights: torch.Tensor, target: int) -> torch.Tensor:
    """``sum over k >= 1 of (weights^k)[target]``; the graph is acyclic, so the sum ends."""
    row = torch.zeros(len(weights), dtype=weights.dtype)
    row[target] = 1.0
    total = torch.zeros_like(row)
    for _ in range(len(weights)):
        row = row @ weights
        if not row.any():
            break
        total += row
    return total


def _frozen_hooks(model: TransformerBridge, cache) -> list[tuple[str, splice.Hook]]:
    """Hold attention patterns and LayerNorm scales at their cached values."""
    names = [
        f"blocks.{layer}.{hook}"
        for layer in range(model.cfg.n_layers)
        for hook in ("attn.hook_pattern", "ln1.hook_scale", "ln2.hook_scale")
    ] + ["ln_final.hook_scale"]
    return splice.hold_hooks(cache, names)


def _replay(model, tokens, transcoders, frozen, leaves, n_rows):
    """The frozen replacement model on ``n_rows`` copies of ``tokens``, with its inputs
    (embeddings, latents, errors; positions 1 onwards) taken from ``leaves``. Returns the
    logits and each MLP's input, from which the latents' pre-activations are read."""
    mlp_in: dict[int, torch.Tensor] = {}

    def embed(name):
        def hook(act, hook=None):
            return torch.cat([act[:, :1].detach(), leaves[name].to(act.dtype)], 1)

        return hook

    def record(layer):
        def hook(act, hook=None):
            mlp_in[layer] = act[:, 1:]
            return act

        return hook

    def mlp_out(layer):
        def hook(act, hook=None):
            new = transcoders[layer].decode(leaves["z", layer]) + leaves["error", layer]
            return torch.cat([act[:, :1].detach(), new.to(act.dtype)], 1)

        return hook

    hooks = [*frozen, ("hook_embed", embed("embed")), ("hook_pos_embed", embed("pos"))]
    for layer in range(len(transcoders)):
        hooks += [
            (f"blocks.{layer}.mlp.hook_in", record(layer)),
            (f"blocks.{layer}.hook_mlp_out", mlp_out(layer)),
        ]
    rows = tokens[None].expand(n_rows, -1).to(model.cfg.device)
    return splice.run_with_hooks(model, rows, hooks), mlp_in


@torch.no_grad()
def _clean_leaves(model, tokens, transcoders):
    _, cache = model.run_with_cache(tokens[None].to(model.cfg.device))
    leaves = {"embed": cache["hook_embed"][:, 1:], "pos": cache["hook_pos_embed"][:, 1:]}
    for layer, tc in enumerate(transcoders):
        z = tc.encode(cache[f"blocks.{layer}.mlp.hook_in"][:, 1:])
        leaves["z", layer] = z
        leaves["error", layer] = cache[f"blocks.{layer}.hook_mlp_out"][:, 1:] - tc.decode(z)
    return cache, leaves


def build_graph(
    model: TransformerBridge,
    transcoders: Sequence[Transcoder],
    tokens: torch.Tensor,
    target: tuple[int, int],
    batch_size: int = 64,
) -> AttributionGraph:
    """The attribution graph of one prompt, ``tokens: [pos]`` (BOS first).

    ``transcoders[L]`` replaces block L's MLP (one per block). The logit target is
    ``logit(target[0]) - logit(target[1])`` at the last position. Each target node (every
    active latent, and the logit) costs one row of a batched backward pass through the
    frozen replacement model: ``batch_size`` rows at a time.
    """
    cache, clean = _clean_leaves(model, tokens, transcoders)
    frozen = _frozen_hooks(model, cache)
    n_pos, n_layers = tokens.shape[0] - 1, len(transcoders)
    active = [clean["z", layer][0].cpu() > 0 for layer in range(n_layers)]  # [n_pos, d_sae] each
    nodes = [GraphNode("embed", -1, p + 1) for p in range(n_pos)]
    latent_cols, error_cols = [], []
    for layer in range(n_layers):
        found = [GraphNode("latent", layer, p + 1, f) for p, f in active[layer].nonzero().tolist()]
        latent_cols.append(torch.arange(len(nodes), len(nodes) + len(found)))
        nodes += found
        error_cols.append(torch.arange(len(nodes), len(nodes) + n_pos))
        nodes += [GraphNode("error", layer, p + 1) for p in range(n_pos)]
    nodes.append(GraphNode("logit", -1, n_pos))
    targets = torch.tensor([i for i, n in enumerate(nodes) if n.kind in ("latent", "logit")])

    def target_values(logits, mlp_in):
        """Every target's value in each row ``[n_rows, n_targets]``: latents, then the logit."""
        pre = [
            transcoders[layer].pre_acts(mlp_in[layer])[:, active[layer].to(mlp_in[layer].device)]
            for layer in range(n_layers)
        ]
        logit = logits[:, -1, target[0]] - logits[:, -1, target[1]]
        return torch.cat([*pre, logit[:, None]], 1).cpu()

    adjacency = torch.zeros(len(nodes), len(nodes))
    for start in range(0, len(targets), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(targets)))
        leaves = {
            k: v.expand(len(rows), -1, -1).clone().requires_grad_(True) for k, v in clean.items()
        }
        with torch.enable_grad():
            logits, mlp_in = _replay(model, tokens, transcoders, frozen, leaves, len(rows))
            picked = target_values(logits, mlp_in)[torch.arange(len(rows)), rows]
            keys = list(leaves)
            # Every leaf reaches the logit, which is among the targets ``picked`` is read from,
            # so each gets a gradient (zero where no picked target depends on it), never None.
            grads = torch.autograd.grad(picked.sum(), [leaves[k] for k in keys])
        part = {k: (g * leaves[k]).detach().cpu() for k, g in zip(keys, grads)}
        t = targets[rows][:, None]
        adjacency[t, torch.arange(n_pos)] = (part["embed"] + part["pos"]).sum(-1)
        for layer in range(n_layers):
            adjacency[t, latent_cols[layer]] = part["z", layer][:, active[layer]]
            adjacency[t, error_cols[layer]] = part["error", layer].sum(-1)
    # Values from the clean leaves; what no node explains, from the same model at all zeros.
    with torch.no_grad():
        values, constant = torch.zeros(len(nodes)), torch.zeros(len(nodes))
        values[targets] = target_values(*_replay(model, tokens, transcoders, frozen, clean, 1))[0]
        zeros = {k: torch.zeros_like(v) for k, v in clean.items()}
        constant[targets] = target_values(*_replay(model, tokens, transcoders, frozen, zeros, 1))[0]
    return AttributionGraph(tokens.cpu(), nodes, adjacency, values, constant)


@torch.no_grad()
def ablation_check(
    model: TransformerBridge,
    transcoders: Sequence[Transcoder],
    graph: AttributionGraph,
    target: tuple[int, int],
    node_ids: Sequence[int],
    frozen: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """What the graph predicts for zeroing each latent in ``node_ids``, against the real drop.

    Predicted: ``graph.total_effects()``. Real: the model itself, with only block L's MLP
    output changed, by the latent's decoder row times its activation at its position (the
    transcoder's error kept); attention, LayerNorm and the later MLPs respond as they
    will. ``frozen=True`` holds attention patterns and LayerNorm scales at their clean
    values, as the graph does, leaving the later MLPs as the only difference.
    Returns (predicted, real), each ``[len(node_ids)]``.
    """
    tokens = graph.tokens[None].to(model.cfg.device)
    logits, cache = model.run_with_cache(tokens)
    hold = _frozen_hooks(model, cache) if frozen else []

    def margin(out: torch.Tensor) -> float:
        return float(out[0, -1, target[0]] - out[0, -1, target[1]])

    clean, real = margin(logits), []
    for i in node_ids:
        node = graph.nodes[i]
        if node.kind != "latent":
            raise ValueError(f"node {i} is a {node.kind} node; only latents can be ablated here")
        tc = transcoders[node.layer]

        def remove(x, y, node=node, tc=tc):
            out = y.clone()
            z = tc.encode(x[:, node.pos - 1])
            out[:, node.pos - 1] -= z[:, node.feature, None] * tc.W_dec[node.feature]
            return out

        hooks = splice.replacing_hooks(f"blocks.{node.layer}.hook_mlp_out", tc, remove)
        real.append(clean - margin(splice.run_with_hooks(model, tokens, [*hold, *hooks])))
    return graph.total_effects()[list(node_ids)], torch.tensor(real)


def prune(graph: AttributionGraph, n_latents: int) -> list[int]:
    """The nodes worth drawing: the ``n_latents`` latents of most influence, the embeddings
    and error nodes with at least as much influence as the last of them, and the logit."""
    influence = graph.influence()
    latents = [i for i, n in enumerate(graph.nodes) if n.kind == "latent"]
    kept = sorted(latents, key=lambda i: -float(influence[i]))[:n_latents]
    floor = float(influence[kept[-1]]) if kept else 0.0
    sources = [
        i
        for i, n in enumerate(graph.nodes)
        if n.kind in ("embed", "error") and float(influence[i]) >= floor
    ]
    return sorted([*kept, *sources, graph.logit])


def plot_graph(
    graph: AttributionGraph,
    kept: Sequence[int],
    token_labels: Sequence[str],
    n_edges: int = 30,
    ax: Axes | None = None,
) -> Axes:
    """Draw the nodes ``kept`` (``prune``) at (token position, layer) and their strongest edges.

    Rows from the bottom: embeddings, each layer's latents (circles) and error nodes
    (grey squares), the logit at the top. Node area follows influence; an edge is blue
    when it raises its target and red when it lowers it, wider when it carries a larger
    share of its target's input, weighted by the target's influence.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(11, 5))
    influence = graph.influence()
    influence[graph.logit] = 1.0
    n_layers = max(n.layer for n in graph.nodes) + 1
    groups: dict[tuple[int, int], list[int]] = {}
    for i in kept:  # nodes that share a position and a row sit side by side
        node = graph.nodes[i]
        row = {"embed": 0, "logit": n_layers + 1}.get(node.kind, node.layer + 1)
        groups.setdefault((node.pos, row), []).append(i)
    where, label_below = {}, set()
    for (pos, row), members in groups.items():
        for k, i in enumerate(members):
            lift = 0.25 if graph.nodes[i].kind == "error" else 0.0
            where[i] = (pos + 0.6 * (k - (len(members) - 1) / 2), row + lift)
            if k % 2:  # neighbours' labels alternate above and below, so they do not overlap
                label_below.add(i)
    shares = graph.adjacency.abs() / graph.adjacency.abs().sum(1, keepdim=True).clamp_min(1e-12)
    sub = torch.tensor(list(kept))
    scores = shares[sub][:, sub] * influence[sub][:, None]
    strongest = scores.flatten().argsort(descending=True)[:n_edges]
    biggest = float(scores.max()) or 1.0
    for flat in strongest.tolist():
        t, s = int(sub[flat // len(sub)]), int(sub[flat % len(sub)])
        if scores.flatten()[flat] <= 0:
            continue
        colour = "tab:blue" if graph.adjacency[t, s] > 0 else "tab:red"
        (x0, y0), (x1, y1) = where[s], where[t]
        width = 0.4 + 4 * float(scores.flatten()[flat]) / biggest
        ax.plot([x0, x1], [y0, y1], color=colour, lw=width, alpha=0.5, zorder=1)
    for i in kept:
        node, (x, y) = graph.nodes[i], where[i]
        size = 40 + 600 * float(influence[i]) / float(influence[sub[sub != graph.logit]].max())
        style = dict(marker="s", color="0.6") if node.kind == "error" else dict(color="tab:orange")
        ax.scatter(x, y, s=min(size, 700), edgecolor="k", zorder=2, **style)
        if node.kind == "latent":  # the logit's row is already named on the y axis
            ax.annotate(
                node.label,
                (x, y),
                xytext=(0, -11 if i in label_below else 9),
                textcoords="offset points",
                ha="center",
                va="center",
                fontsize=7,
            )
    positions = range(1, len(token_labels) + 1)
    ax.set_xticks(list(positions), list(token_labels), rotation=60, fontsize=8)
    ax.set_yticks(range(n_layers + 2), ["embed", *[f"MLP {L}" for L in range(n_layers)], "logit"])
    ax.set_ylim(-0.5, n_layers + 1.6)
    ax.set_title(
        "Attribution graph (edges: blue raises its target, red lowers it; "
        "node area: influence; squares: error nodes)"
    )
    return ax
