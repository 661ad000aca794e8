"""Circuits of SAE features: ablation, attribution patching, edges and faithfulness.

A feature label is a hypothesis; an intervention tests it. This module removes features
from the forward pass and measures what a *metric* of the logits does, e.g. the refusal
decision ``logit(refusal token) - logit(helpful token)`` at the last prompt position.

* Ablation: the SAE is spliced in with its error term kept (``splice.sae_hook(...,
  keep_error=True)``), so the model sees its clean activation except for the chosen
  features, which are set to zero or to their mean.
* Attribution patching: one forward and one backward give a first-order estimate of
  every feature's ablation effect at once, ``grad_z(metric) . (z - z_patched)``
  (Syed et al. 2023, "Attribution Patching Outperforms Automated Circuit Discovery";
  Nanda 2023, "Attribution Patching"). Integrated gradients average that gradient along
  the path from patched to clean, a few passes more for estimates that follow large,
  non-linear effects (Sundararajan et al. 2017, "Axiomatic Attribution for Deep Networks").
* Circuits across two SAEs (Marks et al. 2024, "Sparse Feature Circuits"): nodes are the
  features of an upstream and a downstream SAE plus one *error node* per SAE (what the
  SAE fails to reconstruct); edges say how much of the metric flows from an upstream
  node through a downstream one; faithfulness and completeness test a small circuit by
  ablating everything outside it, or it alone. ``greedy_circuit`` searches for a small
  faithful circuit with real patching rather than trusting a ranking.
* Transcoders as nodes: wherever a function takes ``saes`` (a dict of hook name to SAE),
  a transcoder keyed by the MLP output it replaces (``blocks.L.hook_mlp_out``) works too;
  it reads the MLP's input during the same pass (``splice.replacing_hooks``), and its
  error node is what it fails to predict of the MLP's output.

Sign convention, everywhere: an effect, an importance or an edge weight is how much the
metric *drops* when the node is ablated, ``metric(clean) - metric(ablated)``.
A metric is a plain callable ``metric(logits) -> scalar tensor`` (a mean over the batch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from labhelpers import activations, splice
from labhelpers.features import firing_rates  # re-exported: controls are matched on it

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from transformer_lens.model_bridge import TransformerBridge

    from labhelpers.sae import SAE

__all__ = [
    "ERROR",
    "Circuit",
    "Edge",
    "Node",
    "ablate_features",
    "ablation_effects",
    "ablation_hook",
    "attribution_patching",
    "build_circuit",
    "edge_attributions",
    "faithfulness",
    "feature_means",
    "firing_rates",
    "forced_refusals",
    "greedy_circuit",
    "integrated_gradients",
    "logit_diff",
    "matched_controls",
    "node_attributions",
    "node_means",
    "plot_circuit",
    "select_features",
    "tokenize_prompts",
]

Metric = Callable[[torch.Tensor], torch.Tensor]
ERROR = -1  # the feature index that stands for an SAE's error node


# --------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------


def logit_diff(
    logits: torch.Tensor, token_a: int, token_b: int, position: int | torch.Tensor = -1
) -> torch.Tensor:
    """Mean over the batch of ``logits[b, position, token_a] - logits[b, position, token_b]``.

    logits: [batch, pos, d_vocab]. ``position`` is one index for every row or a
    ``[batch]`` tensor of indices (the last real token of right-padded prompts).
    """
    rows = torch.arange(logits.shape[0], device=logits.device)
    if isinstance(position, int):
        position = torch.full_like(rows, position)
    at = logits[rows, position.to(logits.device)]  # [batch, d_vocab]
    return (at[:, token_a] - at[:, token_b]).mean()


def tokenize_prompts(
    model: TransformerBridge, prompts: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded tokens ``[batch, pos]`` (BOS first), each prompt's last position ``[batch]``
    and the mask of real tokens ``[batch, pos]``.

    Pass the positions to ``logit_diff`` (padding comes after them, so a causal model's
    logits there are those of the unpadded prompt) and the mask to ``node_means``.
    """
    rows = [model.to_tokens(prompt)[0].cpu() for prompt in prompts]
    lengths = torch.tensor([len(row) for row in rows])
    pad = model.tokenizer.pad_token_id
    pad = model.tokenizer.bos_token_id if pad is None else pad
    tokens = torch.full((len(rows), int(lengths.max())), pad, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = row
    mask = torch.arange(tokens.shape[1]) < lengths[:, None]
    return tokens, lengths - 1, mask


@torch.no_grad()
def forced_refusals(
    model: TransformerBridge, prompts: Sequence[str], refusal: str, hooks: Sequence = ()
) -> torch.Tensor:
    """``[n_prompts]`` bool: would greedy decoding start with ``" " + refusal``? One forward pass.

    Each prompt is followed by the refusal's tokens (teacher forcing); greedy decoding
    writes exactly those tokens when each is the argmax after the ones before it. So this
    is ``corpus.is_refusal(greedy_completion(...))`` for a batch at the cost of a single
    forward pass, instead of one per generated token (it misses only a refusal the model
    would spell with other tokens). ``hooks``: ``[(hook_name, fn), ...]`` for every pass.
    """
    answer = model.to_tokens(" " + refusal, prepend_bos=False)[0].cpu()
    tokens, last, _ = tokenize_prompts(model, [p + " " + refusal for p in prompts])
    starts = last - len(answer)  # the position that predicts the answer's first token
    ends = torch.stack([tokens[i, s + 1 : s + 1 + len(answer)] for i, s in enumerate(starts)])
    if not torch.equal(ends, answer.expand_as(ends)):
        raise ValueError("the refusal tokenises differently after some prompt")
    logits = splice.run_with_hooks(model, tokens, hooks)
    where = starts[:, None] + torch.arange(len(answer))  # [n_prompts, n_answer]
    predicted = logits.argmax(-1).cpu().gather(1, where)
    return (predicted == answer).all(-1)


def _metric_with(model: TransformerBridge, tokens: torch.Tensor, metric: Metric, hooks) -> float:
    """The metric (a float) with ``hooks`` ([(hook_name, fn), ...]; empty: the clean model)."""
    with torch.no_grad():
        logits = splice.run_with_hooks(model, tokens, hooks)
    return float(metric(logits))


# --------------------------------------------------------------------------------------
# Ablation through one spliced SAE
# --------------------------------------------------------------------------------------


@torch.no_grad()
def node_means(
    model: TransformerBridge,
    saes: dict[str, SAE],
    tokens: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Mean latents ``[d_sae]`` and mean error ``[d_in]`` of each SAE on reference ``tokens``.

    ``saes`` maps hook names to SAEs (or transcoders, at ``blocks.L.hook_mlp_out``).
    Position 0 (BOS) is left out, as in the splice; ``mask: [batch, pos]`` (True for real
    tokens) leaves out padding as well.
    """
    read = {name: splice.reads_from(name, sae) for name, sae in saes.items()}
    acts = activations.token_acts(model, tokens, sorted({*saes, *read.values()}), mask)
    means = {}
    for name, sae in saes.items():
        z = sae.encode(acts[read[name]].to(sae.W_enc.dtype))
        error = acts[name].to(sae.W_enc.dtype) - sae.decode(z)
        means[name] = (z.mean(0), error.mean(0))
    return means


def feature_means(
    model: TransformerBridge,
    sae: SAE,
    hook_name: str,
    tokens: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean latent activation ``[d_sae]`` over reference ``tokens`` (BOS and padding excluded)."""
    return node_means(model, {hook_name: sae}, tokens, mask)[hook_name][0]


def ablate_features(
    sae: SAE,
    features: Sequence[int] | torch.Tensor,
    mode: str = "zero",
    means: torch.Tensor | None = None,
) -> splice.LatentEdit:
    """A latent edit for ``splice.sae_hook(sae, edit=..., keep_error=True)``.

    ``mode="zero"`` sets the chosen features to 0 at every position; ``mode="mean"`` sets
    them to ``means[feature]`` (from ``feature_means``), which keeps the activation
    on-distribution when a feature is rarely zero.
    """
    index = torch.as_tensor(features, dtype=torch.long, device=sae.W_enc.device)
    if mode == "zero":
        values = torch.zeros(sae.cfg.d_sae, device=sae.W_enc.device)
    elif mode == "mean":
        if means is None:
            raise ValueError("mode='mean' needs means (see feature_means)")
        values = means.to(sae.W_enc.device)
    else:
        raise ValueError(f"mode must be 'zero' or 'mean', not {mode!r}")

    def edit(z: torch.Tensor) -> torch.Tensor:
        z[..., index] = values[index].to(z.dtype)  # z is already a copy (see sae_hook)
        return z

    return edit


def ablation_effects(
    model: TransformerBridge,
    sae: SAE,
    hook_name: str,
    tokens: torch.Tensor,
    metric: Metric,
    features: Sequence[int] | torch.Tensor,
    mode: str = "zero",
    means: torch.Tensor | None = None,
    features_per_pass: int = 1,
    progress: bool = True,
) -> torch.Tensor:
    """``metric(clean) - metric(feature ablated)`` for each feature, one at a time: ``[n_features]``.

    One forward pass per feature over the whole batch. With ``features_per_pass > 1``,
    that many copies of the batch go through the model together, copy j with feature j
    ablated: fewer, larger passes, which pays off on a GPU more than on one CPU thread.
    ``progress`` shows a bar over the features.
    """
    clean = _metric_with(model, tokens, metric, [])
    features = torch.as_tensor(features, dtype=torch.long).tolist()
    n = tokens.shape[0]
    effects = []
    bar = tqdm(total=len(features), desc="ablating", leave=False, disable=not progress)
    for start in range(0, len(features), features_per_pass):
        chunk = features[start : start + features_per_pass]
        edits = [ablate_features(sae, [f], mode, means) for f in chunk]

        def edit(z: torch.Tensor, edits=edits) -> torch.Tensor:
            return torch.cat([e(part) for e, part in zip(edits, z.split(n))])

        hook = splice.sae_hook(sae, edit=edit, keep_error=True)
        with torch.no_grad():
            logits = splice.run_with_hooks(model, tokens.repeat(len(chunk), 1), [(hook_name, hook)])
        effects += [clean - float(metric(part)) for part in logits.split(n)]
        bar.update(len(chunk))
    bar.close()
    return torch.tensor(effects)


# --------------------------------------------------------------------------------------
# Attribution patching: every node's effect from one forward and one backward
# --------------------------------------------------------------------------------------


def _splice_recording(
    sae: SAE, record: dict[str, torch.Tensor], edit: splice.LatentEdit | None = None
) -> splice.Replacement:
    """Like ``sae_hook(sae, edit, keep_error=True)``, but with the latents and error as graph leaves.

    For ``splice.replacing_hooks``: ``x`` is what the SAE encodes, ``y`` the activation it
    replaces (the same tensor, except for a transcoder). The output is
    ``decode(z) + error + (y - y.detach())``: equal to ``y`` in value (with no ``edit``).
    ``z`` and ``error`` are leaves, so their gradients are *partial* ones, each with the
    other held fixed (were the error computed from ``z`` in the graph, the two paths would
    cancel and every feature's gradient would be 0). The last term, zero in value, passes
    the gradient on to earlier layers unchanged, as the clean model would. ``edit``
    changes the latents first (features already ablated); the error stays that of the
    unedited latents. ``record`` keeps ``x`` and ``y`` (in the graph), ``z`` and ``error``.
    """

    def replace(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            z = sae.encode(x)
            error = y - sae.decode(z)
            if edit is not None:
                z = edit(z.clone())
        z, error = z.requires_grad_(True), error.requires_grad_(True)
        record.update(x=x, y=y, z=z, error=error)
        return sae.decode(z) + error + (y - y.detach())

    return replace


def _spliced_forward(
    model: TransformerBridge,
    saes: dict[str, SAE],
    tokens: torch.Tensor,
    edits: dict[str, splice.LatentEdit] | None = None,
) -> tuple[torch.Tensor, dict[str, dict[str, torch.Tensor]]]:
    """Logits with all SAEs spliced in with their errors (the clean model, unless ``edits``
    change some latents) and each SAE's z and error."""
    edits = edits or {}
    records: dict[str, dict[str, torch.Tensor]] = {name: {} for name in saes}
    hooks = [
        hook
        for name, sae in saes.items()
        for hook in splice.replacing_hooks(
            name, sae, _splice_recording(sae, records[name], edits.get(name))
        )
    ]
    with torch.enable_grad():
        logits = splice.run_with_hooks(model, tokens, hooks)
    return logits, records


def _patch_delta(
    record: dict[str, torch.Tensor], means: tuple[torch.Tensor, torch.Tensor] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``clean - patched`` for the latents and the error: the patch is zero, or the means."""
    z, error = record["z"].detach(), record["error"].detach()
    if means is None:
        return z, error
    return z - means[0].to(z), error - means[1].to(error)


def node_attributions(
    model: TransformerBridge,
    saes: dict[str, SAE],
    tokens: torch.Tensor,
    metric: Metric,
    means: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    edits: dict[str, splice.LatentEdit] | None = None,
) -> dict[str, torch.Tensor]:
    """Attribution-patching estimate of each node's ablation effect: ``{hook: [d_sae + 1]}``.

    Entry ``i < d_sae`` is feature i, the last entry (index ``ERROR``) the error node:
    ``sum over batch and positions of grad(metric) * (clean - patched)``, the first-order
    Taylor estimate of ``metric(clean) - metric(patched)``. The patch is zero, or
    ``means`` from ``node_means``. All SAEs are spliced at once; a node's gradient is its
    total effect, through the later SAEs as well. ``edits`` (``{hook: latent edit}``, e.g.
    ``ablate_features``) estimate the effects on top of features already ablated.
    """
    logits, records = _spliced_forward(model, saes, tokens, edits)
    leaves = [records[name][part] for name in saes for part in ("z", "error")]
    grads = torch.autograd.grad(metric(logits), leaves)
    out = {}
    for i, name in enumerate(saes):
        delta_z, delta_err = _patch_delta(records[name], None if means is None else means[name])
        g_z, g_err = grads[2 * i], grads[2 * i + 1]
        features = (g_z * delta_z).flatten(0, -2).sum(0)
        error = (g_err * delta_err).sum().reshape(1)
        out[name] = torch.cat([features, error]).detach()
    return out


def _interpolating_hook(
    sae: SAE, means: tuple[torch.Tensor, torch.Tensor] | None, alpha: float, record: dict
) -> splice.Replacement:
    """Splice ``sae`` in with every node at ``patched + alpha * (clean - patched)``.

    The interpolated latents and error are graph leaves, kept in ``record`` with the full
    differences ``clean - patched`` (``_patch_delta``). ``alpha = 1`` is the clean model.
    """

    def replace(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            z = sae.encode(x)
            clean = {"z": z, "error": y - sae.decode(z)}
            delta_z, delta_err = _patch_delta(clean, means)
            z = (z - (1 - alpha) * delta_z).requires_grad_(True)
            error = (clean["error"] - (1 - alpha) * delta_err).requires_grad_(True)
        record.update(z=z, error=error, delta_z=delta_z, delta_err=delta_err)
        return sae.decode(z) + error

    return replace


def integrated_gradients(
    model: TransformerBridge,
    saes: dict[str, SAE],
    tokens: torch.Tensor,
    metric: Metric,
    means: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    steps: int = 10,
) -> dict[str, torch.Tensor]:
    """Like ``node_attributions`` (same output, ``{hook: [d_sae + 1]}``), with the gradient
    averaged along the path from patched to clean instead of taken at the clean point.

    For one SAE at a time (the other layers clean), every node of that SAE is moved to
    ``patched + alpha * (clean - patched)`` for ``steps`` midpoints ``alpha`` in (0, 1);
    a node's score is its mean gradient there times ``clean - patched``, summed over batch
    and positions (Sundararajan et al. 2017; Marks et al. 2024 score their nodes so).
    Attribution patching reads the slope at the clean point only and misjudges large
    effects, where the metric curves on the way to the patch; the path average follows the
    curve. As ``steps`` grows, one SAE's scores add up to ``metric(clean) - metric(all its
    nodes patched)`` (completeness), which one gradient does not guarantee. Costs ``steps``
    forward and backward passes per SAE.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")
    out = {}
    for name, sae in saes.items():
        patch = None if means is None else means[name]
        sum_z = sum_err = 0.0
        for k in range(steps):
            record: dict[str, torch.Tensor] = {}
            replace = _interpolating_hook(sae, patch, (k + 0.5) / steps, record)
            hooks = splice.replacing_hooks(name, sae, replace)
            with torch.enable_grad():
                logits = splice.run_with_hooks(model, tokens, hooks)
                g_z, g_err = torch.autograd.grad(metric(logits), [record["z"], record["error"]])
            sum_z, sum_err = sum_z + g_z, sum_err + g_err
        features = (sum_z / steps * record["delta_z"]).flatten(0, -2).sum(0)
        error = (sum_err / steps * record["delta_err"]).sum().reshape(1)
        out[name] = torch.cat([features, error]).detach()
    return out


def attribution_patching(
    model: TransformerBridge,
    sae: SAE,
    hook_name: str,
    tokens: torch.Tensor,
    metric: Metric,
    mode: str = "zero",
    means: torch.Tensor | None = None,
    edit: splice.LatentEdit | None = None,
) -> torch.Tensor:
    """Estimated ``metric(clean) - metric(ablated)`` for every feature of one SAE: ``[d_sae]``.

    Compare with ``ablation_effects`` on the same features: where the metric is close to
    linear in the latents the two agree; where a feature is large or the model strongly
    non-linear, the estimate drifts (Syed et al. 2023; Nanda 2023). With ``edit`` (e.g.
    ``ablate_features(sae, chosen)``) the forward pass runs with that edit, and the
    estimates are of ablating each feature *on top of* it (0 for the features it ablates).
    """
    if mode not in ("zero", "mean"):
        raise ValueError(f"mode must be 'zero' or 'mean', not {mode!r}")
    patch = None
    if mode == "mean":
        if means is None:
            raise ValueError("mode='mean' needs means (see feature_means)")
        patch = {hook_name: (means, torch.zeros(sae.cfg.d_in))}
    edits = None if edit is None else {hook_name: edit}
    scores = node_attributions(model, {hook_name: sae}, tokens, metric, patch, edits)
    return scores[hook_name][:-1]


# --------------------------------------------------------------------------------------
# Choosing features by their effects, and controls for them
# --------------------------------------------------------------------------------------


def ablation_hook(
    sae: SAE,
    features: Sequence[int] | torch.Tensor,
    mode: str = "zero",
    means: torch.Tensor | None = None,
) -> splice.Hook:
    """A forward hook that splices ``sae`` in with its error term and ``features`` ablated.

    Use it as ``splice.run_with_hooks(model, tokens, [(hook_name, hook)])`` or inside
    ``with model.hooks(fwd_hooks=...)``; with no features it leaves the model unchanged.
    """
    return splice.sae_hook(sae, edit=ablate_features(sae, features, mode, means), keep_error=True)


def select_features(
    model: TransformerBridge,
    sae: SAE,
    hook_name: str,
    target: tuple[torch.Tensor, Metric],
    avoid: tuple[torch.Tensor, Metric],
    n: int,
    mode: str = "zero",
    means: torch.Tensor | None = None,
    avoid_weight: float = 1.0,
    allowed: torch.Tensor | None = None,
    progress: bool = True,
) -> list[int]:
    """Greedily choose ``n`` features whose ablation lowers ``target``'s metric but not ``avoid``'s.

    ``target`` and ``avoid`` are ``(tokens, metric)`` pairs, e.g. over-refused requests and
    harmful ones with the refusal margin. Each step scores every feature by its estimated
    effect (``attribution_patching``, with the features chosen so far already ablated)
    ``effect_target - avoid_weight * effect_avoid``, and adds the best. Re-estimating after
    each choice lets a feature that merely duplicates a chosen one fall back. Returns the
    features in the order chosen; test each prefix with real ablations on other prompts.
    ``allowed`` (``[d_sae]`` bool), when given, limits the choice to those features.
    ``progress`` shows a bar over the ``n`` choices.
    """
    chosen: list[int] = []
    for _ in tqdm(range(n), desc=f"choosing at {hook_name}", leave=False, disable=not progress):
        edit = ablate_features(sae, chosen, mode, means)
        effects = [
            attribution_patching(model, sae, hook_name, tokens, metric, mode, means, edit)
            for tokens, metric in (target, avoid)
        ]
        score = effects[0] - avoid_weight * effects[1]
        score[chosen] = -torch.inf
        if allowed is not None:
            score[~allowed.to(score.device)] = -torch.inf
        chosen.append(int(score.argmax()))
    return chosen


def matched_controls(
    rates: torch.Tensor,
    chosen: Sequence[int],
    allowed: torch.Tensor,
    pool: int = 1,
    seed: int = 0,
) -> list[int]:
    """For each chosen feature, an allowed feature whose firing rate is close to its own.

    rates: ``[d_sae]`` (``firing_rates``); allowed: ``[d_sae]`` bool, the features that pass
    the caller's rule for "unrelated" (the chosen ones are never allowed). Each control is
    used once, so a set of features gets a set of distinct controls of matched frequency.
    ``pool=1`` takes the closest; ``pool=k`` draws one of the ``k`` closest at random
    (seeded), so several seeds give several control sets: one control set is one draw.
    """
    if pool < 1:
        raise ValueError(f"pool must be at least 1, got {pool}")
    gen = torch.Generator().manual_seed(seed)
    free = allowed.clone().bool()
    free[list(chosen)] = False
    controls = []
    for f in chosen:
        gap = (rates - rates[f]).abs().masked_fill(~free, torch.inf)
        n_free = int(free.sum())
        if n_free == 0:
            raise ValueError("no allowed feature left to serve as a control")
        if pool == 1:
            control = int(gap.argmin())  # the closest; ties go to the lowest index
        else:
            nearest = gap.topk(min(pool, n_free), largest=False).indices
            control = int(nearest[torch.randint(len(nearest), (1,), generator=gen)])
        controls.append(control)
        free[control] = False
    return controls


# --------------------------------------------------------------------------------------
# Edges between two SAEs
# --------------------------------------------------------------------------------------


def edge_attributions(
    model: TransformerBridge,
    saes: dict[str, SAE],
    tokens: torch.Tensor,
    metric: Metric,
    downstream: Iterable[int],
    means: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> torch.Tensor:
    """Edge weights from every upstream node to chosen downstream nodes: ``[n_down, d_sae_up + 1]``.

    ``saes`` holds exactly two SAEs, upstream first. ``downstream`` lists downstream node
    indices (``ERROR`` for the error node). The weight of ``u -> d`` is Marks et al.'s
    ``grad_d(metric) . (d d / d u) . (u - u_patched)`` summed over batch and positions: the
    part of u's effect on the metric that flows through d, to first order (gradients at the
    clean point, as in ``attribution_patching``, not along a path as in
    ``integrated_gradients``). One backward per downstream node.
    When nothing bypasses the downstream hook (two residual-stream hooks), a row sum over
    every downstream node gives back u's node attribution.
    """
    (up, down) = list(saes)
    logits, records = _spliced_forward(model, saes, tokens)
    rec_up, rec_down = records[up], records[down]
    g_down_z, g_down_err = torch.autograd.grad(
        metric(logits), [rec_down["z"], rec_down["error"]], retain_graph=True
    )
    delta_z, delta_err = _patch_delta(rec_up, None if means is None else means[up])
    # The downstream nodes recomputed from what the downstream SAE reads (x) and replaces
    # (y); both depend on u.
    z = saes[down].encode(rec_down["x"])
    error = rec_down["y"] - saes[down].decode(z)
    rows = []
    for d in downstream:
        # A scalar whose gradient w.r.t. u is grad_d(metric) . (d d / d u), summed over positions.
        if d == ERROR:
            target = (g_down_err * error).sum()
        else:
            target = (g_down_z[..., d] * z[..., d]).sum()
        g_z, g_err = torch.autograd.grad(
            target, [rec_up["z"], rec_up["error"]], retain_graph=True, allow_unused=True
        )
        g_z = torch.zeros_like(delta_z) if g_z is None else g_z
        g_err = torch.zeros_like(delta_err) if g_err is None else g_err
        features = (g_z * delta_z).flatten(0, -2).sum(0)
        rows.append(torch.cat([features, (g_err * delta_err).sum().reshape(1)]))
    return torch.stack(rows).detach()


# --------------------------------------------------------------------------------------
# A small circuit as plain data
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """One node: a feature of the SAE at ``hook``, or its error node (``feature == ERROR``)."""

    hook: str
    feature: int
    importance: float = 0.0

    @property
    def is_error(self) -> bool:
        return self.feature == ERROR

    @property
    def key(self) -> tuple[str, int]:
        return (self.hook, self.feature)

    @property
    def label(self) -> str:
        return "err" if self.is_error else f"f{self.feature}"


@dataclass(frozen=True)
class Edge:
    """An edge from an upstream node to a downstream node (keys ``(hook, feature)``)."""

    source: tuple[str, int]
    target: tuple[str, int]
    weight: float


@dataclass
class Circuit:
    """Nodes per layer (upstream hook first) and the edges between them."""

    hooks: tuple[str, str]
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)

    def keys(self) -> set[tuple[str, int]]:
        return {node.key for node in self.nodes}


def _top_nodes(hook: str, scores: torch.Tensor, n: int) -> list[Node]:
    """The ``n`` nodes with the largest |score| ([d_sae + 1], last entry the error node)."""
    order = scores.abs().argsort(descending=True)[:n].tolist()
    d_sae = scores.numel() - 1
    return [Node(hook, ERROR if i == d_sae else i, float(scores[i])) for i in order]


def build_circuit(
    attributions: dict[str, torch.Tensor],
    n_nodes: int,
    edge_fn: Callable[[list[int]], torch.Tensor] | None = None,
    edge_threshold: float = 0.0,
    include_error: bool = True,
) -> Circuit:
    """Keep the ``n_nodes`` most important nodes per layer and the edges above a threshold.

    ``attributions`` is ``node_attributions``'s output for two SAEs (upstream first).
    ``edge_fn(downstream_indices) -> [n_down, d_sae_up + 1]`` computes edges, e.g.
    ``lambda d: edge_attributions(model, saes, tokens, metric, d, means)``; an edge is kept
    when ``|weight| >= edge_threshold`` and both its ends are kept. With
    ``include_error=True`` each layer's error node is always a node of the graph, so the
    picture shows how much the SAEs leave unexplained.
    """
    up, down = list(attributions)
    layers = {}
    for hook in (up, down):
        scores = attributions[hook]
        nodes = _top_nodes(hook, scores, n_nodes)
        if include_error and all(not node.is_error for node in nodes):
            nodes.append(Node(hook, ERROR, float(scores[-1])))
        layers[hook] = nodes
    circuit = Circuit((up, down), layers[up] + layers[down])
    if edge_fn is None:
        return circuit
    d_sae_up = attributions[up].numel() - 1
    down_features = [node.feature for node in layers[down]]
    weights = edge_fn(down_features)
    for row, d in zip(weights, down_features):
        for node in layers[up]:
            w = float(row[d_sae_up if node.is_error else node.feature])
            if abs(w) >= edge_threshold:
                circuit.edges.append(Edge(node.key, (down, d), w))
    return circuit


def plot_circuit(circuit: Circuit, ax: Axes | None = None) -> Axes:
    """Draw the circuit: upstream nodes on the bottom row, downstream on top.

    Node size follows |importance|; error nodes are grey squares; edges are blue when
    they add to the metric and red when they reduce it, wider for larger |weight|.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4))
    where = {}
    for row, hook in enumerate(circuit.hooks):
        nodes = [node for node in circuit.nodes if node.hook == hook]
        for i, node in enumerate(nodes):
            where[node.key] = ((i + 1) / (len(nodes) + 1), float(row))
    biggest_edge = max((abs(e.weight) for e in circuit.edges), default=1.0) or 1.0
    for edge in circuit.edges:
        (x0, y0), (x1, y1) = where[edge.source], where[edge.target]
        colour = "tab:blue" if edge.weight > 0 else "tab:red"
        width = 0.5 + 4 * abs(edge.weight) / biggest_edge
        ax.plot([x0, x1], [y0, y1], color=colour, lw=width, alpha=0.6, zorder=1)
    biggest_node = max((abs(n.importance) for n in circuit.nodes), default=1.0) or 1.0
    for node in circuit.nodes:
        x, y = where[node.key]
        size = 200 + 800 * abs(node.importance) / biggest_node
        if node.is_error:
            ax.scatter(x, y, s=size, marker="s", color="0.6", edgecolor="k", zorder=2)
        else:
            colour = "tab:blue" if node.importance > 0 else "tab:red"
            ax.scatter(x, y, s=size, color=colour, edgecolor="k", zorder=2)
        # Each label on the outer side of its row, away from the edges between the rows.
        outward = 22 if y > 0 else -22
        ax.annotate(
            node.label,
            (x, y),
            xytext=(0, outward),
            textcoords="offset points",
            ha="center",
            va="center",
        )
    for row, hook in enumerate(circuit.hooks):
        ax.text(0.01, 1.4 if row else -0.4, hook, fontsize=9, color="0.3", va="center")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.5, 1.5)
    ax.set_title("Feature circuit (blue: raises the metric, red: lowers it; squares: error nodes)")
    return ax


# --------------------------------------------------------------------------------------
# Faithfulness and completeness
# --------------------------------------------------------------------------------------


def _keep_only_hook(
    sae: SAE,
    keep: torch.Tensor,
    keep_error: bool,
    means: tuple[torch.Tensor, torch.Tensor] | None,
) -> splice.Replacement:
    """Splice ``sae`` in with latents outside ``keep: [d_sae] bool`` (and maybe the error) patched."""
    mean_z, mean_err = (None, None) if means is None else means

    def replace(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = sae.encode(x)
        error = y - sae.decode(z)
        patch_z = torch.zeros_like(z) if mean_z is None else mean_z.to(z).expand_as(z)
        z = torch.where(keep.to(z.device), z, patch_z)
        if not keep_error:
            error = (
                torch.zeros_like(error) if mean_err is None else mean_err.to(error).expand_as(error)
            )
        return sae.decode(z) + error

    return replace


def _metric_keeping(model, saes, tokens, metric, kept: set[tuple[str, int]], means) -> float:
    """The metric when every node outside ``kept`` is patched (all SAEs spliced at once)."""
    hooks = []
    for name, sae in saes.items():
        keep = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
        keep[[f for (h, f) in kept if h == name and f != ERROR]] = True
        node_means_ = None if means is None else means[name]
        replace = _keep_only_hook(sae, keep, (name, ERROR) in kept, node_means_)
        hooks += splice.replacing_hooks(name, sae, replace)
    return _metric_with(model, tokens, metric, hooks)


def faithfulness(
    model: TransformerBridge,
    saes: dict[str, SAE],
    tokens: torch.Tensor,
    metric: Metric,
    circuit: Iterable[tuple[str, int]],
    means: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    reference: dict[str, float] | None = None,
) -> dict[str, float]:
    """Faithfulness and completeness of ``circuit`` (a set of node keys ``(hook, feature)``).

    With every node outside C patched (mean-ablated when ``means`` is given, else zeroed),
    the metric is m(C); m(∅) patches every node, error nodes included, and m(M) is the
    full model. Faithfulness ``(m(C) - m(∅)) / (m(M) - m(∅))`` is 1 when the circuit alone
    does what the model does and 0 when it does no more than nothing (Marks et al. 2024).
    An error node counts as a node: put ``(hook, ERROR)`` in C to keep that SAE's error
    term, leave it out to patch it too. Completeness patches C alone and keeps the rest:
    ``(m(M \\ C) - m(∅)) / (m(M) - m(∅))`` near 0 means nothing outside C does the job.
    ``reference``: an earlier result on the same tokens, metric and means, whose m(M) and
    m(∅) are reused (two forward passes fewer when comparing many circuits).
    """
    circuit = set(circuit)
    everything = {(name, f) for name, sae in saes.items() for f in [*range(sae.cfg.d_sae), ERROR]}
    if reference is None:
        m_full = _metric_with(model, tokens, metric, [])
        m_empty = _metric_keeping(model, saes, tokens, metric, set(), means)
    else:
        m_full, m_empty = reference["m_full"], reference["m_empty"]
    m_circuit = _metric_keeping(model, saes, tokens, metric, circuit, means)
    m_rest = _metric_keeping(model, saes, tokens, metric, everything - circuit, means)
    scale = m_full - m_empty
    return {
        "m_full": m_full,
        "m_empty": m_empty,
        "m_circuit": m_circuit,
        "m_without_circuit": m_rest,
        "faithfulness": (m_circuit - m_empty) / scale,
        "completeness": (m_rest - m_empty) / scale,
    }


def greedy_circuit(
    model: TransformerBridge,
    saes: dict[str, SAE],
    tokens: torch.Tensor,
    metric: Metric,
    candidates: Sequence[tuple[str, int]],
    n: int,
    means: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    keep: Iterable[tuple[str, int]] = (),
    progress: bool = True,
) -> list[tuple[str, int]]:
    """Grow a circuit node by node, each time adding the candidate that makes it most faithful.

    A ranking by single scores (attribution patching, integrated gradients) guesses how
    nodes act together: two latents that carry the same signal both rank high, and one that
    matters only beside another ranks low. A search measures it instead. At each step,
    for every candidate not yet chosen, the metric is computed with ``keep``, the nodes
    chosen so far and that candidate kept and every other node patched (as in
    ``faithfulness``), and the candidate whose circuit is most faithful wins: the one that
    moves the metric furthest from the empty circuit towards the full model, so an
    overshoot past the full model beats a circuit that stops just short of it.
    ``keep`` (e.g. the error nodes) is always kept and never returned.

    Costs ``n * len(candidates)`` forward passes, so candidates usually come from a
    ranking. The choice fits the prompts it was made on: test every prefix on others.
    Returns the ``n`` chosen node keys ``(hook, feature)`` in the order chosen.
    """
    pool = list(dict.fromkeys(candidates))
    if not 0 < n <= len(pool):
        raise ValueError(f"n must be between 1 and the {len(pool)} distinct candidates, got {n}")
    keep = set(keep)
    # Faithfulness rises with the metric when the full model is above the empty circuit,
    # and falls with it when below; one sign covers both. The empty circuit is the one
    # `faithfulness` divides by: every node patched, `keep` included.
    m_full = _metric_with(model, tokens, metric, [])
    m_empty = _metric_keeping(model, saes, tokens, metric, set(), means)
    sign = 1.0 if m_full >= m_empty else -1.0
    chosen: list[tuple[str, int]] = []
    passes = sum(len(pool) - i for i in range(n))
    bar = tqdm(total=passes, desc="greedy circuit", leave=False, disable=not progress)
    for _ in range(n):
        best, best_value = None, -torch.inf
        for node in pool:
            if node in chosen:
                continue
            kept = keep | set(chosen) | {node}
            value = sign * _metric_keeping(model, saes, tokens, metric, kept, means)
            if value > best_value:  # ties go to the earlier candidate
                best, best_value = node, value
            bar.update()
        chosen.append(best)
    bar.close()
    return chosen
